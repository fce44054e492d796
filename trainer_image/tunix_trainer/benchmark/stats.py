"""Step-time statistics (pure Python, no JAX)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class StepTimes:
    """Summary of individually synchronised step wall times, in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float


def summarize_step_times(times_s: Sequence[float]) -> StepTimes:
    """Mean, p50/p90/p99, min and max of ``times_s`` (at least one positive time)."""
    if not times_s:
        raise ValueError("no step times to summarise")
    if any(t <= 0 or not math.isfinite(t) for t in times_s):
        raise ValueError("step times must be positive and finite")
    return StepTimes(
        count=len(times_s),
        mean=sum(times_s) / len(times_s),
        p50=percentile(times_s, 50),
        p90=percentile(times_s, 90),
        p99=percentile(times_s, 99),
        min=min(times_s),
        max=max(times_s),
    )
