"""The memory-lean cross-entropy equals optax's on float32 logits, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tunix_trainer.losses import softmax_cross_entropy


def reference(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def random_case(seed: int, shape: tuple[int, ...], vocab: int, dtype, scale: float = 3.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logits = (scale * jax.random.normal(k1, (*shape, vocab), jnp.float32)).astype(dtype)
    targets = jax.random.randint(k2, shape, 0, vocab, dtype=jnp.int32)
    weights = jax.random.uniform(k3, shape, jnp.float32)
    return logits, targets, weights


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_match_optax(dtype, seed):
    logits, targets, weights = random_case(seed, (3, 7), 301, dtype)

    def total(fn, x):
        return jnp.sum(fn(x, targets) * weights)

    ours, ours_grad = jax.jit(jax.value_and_grad(lambda x: total(softmax_cross_entropy, x)))(logits)
    ref, ref_grad = jax.jit(jax.value_and_grad(lambda x: total(reference, x)))(logits)
    np.testing.assert_allclose(
        softmax_cross_entropy(logits, targets), reference(logits, targets), rtol=1e-6, atol=1e-5
    )
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)
    assert ours_grad.dtype == logits.dtype  # the gradient stays in the logits' dtype
    tol = 1e-6 if dtype == jnp.float32 else 8e-3  # bf16: one rounding of the gradient itself
    np.testing.assert_allclose(
        np.asarray(ours_grad, np.float32), np.asarray(ref_grad.astype(dtype), np.float32), atol=tol
    )


def test_large_logits_do_not_overflow():
    logits = jnp.array([[1e4, 0.0, -1e4], [3e4, 3e4, 0.0]], jnp.float32)
    targets = jnp.array([0, 2], jnp.int32)
    ce = softmax_cross_entropy(logits, targets)
    np.testing.assert_allclose(ce, [0.0, 3e4 + np.log(2.0)], rtol=1e-6)
    grad = jax.grad(lambda x: softmax_cross_entropy(x, targets).sum())(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [0.5, 0.5, -1.0]], atol=1e-6)


def test_gradient_of_each_token_is_softmax_minus_onehot():
    logits, targets, _ = random_case(3, (4,), 11, jnp.float32)
    grad = jax.grad(lambda x: softmax_cross_entropy(x, targets).sum())(logits)
    expected = jax.nn.softmax(logits) - jax.nn.one_hot(targets, 11)
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    np.testing.assert_allclose(grad.sum(-1), 0.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_masked_vocabulary_equals_optax_on_the_valid_columns(dtype):
    """Ids >= valid_vocab (a padded vocabulary's rows) are out of the softmax: value and gradient
    equal optax's on the first valid_vocab columns, and their gradient is exactly 0."""
    valid = 259
    logits, _, weights = random_case(5, (3, 7), 384, dtype)
    targets = jax.random.randint(jax.random.key(6), (3, 7), 0, valid, dtype=jnp.int32)

    def ours(x):
        return jnp.sum(softmax_cross_entropy(x, targets, valid) * weights)

    def ref(x):
        return jnp.sum(reference(x[..., :valid], targets) * weights)

    value, grad = jax.jit(jax.value_and_grad(ours))(logits)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(ref))(logits)
    assert float(value) == pytest.approx(float(ref_value), rel=1e-6)
    assert not np.asarray(grad[..., valid:], np.float32).any()
    tol = 1e-6 if dtype == jnp.float32 else 8e-3
    np.testing.assert_allclose(
        np.asarray(grad[..., :valid], np.float32),
        np.asarray(ref_grad[..., :valid].astype(dtype), np.float32),
        atol=tol,
    )
    # valid_vocab equal to the width (or None) is the unmasked loss
    np.testing.assert_array_equal(
        softmax_cross_entropy(logits, targets, 384), softmax_cross_entropy(logits, targets)
    )
