"""Token cross-entropy over large vocabularies without a float32 copy of the logits.

``optax.softmax_cross_entropy_with_integer_labels(logits.astype(float32), ...)`` makes XLA write
the [tokens, vocab] logits once more in float32, and autodiff keeps float32 intermediates of the
same size for the backward pass. At 32k tokens x 50k vocabulary that is several 6.6 GB passes per
step (about 7 ms of a 65 ms ``125m`` step on an H200, ``docs/PERFORMANCE.md``). Here the forward
pass only reduces over the logits in their own dtype (upcast inside the fused reductions) and keeps
the per-token log-sum-exp; the backward pass recomputes ``softmax - onehot`` in one fused
elementwise kernel that reads the logits once and writes their gradient in the logits' dtype.
The arithmetic is the same as optax's on float32-cast logits: every element is upcast before use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _forward(logits: jax.Array, targets: jax.Array):
    """The per-token cross-entropy and the residuals of the backward pass: the logits, the
    targets, the row maximum [..., 1] and ``log(sum(exp(logits - maximum)))`` [...] (float32).
    The log-sum-exp is kept in these two parts so that ``logits - maximum`` stays exact at large
    magnitudes."""
    peak = jnp.max(logits, axis=-1, keepdims=True).astype(jnp.float32)
    log_sum = jnp.log(jnp.sum(jnp.exp(logits.astype(jnp.float32) - peak), axis=-1))
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1).astype(jnp.float32)
    return log_sum - (target - peak)[..., 0], (logits, targets, peak, log_sum)


@jax.custom_vjp
def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token ``logsumexp(logits) - logits[target]`` in float32; ``logits`` [..., V] in any
    float dtype, ``targets`` [...] integer ids in ``[0, V)``. Differentiable in ``logits``."""
    return _forward(logits, targets)[0]


def _backward(residuals, cotangent: jax.Array):
    logits, targets, peak, log_sum = residuals
    probs = jnp.exp(logits.astype(jnp.float32) - peak - log_sum[..., None])
    vocab = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
    onehot = (vocab == targets[..., None]).astype(jnp.float32)
    grad = (probs - onehot) * cotangent[..., None].astype(jnp.float32)
    return grad.astype(logits.dtype), None


softmax_cross_entropy.defvjp(_forward, _backward)
