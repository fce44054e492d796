"""The transformer, its analytic parameter/FLOP counts and the resolution of model specs."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tunix_api.training import DatasetSpec, Dtype, ModelSpec
from tunix_trainer.data import BatchIterator
from tunix_trainer.model import (
    PRESETS,
    ModelConfig,
    Transformer,
    count_params,
    flops_per_token,
    pad_vocab,
    resolve_model_config,
)
from tunix_trainer.presets import parse_dtype
from tunix_trainer.tokenizer import ByteTokenizer

SMALL = ModelConfig(
    vocab_size=128, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24, dtype=jnp.float32
)


def real_param_count(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def tiny(dtype: str = "bfloat16") -> ModelConfig:
    return resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=259, compute_dtype=dtype)


def random_tokens(cfg: ModelConfig, shape: tuple[int, int], seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), shape, 0, cfg.vocab_size, dtype=jnp.int32)


# --- forward pass ---------------------------------------------------------------------------------


def test_logits_shape_and_dtypes():
    cfg = tiny()
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    logits = nnx.jit(lambda m, t: m(t))(model, random_tokens(cfg, (3, 17)))
    assert logits.shape == (3, 17, 384)
    assert logits.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}


def test_causal_later_tokens_never_change_earlier_logits():
    cfg = tiny("float32")
    model = Transformer(cfg, rngs=nnx.Rngs(1))
    tokens = random_tokens(cfg, (2, 12))
    changed = tokens.at[:, 7:].set((tokens[:, 7:] + 5) % cfg.vocab_size)
    a, b = model(tokens), model(changed)
    np.testing.assert_allclose(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert not np.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_position_matters():
    """Without position information attention is blind to the order of earlier tokens; with
    rotary embeddings swapping two earlier tokens changes the last position's logits."""
    cfg = tiny("float32")
    model = Transformer(cfg, rngs=nnx.Rngs(2))
    logits = model(jnp.array([[5, 9, 42], [9, 5, 42]], dtype=jnp.int32))
    assert not np.allclose(logits[0, 2], logits[1, 2], atol=1e-5)


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
    gqa = Transformer(SMALL, rngs=nnx.Rngs(3))
    mha = Transformer(dataclasses.replace(SMALL, n_kv_heads=SMALL.n_heads), rngs=nnx.Rngs(4))
    group = SMALL.n_heads // SMALL.n_kv_heads
    mha.embed.value = gqa.embed.value
    mha.final_norm.scale.value = gqa.final_norm.scale.value
    for src, dst in zip(gqa.blocks, mha.blocks, strict=True):
        qkv = src.attn.qkv.value
        h, k = SMALL.n_heads, SMALL.n_kv_heads
        q, key, value = qkv[:, :h], qkv[:, h : h + k], qkv[:, h + k :]
        dst.attn.qkv.value = jnp.concatenate(
            [q, jnp.repeat(key, group, axis=1), jnp.repeat(value, group, axis=1)], axis=1
        )
        dst.attn.out.value = src.attn.out.value
        dst.mlp.gate_up.value = src.mlp.gate_up.value
        dst.mlp.down.value = src.mlp.down.value
        dst.attn_norm.scale.value = src.attn_norm.scale.value
        dst.mlp_norm.scale.value = src.mlp_norm.scale.value
    tokens = random_tokens(SMALL, (2, 9))
    np.testing.assert_allclose(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)
    assert src.attn.qkv.value.shape == (16, 4 + 2 * 2, 4)


def test_output_projections_are_scaled_at_init():
    cfg = dataclasses.replace(SMALL, d_model=64, n_heads=4, n_kv_heads=4, d_ff=256, n_layers=8)
    model = Transformer(cfg, rngs=nnx.Rngs(5))
    scaled = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert float(jnp.std(model.blocks[0].mlp.down.value)) == pytest.approx(scaled, rel=0.1)
    assert float(jnp.std(model.blocks[0].attn.out.value)) == pytest.approx(scaled, rel=0.1)
    assert float(jnp.std(model.embed.value)) == pytest.approx(0.02, rel=0.1)


def test_tiny_model_learns_the_seeded_text(tmp_path):
    """Model + data together: a few dozen Adam steps cut the byte-level loss far below ln(vocab)."""
    from tools.seed_dataset import seed_dataset

    path = tmp_path / "d.jsonl"
    seed_dataset("text", 200, 0, str(path))
    tokenizer = ByteTokenizer()
    cfg = tiny("float32")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    batches = BatchIterator(DatasetSpec(uri=str(path)), tokenizer, batch_size=8, seq_len=64, seed=0)

    @nnx.jit
    def step(model, optimizer, inputs, targets, mask):
        def loss_fn(model):
            logits = model(inputs).astype(jnp.float32)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return (losses * mask).sum() / mask.sum()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    for _ in range(60):
        b = next(batches)
        losses.append(float(step(model, optimizer, b.inputs, b.targets, b.loss_mask)))
    assert losses[0] > 5.0  # ~ln(384) at init
    assert np.mean(losses[-5:]) < 3.0


# --- analytic counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [tiny(), SMALL], ids=["tiny", "small-gqa"])
def test_count_params_matches_the_model(cfg):
    assert count_params(cfg) == real_param_count(Transformer(cfg, rngs=nnx.Rngs(0)))


def test_count_params_hand_computed():
    # embed 128*16 + 2 layers * (norms 32 + qkv 16*8*4 + out 4*4*16 + mlp 3*16*24) + final norm 16
    assert count_params(SMALL) == 2048 + 2 * (32 + 512 + 256 + 1152) + 16


