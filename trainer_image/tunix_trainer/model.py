"""Decoder-only transformer in Flax NNX (Llama-style).

Token embedding -> ``n_layers`` pre-norm blocks (RMSNorm, causal grouped-query self-attention with
rotary position embeddings, RMSNorm, SwiGLU MLP) -> final RMSNorm -> output head (the embedding,
or a separate matrix when ``tie_embeddings`` is off). No biases. Parameters are stored in
``cfg.param_dtype`` and cast to ``cfg.dtype`` where they are used; normalisation statistics, rotary
embeddings and the attention softmax are computed in float32. The layout is Hugging Face's
``LlamaForCausalLM`` up to reshapes and transposes (``tunix_trainer.pretrained.weights``). With
LoRA (``tunix_trainer.lora``) the attention and MLP modules carry ``nnx.LoRA`` adapters whose
outputs are added to their projections' slices.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_trainer.presets import PRESETS, ModelConfig, RopeScaling, pad_vocab, resolve_model_config

__all__ = [
    "PRESETS",
    "ModelConfig",
    "RopeScaling",
    "Transformer",
    "choose_attention_impl",
    "count_params",
    "flops_per_token",
    "pad_vocab",
    "resolve_model_config",
]

INIT_STD = 0.02
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128

log = logging.getLogger(__name__)


def choose_attention_impl(cfg: ModelConfig, platform: str) -> ModelConfig:
    """``cfg`` with cuDNN's fused attention on GPU when it can run this shape, else XLA's.

    ``jax.nn.dot_product_attention(implementation=None)`` means XLA in JAX 0.10/0.11, so the fused
    kernel has to be asked for. It needs 16-bit compute and a head dimension that is a multiple of 8
    (at most 128); a one-off probe call confirms the installed cuDNN accepts it, and any failure
    falls back to XLA with a warning rather than failing the run. An explicit choice is kept.
    """
    if cfg.attention_impl is not None or platform != "gpu":
        return cfg
    if jnp.dtype(cfg.dtype) not in CUDNN_DTYPES or cfg.head_dim % 8 or cfg.head_dim > CUDNN_MAX_HEAD_DIM:
        return dataclasses.replace(cfg, attention_impl="xla")
    try:
        q = jnp.zeros((1, 128, cfg.n_heads, cfg.head_dim), cfg.dtype)
        kv = jnp.zeros((1, 128, cfg.n_kv_heads, cfg.head_dim), cfg.dtype)
        jax.block_until_ready(jax.nn.dot_product_attention(q, kv, kv, is_causal=True, implementation="cudnn"))
    except Exception as exc:  # cuDNN missing or too old for this shape
        log.warning("cuDNN attention unavailable (%s: %s); using XLA attention", type(exc).__name__, exc)
        return dataclasses.replace(cfg, attention_impl="xla")
    return dataclasses.replace(cfg, attention_impl="cudnn")


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype: jnp.dtype) -> nnx.Param:
    return nnx.Param(nnx.initializers.normal(std)(rngs.params(), shape, dtype))


class RMSNorm(nnx.Module):
    """Root-mean-square normalisation with a learned scale, statistics in float32."""

    def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> jax.Array:
    """The rotary inverse frequencies [head_dim/2] (float32), with Llama 3's scaling when given:
    wavelengths longer than ``original / low_freq_factor`` are divided by ``factor``, shorter than
    ``original / high_freq_factor`` kept, and the band between interpolated smoothly."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    original = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    smooth = (original / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = jnp.where(wavelen > original / scaling.low_freq_factor, inv_freq / scaling.factor, smoothed)
    return jnp.where(wavelen < original / scaling.high_freq_factor, inv_freq, scaled)


def rope_tables(
    seq_len: int, head_dim: int, theta: float, scaling: RopeScaling | None = None
) -> tuple[jax.Array, jax.Array]:
    """cos and sin of the rotary angles (float32, [1, T, 1, head_dim/2], broadcast over [B, T, N, H])."""
    inv_freq = rope_frequencies(head_dim, theta, scaling)
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]


def _adapted(
    lora: nnx.Module | None, name: str, x: jax.Array, y: jax.Array, rngs: nnx.Rngs | None
) -> jax.Array:
    """``y`` (the projection ``name`` of ``x``, any trailing shape) plus its LoRA adapter's output."""
    delta = None if lora is None else lora(name, x, rngs)
    return y if delta is None else y + delta.reshape(y.shape)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate [B, T, N, H] by position (rotate-half convention), computed in float32."""
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Attention(nnx.Module):
    """Causal grouped-query self-attention with one fused q/k/v projection."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        heads = cfg.n_heads + 2 * cfg.n_kv_heads
        out_std = INIT_STD / math.sqrt(2 * cfg.n_layers)
        self.qkv = _normal(rngs, (cfg.d_model, heads, cfg.head_dim), INIT_STD, cfg.param_dtype)
        self.out = _normal(rngs, (cfg.n_heads, cfg.head_dim, cfg.d_model), out_std, cfg.param_dtype)
        self.lora = nnx.data(None)  # LoRA adapters of q/k/v/o_proj (tunix_trainer.lora.add_adapters)

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        cfg = self.cfg
        qkv = jnp.einsum("btd,dnh->btnh", x, self.qkv[...].astype(cfg.dtype))
        q, k, v = jnp.split(qkv, [cfg.n_heads, cfg.n_heads + cfg.n_kv_heads], axis=2)
        if self.lora is not None:
            q = _adapted(self.lora, "q_proj", x, q, rngs)
            k = _adapted(self.lora, "k_proj", x, k, rngs)
            v = _adapted(self.lora, "v_proj", x, v, rngs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=cfg.attention_impl)
        out = jnp.einsum("btnh,nhd->btd", o, self.out[...].astype(cfg.dtype))
        if self.lora is not None:
            out = _adapted(self.lora, "o_proj", o.reshape(*o.shape[:2], -1), out, rngs)
        return out


