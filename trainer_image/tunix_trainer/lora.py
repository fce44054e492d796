"""LoRA: low-rank adapters on the model's projections, built from Flax NNX's own ``nnx.LoRA``.

Each targeted projection ``W`` (``in x out``, named as in Hugging Face and PEFT: ``q_proj`` ...
``down_proj``) of every block gets ``y = x W + (alpha / r) * dropout(x) A B`` with ``A`` (``in x
r``, He-uniform) and ``B`` (``r x out``, zero: training starts from the base model exactly), as
PEFT computes it. The model keeps its fused ``qkv``/``gate_up`` weights; the adapters' outputs are
added to the matching slices (``tunix_trainer.model``). Adapter weights are ``nnx.LoRAParam``, a
kind of ``nnx.Param``: the optimizer takes ``wrt=nnx.LoRAParam`` so gradients and optimizer state
exist for them alone, and the frozen base weights (``FROZEN``) are left out of checkpoints
(:func:`split_frozen`; a resume takes them from the model again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_api.training import LoraSpec, LoraTarget, TrainingSpec
from tunix_trainer.errors import ConfigError
from tunix_trainer.presets import ModelConfig

if TYPE_CHECKING:
    from tunix_trainer.model import Transformer

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ADAPTER_DTYPE = jnp.float32  # adapters and their optimizer state, whatever paramDtype holds the base in
_RNG_STREAM = 0x4C6F5241  # "LoRA": the adapters' initialisation stream, apart from the base weights'

# The frozen weights of a LoRA run: every parameter except the adapters.
FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of every projection a block has, by its Hugging Face name."""
    d, f = cfg.d_model, cfg.d_ff
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return {
        "q_proj": (d, q),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (q, d),
        "gate_proj": (d, f),
        "up_proj": (d, f),
        "down_proj": (f, d),
    }


def targets(spec: LoraSpec) -> list[str]:
    """The targeted module names, in the model's order."""
    wanted = {LoraTarget(t).value for t in spec.target_modules}
    return [name for name in (*ATTENTION_TARGETS, *MLP_TARGETS) if name in wanted]


def check_lora(spec: LoraSpec, cfg: ModelConfig) -> None:
    """ConfigError (exit 2) naming ``spec.training.lora.rank`` when the rank exceeds the smaller
    side of a targeted projection (a rank that large is no longer low-rank, and PEFT refuses it)."""
    shapes = projection_shapes(cfg)
    for name in targets(spec):
        n_in, n_out = shapes[name]
        if spec.rank > min(n_in, n_out):
            raise ConfigError(
                f"spec.training.lora.rank: {spec.rank} is larger than {name} of this model "
                f"({n_in} -> {n_out} features); use at most {min(n_in, n_out)}"
            )


class Adapters(nnx.Module):
    """The LoRA adapters of one attention or MLP module: an ``nnx.LoRA`` per targeted projection."""

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, int]],
        spec: LoraSpec,
        *,
        dtype: Any,
        rngs: nnx.Rngs,
    ) -> None:
        self.scale = float(spec.alpha) / spec.rank
        self.dropout = nnx.Dropout(float(spec.dropout))
        self.layers = nnx.Dict(
            {
                name: nnx.LoRA(n_in, spec.rank, n_out, dtype=dtype, param_dtype=ADAPTER_DTYPE, rngs=rngs)
                for name, (n_in, n_out) in shapes.items()
            }
        )

    def __call__(self, name: str, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array | None:
        """``(alpha / r) * dropout(x) A B`` for projection ``name`` ([..., in] -> [..., out] in x's
        dtype), or None when it has no adapter. Dropout only when ``rngs`` is given (training)."""
        if name not in self.layers:
            return None
        if rngs is not None and self.dropout.rate > 0:
            x = self.dropout(x, deterministic=False, rngs=rngs)
        return (self.layers[name](x) * self.scale).astype(x.dtype)


def add_adapters(model: Transformer, spec: LoraSpec, seed: int) -> None:
    """Give every block of ``model`` the adapters ``spec`` asks for (in place). Their initial values
    come from their own random stream of ``seed``, so the base weights are those of a model without
    adapters."""
    cfg = model.cfg
    check_lora(spec, cfg)
    shapes = projection_shapes(cfg)
    chosen = targets(spec)
    rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.key(seed), _RNG_STREAM))
    for block in model.blocks:
        for module, names in ((block.attn, ATTENTION_TARGETS), (block.mlp, MLP_TARGETS)):
            wanted = {name: shapes[name] for name in names if name in chosen}
            if wanted:
                module.lora = Adapters(wanted, spec, dtype=cfg.dtype, rngs=rngs)


def trainable(training: TrainingSpec) -> Any:
    """What the optimizer updates: the adapters under LoRA, every parameter otherwise."""
    return nnx.LoRAParam if training.lora is not None else nnx.Param


def split_frozen(state: nnx.State) -> tuple[nnx.State, nnx.State]:
    """(frozen base weights, the rest: adapters, optimizer state) of a LoRA train state."""
    frozen, rest = nnx.split_state(state, FROZEN, ...)
    return frozen, rest


def join_frozen(frozen: nnx.State, rest: nnx.State) -> nnx.State:
    """The inverse of :func:`split_frozen`."""
    return nnx.merge_state(frozen, rest)


def checkpointed(state: nnx.State, training: TrainingSpec) -> nnx.State:
    """What a checkpoint holds of a train state: all of it, or under LoRA all but the frozen
    weights (the adapters, the optimizer state and its step)."""
    return split_frozen(state)[1] if training.lora is not None else state


def with_checkpointed(state: nnx.State, saved: nnx.State, training: TrainingSpec) -> nnx.State:
    """``state`` with what a checkpoint held (``saved``, from :func:`checkpointed`) put back."""
    return join_frozen(split_frozen(state)[0], saved) if training.lora is not None else saved


def state_sizes(state: nnx.State, training: TrainingSpec) -> dict[str, int]:
    """The sizes of a train state (``nnx.state((model, optimizer))``): its parameters, those the
    optimizer trains (the adapters under LoRA), and the bytes of the parameters and of the
    optimizer state (AdamW's moments of what it trains, and its step counters)."""
    model, optimizer = state[0], state[1]
    params = nnx.filter_state(model, nnx.Param)

    def count(tree: Any) -> int:
        return sum(x.size for x in jax.tree.leaves(tree))

    def nbytes(tree: Any) -> int:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

    return {
        "parameters": count(params),
        "trained_parameters": count(nnx.filter_state(model, trainable(training))),
        "parameter_bytes": nbytes(params),
        "optimizer_bytes": nbytes(optimizer),
    }


def count_adapter_params(cfg: ModelConfig, spec: LoraSpec) -> int:
    """Parameters of the adapters: ``n_layers * sum over targets of r * (in + out)``."""
    shapes = projection_shapes(cfg)
    return cfg.n_layers * sum(spec.rank * sum(shapes[name]) for name in targets(spec))
