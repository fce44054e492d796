"""Model shapes: the named presets and the resolution of a ``ModelSpec`` into a ``ModelConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from tunix_api.training import DIMENSION_FIELDS, ModelSpec

VOCAB_MULTIPLE = 128

PRESETS: dict[str, dict[str, Any]] = {
    # Fits the byte tokenizer (259 ids); a training step takes milliseconds on CPU.
    "tiny": dict(vocab_size=384, d_model=128, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=384),
    # GPT-2 small / GPT-3 125M shape with a gated MLP of about the same parameter count.
    "125m": dict(vocab_size=50304, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=2048),
    "350m": dict(vocab_size=50304, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=16, d_ff=2816),
    # Llama-3.2-1B shape.
    "1b": dict(
        vocab_size=128256,
        d_model=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        d_ff=8192,
        rope_theta=500_000.0,
    ),
}

_DTYPES: dict[str, Any] = {
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float32": jnp.float32,
}


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's RoPE frequency scaling (Hugging Face ``rope_scaling`` of type ``llama3``): long
    wavelengths are divided by ``factor``, short ones kept, the band between interpolated."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.factor <= 0 or self.original_max_position_embeddings < 1:
            raise ValueError("rope_scaling factor and original_max_position_embeddings must be positive")
        if not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError("rope_scaling needs 0 < low_freq_factor < high_freq_factor")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the decoder-only transformer (see ``tunix_trainer.model``)."""

    vocab_size: int  # already padded to a multiple of 128
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    dtype: Any = jnp.bfloat16  # compute dtype (activations, matmuls)
    param_dtype: Any = jnp.float32  # parameter dtype
    # ``implementation`` of jax.nn.dot_product_attention: None lets JAX choose, "cudnn" forces the
    # fused GPU kernel (bf16/fp16 only), "xla" the portable one.
    attention_impl: str | None = None
    tie_embeddings: bool = True  # the output head is the embedding; False: a separate ``head``
    rope_scaling: RopeScaling | None = None
    # Ids >= this get no probability mass in the loss (the vocabulary's padding rows); None: none.
    valid_vocab_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"model {name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"dModel ({self.d_model}) must be divisible by nHeads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"nHeads ({self.n_heads}) must be divisible by nKvHeads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(
                f"head dimension dModel/nHeads = {self.head_dim} must be even for rotary embeddings"
            )
        if self.rope_theta <= 0:
            raise ValueError(f"ropeTheta must be positive, got {self.rope_theta}")
        if self.valid_vocab_size is not None and not 0 < self.valid_vocab_size <= self.vocab_size:
            raise ValueError(
                f"valid_vocab_size must be in [1, {self.vocab_size}], got {self.valid_vocab_size}"
            )
        if self.attention_impl not in (None, "xla", "cudnn"):
            raise ValueError(f"attention_impl must be None, 'xla' or 'cudnn', got {self.attention_impl!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def pad_vocab(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (aligned matmuls for the embedding/head)."""
    if n < 1:
        raise ValueError(f"vocabulary size must be positive, got {n}")
    return -(-n // multiple) * multiple


def parse_dtype(name: Any) -> Any:
    """A JAX dtype from its name (``"bfloat16"``, ``"float32"``, a ``Dtype`` enum member...)."""
    key = getattr(name, "value", name)
    if not isinstance(key, str):
        return key  # already a dtype
    try:
        return _DTYPES[key]
    except KeyError:
        raise ValueError(f"unknown dtype {key!r}; expected one of {sorted(_DTYPES)}") from None


def resolve_model_config(
    spec: ModelSpec,
    *,
    tokenizer_vocab_size: int,
    compute_dtype: str = "bfloat16",
    param_dtype: str = "float32",
) -> ModelConfig:
    """The concrete model shape of ``spec``.

    Preset values first, then every explicit field of ``spec`` overrides. The vocabulary is the
    larger of the preset/explicit size and the tokenizer's, padded to a multiple of 128.
    ``n_kv_heads`` is the explicit value, else the preset's when ``n_heads`` is not overridden,
    else ``n_heads`` (plain multi-head attention). Raises ``ValueError`` for an unknown preset,
    missing dimensions or an inconsistent shape.
    """
    values: dict[str, Any] = {}
    if spec.preset is not None:
        preset = getattr(spec.preset, "value", spec.preset)
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; expected one of {sorted(PRESETS)}")
        values.update(PRESETS[preset])
        if spec.n_heads is not None and spec.n_kv_heads is None:
            values.pop("n_kv_heads", None)
    for name in DIMENSION_FIELDS:
        explicit = getattr(spec, name)
        if explicit is not None:
            values[name] = explicit
    missing = [name for name in ("d_model", "n_layers", "n_heads", "d_ff") if name not in values]
    if missing:
        raise ValueError(f"model needs a preset or explicit {', '.join(missing)}")
    values.setdefault("n_kv_heads", values["n_heads"])
    if tokenizer_vocab_size < 1:
        raise ValueError(f"tokenizer vocabulary size must be positive, got {tokenizer_vocab_size}")
    values["vocab_size"] = pad_vocab(max(values.get("vocab_size", 0), tokenizer_vocab_size))
    values["valid_vocab_size"] = tokenizer_vocab_size
    return ModelConfig(**values, dtype=parse_dtype(compute_dtype), param_dtype=parse_dtype(param_dtype))