class MLP(nnx.Module):
    """SwiGLU: (silu(x W_gate) * x W_up) W_down, gate and up fused in one matmul."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        out_std = INIT_STD / math.sqrt(2 * cfg.n_layers)
        self.gate_up = _normal(rngs, (cfg.d_model, 2, cfg.d_ff), INIT_STD, cfg.param_dtype)
        self.down = _normal(rngs, (cfg.d_ff, cfg.d_model), out_std, cfg.param_dtype)
        self.lora = nnx.data(None)  # LoRA adapters of gate/up/down_proj (tunix_trainer.lora.add_adapters)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        dtype = self.cfg.dtype
        h = jnp.einsum("btd,dkf->btkf", x, self.gate_up[...].astype(dtype))
        gate, up = h[:, :, 0], h[:, :, 1]
        if self.lora is None:
            return (jax.nn.silu(gate) * up) @ self.down[...].astype(dtype)
        gate = _adapted(self.lora, "gate_proj", x, gate, rngs)
        up = _adapted(self.lora, "up_proj", x, up, rngs)
        hidden = jax.nn.silu(gate) * up
        return _adapted(self.lora, "down_proj", hidden, hidden @ self.down[...].astype(dtype), rngs)


class Block(nnx.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=cfg.param_dtype)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=cfg.param_dtype)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        x = x + self.attn(self.attn_norm(x), cos, sin, rngs)
        return x + self.mlp(self.mlp_norm(x), rngs)


class Transformer(nnx.Module):
    """The language model: int32 tokens [B, T] -> logits [B, T, vocab] in ``cfg.dtype``.

    ``rngs`` (training only) drives the LoRA adapters' dropout; without it the model is
    deterministic."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = _normal(rngs, (cfg.vocab_size, cfg.d_model), INIT_STD, cfg.param_dtype)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=cfg.param_dtype)
        if not cfg.tie_embeddings:  # [vocab, d] like the embedding (and Hugging Face's lm_head)
            self.head = _normal(rngs, (cfg.vocab_size, cfg.d_model), INIT_STD, cfg.param_dtype)

    def __call__(self, tokens: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        cfg = self.cfg
        embed = self.embed[...]
        x = jnp.take(embed, tokens, axis=0).astype(cfg.dtype)
        cos, sin = rope_tables(tokens.shape[1], cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        for block in self.blocks:
            x = block(x, cos, sin, rngs)
        x = self.final_norm(x)
        head = embed if cfg.tie_embeddings else self.head[...]
        return jnp.einsum("btd,vd->btv", x, head.astype(cfg.dtype))


def _matmul_params_per_layer(cfg: ModelConfig) -> int:
    qkv = cfg.d_model * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    out = cfg.n_heads * cfg.head_dim * cfg.d_model
    mlp = 3 * cfg.d_model * cfg.d_ff
    return qkv + out + mlp


def count_params(cfg: ModelConfig) -> int:
    """Exact number of parameters of ``Transformer(cfg)``.

    ``V*d`` (embedding, shared with the head) + ``L * (2d + d*(H + 2K)*h + H*h*d + 3*d*d_ff)`` + ``d``
    (final norm), with h the head dimension and K the key/value heads; another ``V*d`` for an
    untied head.
    """
    per_layer = 2 * cfg.d_model + _matmul_params_per_layer(cfg)
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    return cfg.vocab_size * cfg.d_model + head + cfg.n_layers * per_layer + cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token, for MFU.

    ``6 * N + 6 * L * T * H * h`` where ``N = L * (d*(H + 2K)*h + H*h*d + 3*d*d_ff) + V*d`` counts
    the matmul parameters (the embedding lookup excluded, the tied output head included), T is
    ``seq_len`` and H*h the attention width. The attention term is the PaLM/MaxText full-attention
    value ``12 * L * T * H * h`` (QK^T and AV: 2 matmuls x 2 FLOPs x 3 for forward+backward) halved,
    because the causal mask means each query attends to (T+1)/2 ~ T/2 keys on average. Norms,
    rotary embeddings and softmax are not counted.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    n_matmul = cfg.n_layers * _matmul_params_per_layer(cfg) + cfg.vocab_size * cfg.d_model
    attention = 6 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim
    return float(6 * n_matmul + attention)
