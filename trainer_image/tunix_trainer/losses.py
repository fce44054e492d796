"""Token cross-entropy over large vocabularies without a float32 copy of the logits.

``optax.softmax_cross_entropy_with_integer_labels(logits.astype(float32), ...)`` makes XLA write
the [tokens, vocab] logits once more in float32, and autodiff keeps float32 intermediates of the
same size for the backward pass. At 32k tokens x 50k vocabulary that is several 6.6 GB passes per
step (about 7 ms of a 65 ms ``125m`` step on an H200, ``docs/PERFORMANCE.md``). Here the forward
pass only reduces over the logits in their own dtype (upcast inside the fused reductions) and keeps
the per-token log-sum-exp; the backward pass recomputes ``softmax - onehot`` in one fused
elementwise kernel that reads the logits once and writes their gradient in the logits' dtype.
The arithmetic is the same as optax's on float32-cast logits: every element is upcast before use.
Ids of a padded vocabulary's extra rows can be masked out of the softmax in the same kernels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _masked(logits: jax.Array, valid_vocab: int | None) -> jax.Array:
    """``logits`` with the ids ``>= valid_vocab`` at -inf (no probability mass); an iota compare
    and select that XLA fuses into the reductions and the backward kernel (no extra pass)."""
    if valid_vocab is None or valid_vocab >= logits.shape[-1]:
        return logits
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.where(ids < valid_vocab, logits, jnp.asarray(-jnp.inf, logits.dtype))


def _forward(logits: jax.Array, targets: jax.Array, valid_vocab: int | None):
    """The per-token cross-entropy and the residuals of the backward pass: the logits, the
    targets, the row maximum [..., 1] and ``log(sum(exp(logits - maximum)))`` [...] (float32).
    The log-sum-exp is kept in these two parts so that ``logits - maximum`` stays exact at large
    magnitudes."""
    masked = _masked(logits, valid_vocab)
    peak = jnp.max(masked, axis=-1, keepdims=True).astype(jnp.float32)
    log_sum = jnp.log(jnp.sum(jnp.exp(masked.astype(jnp.float32) - peak), axis=-1))
    target = jnp.take_along_axis(masked, targets[..., None], axis=-1).astype(jnp.float32)
    return log_sum - (target - peak)[..., 0], (logits, targets, peak, log_sum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits: jax.Array, targets: jax.Array, valid_vocab: int | None) -> jax.Array:
    return _forward(logits, targets, valid_vocab)[0]


def _backward(valid_vocab: int | None, residuals, cotangent: jax.Array):
    logits, targets, peak, log_sum = residuals
    probs = jnp.exp(_masked(logits, valid_vocab).astype(jnp.float32) - peak - log_sum[..., None])
    vocab = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
    onehot = (vocab == targets[..., None]).astype(jnp.float32)
    grad = (probs - onehot) * cotangent[..., None].astype(jnp.float32)
    return grad.astype(logits.dtype), None


_cross_entropy.defvjp(_forward, _backward)


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array, valid_vocab: int | None = None) -> jax.Array:
    """Per-token ``logsumexp(logits) - logits[target]`` in float32; ``logits`` [..., V] in any
    float dtype, ``targets`` [...] integer ids in ``[0, V)``. Differentiable in ``logits``.

    With ``valid_vocab`` (a static int), ids ``>= valid_vocab`` (a padded vocabulary's extra rows)
    are left out of the softmax: they get probability 0 and gradient 0."""
    return _cross_entropy(logits, targets, valid_vocab)
