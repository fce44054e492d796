"""Learning-rate schedule and the AdamW optimizer built from a TrainingSpec."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from tunix_api.training import LrDecay, TrainingSpec


def make_schedule(training: TrainingSpec) -> optax.Schedule:
    """Linear warm-up to ``learningRate`` over ``warmupSteps``, then decay to ``minLrRatio * lr``
    at ``steps``.

    The value at optimizer step ``count`` (0-based) is the rate used by that step's update; warm-up
    reaches the peak at its last step, so no step runs with a zero learning rate.
    """
    peak = float(training.learning_rate)
    floor = peak * float(training.min_lr_ratio)
    warmup = int(training.warmup_steps)
    decay_steps = max(int(training.steps) - warmup, 1)
    decay = training.decay

    def schedule(count: jax.Array | int) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        warm = peak * (count + 1.0) / max(warmup, 1)
        frac = jnp.clip((count - warmup) / decay_steps, 0.0, 1.0)
        if decay == LrDecay.COSINE:
            decayed = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * frac))
        elif decay == LrDecay.LINEAR:
            decayed = peak - (peak - floor) * frac
        else:
            decayed = jnp.full_like(frac, peak)
        return jnp.where(count < warmup, warm, decayed)

    return schedule


def decay_mask(params: object) -> object:
    """Weight decay applies to matrices only: norms, biases and other 1-D parameters are skipped."""
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(
    training: TrainingSpec, schedule: optax.Schedule | None = None
) -> optax.GradientTransformation:
    """Global-norm clipping (when ``gradClipNorm`` > 0) followed by AdamW with the schedule."""
    schedule = schedule or make_schedule(training)
    adamw = optax.adamw(
        learning_rate=schedule,
        b1=training.beta1,
        b2=training.beta2,
        eps=training.eps,
        weight_decay=training.weight_decay,
        mask=decay_mask,
    )
    if training.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(training.grad_clip_norm), adamw)
    return adamw