def test_preset_sizes_match_their_names():
    sizes = {
        name: count_params(resolve_model_config(ModelSpec(preset=name), tokenizer_vocab_size=259))
        for name in PRESETS
    }
    assert sizes["tiny"] < 1e6
    assert 1.0e8 < sizes["125m"] < 1.5e8
    assert 3.0e8 < sizes["350m"] < 4.0e8
    assert sizes["1b"] == pytest.approx(1.2358e9, rel=0.001)  # Llama-3.2-1B: 1.24B with tied embeddings


def test_flops_per_token_hand_computed():
    cfg = ModelConfig(vocab_size=128, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=32)
    # head_dim 8; per layer: qkv 16*(2+2)*8=512, out 2*8*16=256, mlp 3*16*32=1536 -> 2304
    n_matmul = 2 * 2304 + 128 * 16  # + tied head, embedding lookup excluded
    attention = 6 * 2 * 8 * 16  # 12*L*T*d halved for the causal mask, T=8
    assert flops_per_token(cfg, 8) == 6 * n_matmul + attention == 41472.0
    with pytest.raises(ValueError):
        flops_per_token(cfg, 0)


def test_flops_per_token_grows_with_sequence_only_through_attention():
    cfg = tiny()
    assert flops_per_token(cfg, 2048) - flops_per_token(cfg, 1024) == 6 * 2 * 1024 * 128


# --- configuration --------------------------------------------------------------------------------


def test_pad_vocab():
    assert [pad_vocab(n) for n in (1, 128, 129, 259, 50257)] == [128, 128, 256, 384, 50304]
    assert pad_vocab(10, multiple=8) == 16
    with pytest.raises(ValueError):
        pad_vocab(0)


def test_resolve_preset_then_explicit_overrides():
    cfg = resolve_model_config(ModelSpec(preset="1b", n_layers=2, d_ff=512), tokenizer_vocab_size=259)
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff) == (
        128256,
        2048,
        2,
        32,
        8,
        512,
    )
    assert cfg.rope_theta == 500_000.0
    assert cfg.dtype == jnp.bfloat16 and cfg.param_dtype == jnp.float32


def test_resolve_vocab_is_the_larger_one_padded():
    assert resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=259).vocab_size == 384
    assert resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=1000).vocab_size == 1024
    spec = ModelSpec(preset="tiny", vocab_size=50000)
    assert resolve_model_config(spec, tokenizer_vocab_size=259).vocab_size == 50048


def test_resolve_explicit_dimensions_without_preset():
    spec = ModelSpec(d_model=64, n_layers=3, n_heads=8, d_ff=128, norm_eps=1e-6)
    cfg = resolve_model_config(
        spec, tokenizer_vocab_size=259, compute_dtype="float32", param_dtype="bfloat16"
    )
    assert (cfg.vocab_size, cfg.n_kv_heads, cfg.head_dim, cfg.norm_eps) == (384, 8, 8, 1e-6)
    assert cfg.dtype == jnp.float32 and cfg.param_dtype == jnp.bfloat16


def test_resolve_overriding_heads_on_a_gqa_preset_defaults_to_mha():
    cfg = resolve_model_config(ModelSpec(preset="1b", n_heads=16), tokenizer_vocab_size=259)
    assert (cfg.n_heads, cfg.n_kv_heads) == (16, 16)
    cfg = resolve_model_config(ModelSpec(preset="1b", n_heads=16, n_kv_heads=4), tokenizer_vocab_size=259)
    assert (cfg.n_heads, cfg.n_kv_heads) == (16, 4)


def test_resolve_rejects_invalid_shapes():
    with pytest.raises(ValueError, match="even"):
        resolve_model_config(ModelSpec(d_model=12, n_layers=1, n_heads=4, d_ff=8), tokenizer_vocab_size=259)
    with pytest.raises(ValueError, match="nKvHeads"):
        resolve_model_config(ModelSpec(preset="tiny", n_kv_heads=3), tokenizer_vocab_size=259)
    with pytest.raises(ValueError, match="dModel"):
        resolve_model_config(ModelSpec(preset="tiny", n_heads=3), tokenizer_vocab_size=259)
    with pytest.raises(ValueError, match="dtype"):
        resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=259, compute_dtype="int8")
    with pytest.raises(ValueError, match="tokenizer"):
        resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=0)


def test_parse_dtype_accepts_the_contract_enum():
    assert parse_dtype(Dtype.BFLOAT16) == jnp.bfloat16
    assert parse_dtype("float32") == jnp.float32
    assert parse_dtype(jnp.float16) == jnp.float16


# --- attention kernel choice ----------------------------------------------------------------------


def test_attention_kernel_stays_xla_off_gpu_and_keeps_explicit_choices():
    from tunix_trainer.model import choose_attention_impl

    cfg = tiny()
    assert choose_attention_impl(cfg, "cpu") is cfg
    assert choose_attention_impl(tiny("float32"), "gpu").attention_impl == "xla"  # cuDNN needs 16-bit
    explicit = dataclasses.replace(cfg, attention_impl="cudnn")
    assert choose_attention_impl(explicit, "gpu") is explicit


def test_attention_kernel_falls_back_to_xla_when_cudnn_refuses(caplog):
    from tunix_trainer.model import choose_attention_impl

    # On this CPU-only machine the cuDNN probe fails exactly as it would with a missing or old cuDNN.
    chosen = choose_attention_impl(tiny(), "gpu")
    assert chosen.attention_impl == "xla"
    assert "cuDNN attention unavailable" in caplog.text
