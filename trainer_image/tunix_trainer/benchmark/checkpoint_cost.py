"""The cost of an asynchronous checkpoint save, as the training loop sees it (pure, no JAX).

    blocking         = host wall time of ``Checkpointer.save`` until it returns (the loop stalls)
    save             = host wall time from the start of ``save`` until ``wait`` returns (durable)
    overhead percent = 100 * blocking_p50 / (saveIntervalSteps * steady-state step time)

The overhead is the share of training time lost to checkpointing at the run's save interval:
one blocking stall per ``saveIntervalSteps`` steps. The background write overlaps training and
is not counted (it only matters when it outlasts a whole save interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunix_trainer.benchmark.stats import percentile

OVERHEAD_BUDGET_PERCENT = 2.0  # issue 5: amortised checkpoint overhead must stay below this


def amortized_overhead_percent(
    blocking_seconds: float, save_interval_steps: int, step_seconds: float
) -> float:
    """Percent of training time spent blocked in a save made every ``save_interval_steps`` steps."""
    if save_interval_steps < 1:
        raise ValueError("the save interval must be at least one step")
    if step_seconds <= 0 or not math.isfinite(step_seconds):
        raise ValueError("the step time must be positive and finite")
    if blocking_seconds < 0 or not math.isfinite(blocking_seconds):
        raise ValueError("the blocking time must be non-negative and finite")
    return 100.0 * blocking_seconds / (save_interval_steps * step_seconds)


@dataclass(frozen=True)
class CheckpointCost:
    """Measured saves (seconds, one entry per save) and what they cost at the run's interval."""

    blocking_seconds: tuple[float, ...]
    save_seconds: tuple[float, ...]
    checkpoint_bytes: int
    save_interval_steps: int
    step_seconds: float
    steps_between_saves: int

    def __post_init__(self) -> None:
        if not self.blocking_seconds or len(self.blocking_seconds) != len(self.save_seconds):
            raise ValueError("one blocking and one durable time per save are required")
        if any(not 0 <= b <= s for b, s in zip(self.blocking_seconds, self.save_seconds, strict=True)):
            raise ValueError("each save needs 0 <= blocking time <= durable save time")
        if self.checkpoint_bytes < 0 or self.steps_between_saves < 0:
            raise ValueError("checkpoint size and steps between saves must be non-negative")

    @classmethod
    def from_samples(
        cls,
        blocking_seconds: Sequence[float],
        save_seconds: Sequence[float],
        *,
        checkpoint_bytes: int,
        save_interval_steps: int,
        step_seconds: float,
        steps_between_saves: int,
    ) -> CheckpointCost:
        return cls(
            tuple(blocking_seconds),
            tuple(save_seconds),
            checkpoint_bytes,
            save_interval_steps,
            step_seconds,
            steps_between_saves,
        )

    @property
    def saves(self) -> int:
        return len(self.blocking_seconds)

    @property
    def blocking_p50(self) -> float:
        return percentile(self.blocking_seconds, 50)

    @property
    def blocking_max(self) -> float:
        return max(self.blocking_seconds)

    @property
    def save_p50(self) -> float:
        return percentile(self.save_seconds, 50)

    @property
    def amortized_overhead_percent(self) -> float:
        return amortized_overhead_percent(self.blocking_p50, self.save_interval_steps, self.step_seconds)

    @property
    def within_budget(self) -> bool:
        return self.amortized_overhead_percent < OVERHEAD_BUDGET_PERCENT

    def to_json(self) -> dict[str, Any]:
        """The ``checkpoint`` object of ``benchmark.json`` (camelCase keys)."""
        return {
            "note": "async Orbax save into a temporary local directory; blocking = until save() "
            "returns, save = until wait() returns (durable)",
            "saves": self.saves,
            "stepsBetweenSaves": self.steps_between_saves,
            "blockingSecondsP50": self.blocking_p50,
            "blockingSecondsMax": self.blocking_max,
            "saveSecondsP50": self.save_p50,
            "checkpointBytes": self.checkpoint_bytes,
            "saveIntervalSteps": self.save_interval_steps,
            "stepTimeSeconds": self.step_seconds,
            "amortizedOverheadPercent": self.amortized_overhead_percent,
            "budgetPercent": OVERHEAD_BUDGET_PERCENT,
            "withinBudget": self.within_budget,
        }
