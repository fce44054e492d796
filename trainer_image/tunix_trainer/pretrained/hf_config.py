"""``config.json`` of a Hugging Face Llama-family model <-> ``ModelConfig`` (pure).

Supported: ``model_type`` llama (Llama 2/3.x, SmolLM, TinyLlama...): SiLU gated MLP, no biases,
RMSNorm, RoPE with no scaling or ``llama3`` scaling, tied or untied output head, grouped-query
attention with ``head_dim = hidden_size / num_attention_heads``. Anything else is refused with a
message naming the key, before any weight is read.
"""

from __future__ import annotations

from typing import Any

from tunix_trainer.errors import ConfigError
from tunix_trainer.presets import ModelConfig, RopeScaling, pad_vocab, parse_dtype

SUPPORTED_MODEL_TYPES = ("llama",)
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _rope(config: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from ``rope_scaling`` (transformers 4) or ``rope_parameters`` (5)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", config.get("rope_theta", 10_000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ConfigError(
            f"{source}: rope_scaling type {kind!r} is not supported (supported: default, llama3)"
        )
    try:
        scaling = RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: rope_scaling of type llama3 lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: rope_scaling: {exc}") from None
    return theta, scaling


def check_supported(config: dict[str, Any], source: str) -> None:
    """ConfigError naming the first unsupported ``model_type`` or option of ``config``."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    missing = [key for key in _REQUIRED if not isinstance(config.get(key), int)]
    if missing:
        raise ConfigError(f"{source}: missing or non-integer {', '.join(missing)}")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (supported: silu)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConfigError(f"{source}: {key} true is not supported (the model has no biases)")
    heads, d_model = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or d_model // heads
    if head_dim * heads != d_model:
        raise ConfigError(
            f"{source}: head_dim {head_dim} x num_attention_heads {heads} != hidden_size {d_model} "
            "is not supported"
        )
    _rope(config, source)


def model_config_from_hf(
    config: dict[str, Any],
    *,
    source: str,
    valid_vocab_size: int,
    compute_dtype: str = "bfloat16",
    param_dtype: str = "float32",
) -> ModelConfig:
    """The ``ModelConfig`` of a supported ``config.json``; ``valid_vocab_size`` is the tokenizer's
    size (ids from it up get no probability mass)."""
    check_supported(config, source)
    theta, scaling = _rope(config, source)
    vocab = int(config["vocab_size"])
    try:
        return ModelConfig(
            vocab_size=pad_vocab(vocab),
            d_model=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"],
            n_kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
            d_ff=config["intermediate_size"],
            rope_theta=theta,
            rope_scaling=scaling,
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            valid_vocab_size=valid_vocab_size,
            dtype=parse_dtype(compute_dtype),
            param_dtype=parse_dtype(param_dtype),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def hf_config_from_model(
    cfg: ModelConfig, vocab_size: int, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``config.json`` for ``cfg`` with ``vocab_size`` rows: ``base`` (the loaded model's config,
    keeping keys such as token ids and ``max_position_embeddings``) with the shape keys rewritten."""
    out = dict(base or {})
    out.pop("rope_parameters", None)
    out.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        rope_scaling=None
        if cfg.rope_scaling is None
        else {
            "rope_type": "llama3",
            "factor": cfg.rope_scaling.factor,
            "low_freq_factor": cfg.rope_scaling.low_freq_factor,
            "high_freq_factor": cfg.rope_scaling.high_freq_factor,
            "original_max_position_embeddings": cfg.rope_scaling.original_max_position_embeddings,
        },
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=cfg.tie_embeddings,
        torch_dtype="float32",
    )
    out.setdefault("max_position_embeddings", 2048)
    return out
