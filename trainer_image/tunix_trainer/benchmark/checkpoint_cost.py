"""The cost of an asynchronous checkpoint save, as the training loop sees it (pure, no JAX).

    blocking         = host wall time of ``Checkpointer.save`` until it returns
    stall            = wall time of the save plus the training steps run while it proceeds,
                       minus those steps' steady-state time: what the save cost the loop,
                       the blocking part and any slowdown of the steps by the background
                       transfer and write together
    save             = host wall time from the start of ``save`` until ``wait`` returns (durable;
                       ``wait`` is called after those steps, so this is an upper bound)
    overhead percent = 100 * max(blocking_p50, stall_p50) / (saveIntervalSteps * step time)

The overhead is the share of training time lost to checkpointing at the run's save interval:
one save per ``saveIntervalSteps`` steps.
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
    stall_seconds: tuple[float, ...]
    save_seconds: tuple[float, ...]
    checkpoint_bytes: int
    save_interval_steps: int
    step_seconds: float
    steps_during_save: int

    def __post_init__(self) -> None:
        n = len(self.blocking_seconds)
        if not n or len(self.save_seconds) != n or len(self.stall_seconds) != n:
            raise ValueError("one blocking, one stall and one durable time per save are required")
        if any(not 0 <= b <= s for b, s in zip(self.blocking_seconds, self.save_seconds, strict=True)):
            raise ValueError("each save needs 0 <= blocking time <= durable save time")
        if not all(math.isfinite(x) for x in self.stall_seconds):
            raise ValueError("stall times must be finite")
        if self.checkpoint_bytes < 0 or self.steps_during_save < 0:
            raise ValueError("checkpoint size and steps during a save must be non-negative")

    @classmethod
    def from_samples(
        cls,
        blocking_seconds: Sequence[float],
        stall_seconds: Sequence[float],
        save_seconds: Sequence[float],
        *,
        checkpoint_bytes: int,
        save_interval_steps: int,
        step_seconds: float,
        steps_during_save: int,
    ) -> CheckpointCost:
        return cls(
            tuple(blocking_seconds),
            tuple(stall_seconds),
            tuple(save_seconds),
            checkpoint_bytes,
            save_interval_steps,
            step_seconds,
            steps_during_save,
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
    def stall_p50(self) -> float:
        return percentile(self.stall_seconds, 50)

    @property
    def cost_seconds(self) -> float:
        """Training time lost per save: the larger of the median blocking and stall times."""
        return max(self.blocking_p50, self.stall_p50, 0.0)

    @property
    def save_p50(self) -> float:
        return percentile(self.save_seconds, 50)

    @property
    def amortized_overhead_percent(self) -> float:
        return amortized_overhead_percent(self.cost_seconds, self.save_interval_steps, self.step_seconds)

    @property
    def within_budget(self) -> bool:
        return self.amortized_overhead_percent < OVERHEAD_BUDGET_PERCENT

    def to_json(self) -> dict[str, Any]:
        """The ``checkpoint`` object of ``benchmark.json`` (camelCase keys)."""
        return {
            "note": "async save into a temporary local directory; blocking = until save() returns, "
            "stall = save plus the steps run during it minus their steady-state time, "
            "save = until wait() returns after those steps (durable)",
            "saves": self.saves,
            "stepsDuringSave": self.steps_during_save,
            "blockingSecondsP50": self.blocking_p50,
            "blockingSecondsMax": self.blocking_max,
            "stallSecondsP50": self.stall_p50,
            "saveSecondsP50": self.save_p50,
            "checkpointBytes": self.checkpoint_bytes,
            "saveIntervalSteps": self.save_interval_steps,
            "stepTimeSeconds": self.step_seconds,
            "amortizedOverheadPercent": self.amortized_overhead_percent,
            "budgetPercent": OVERHEAD_BUDGET_PERCENT,
            "withinBudget": self.within_budget,
        }
