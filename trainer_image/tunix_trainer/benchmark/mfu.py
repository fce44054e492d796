"""Model FLOPs utilisation (pure).

    model FLOP/s = flops_per_token(cfg, seq_len) * tokens_per_step / step_time
    MFU          = model FLOP/s / (peak FLOP/s per device * devices)

``flops_per_token`` is the analytic training cost of ``tunix_trainer.model.flops_per_token``:
``6 * N + 6 * L * T * H * h``. 6N covers the forward (2N) and backward (4N) matmuls over the N
matmul parameters (the tied output head included, the embedding lookup excluded); the second
term is the attention score and value matmuls (``12 * L * T * H * h`` for full attention) counted
once for the causal mask, i.e. halved. Rematerialisation, norms and softmax are not counted: MFU
measures useful model work, not the hardware's work.
"""

from __future__ import annotations


def model_flops_per_second(flops_per_token: float, tokens_per_step: int, step_time_s: float) -> float:
    """Useful model FLOP/s achieved at ``step_time_s`` seconds per optimizer step."""
    if step_time_s <= 0:
        raise ValueError("step time must be positive")
    return flops_per_token * tokens_per_step / step_time_s


def mfu(
    flops_per_token: float,
    tokens_per_step: int,
    step_time_s: float,
    peak_flops_per_device: float | None,
    n_devices: int,
) -> float | None:
    """Fraction of the devices' dense peak spent on model FLOPs; ``None`` when the peak is unknown."""
    if peak_flops_per_device is None:
        return None
    if peak_flops_per_device <= 0 or n_devices < 1:
        raise ValueError("peak FLOP/s and device count must be positive")
    achieved = model_flops_per_second(flops_per_token, tokens_per_step, step_time_s)
    return achieved / (peak_flops_per_device * n_devices)
