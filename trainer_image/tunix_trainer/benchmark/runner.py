"""The timing loop: compile, warm-up, per-step synchronised window, back-to-back window, profile.

Works on any step ``step(state, batch) -> (state, outputs)``; ``tunix-bench`` passes the trainer's
own jitted training step. Batches are staged on the devices before timing and cycled, so the
figures measure the step, not the input pipeline.

Timing method (host wall clock, ``time.perf_counter``):

- compile: the first call, awaited with ``jax.block_until_ready`` (tracing, lowering, XLA
  compilation and one execution);
- warm-up: ``warmup_steps`` calls, awaited at the end, not timed;
- per-step window: ``measure_steps`` calls, each awaited before the next is dispatched, so each
  sample is one step's full latency (dispatch + device time) and percentiles are meaningful;
- back-to-back window: ``measure_steps`` more calls dispatched without waiting and awaited once,
  as training runs: steady-state throughput (and MFU) come from this window;
- profile (optional): ``profile_steps`` further calls under ``jax.profiler.trace``, after the
  timed windows so tracing overhead never enters the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import jax

from tunix_trainer.benchmark.report import Timings
from tunix_trainer.benchmark.stats import summarize_step_times

S = TypeVar("S")
Step = Callable[[S, Any], tuple[S, Any]]


@dataclass(frozen=True)
class LoopPlan:
    """How many steps each phase runs."""

    warmup_steps: int
    measure_steps: int
    profile_steps: int = 0
    profile_dir: str | None = None

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.measure_steps < 1 or self.profile_steps < 0:
            raise ValueError("warm-up >= 0, measure >= 1 and profile >= 0 steps are required")
        if self.profile_steps and not self.profile_dir:
            raise ValueError("profiling needs a directory")


class BatchCycle:
    """Endless round-robin over pre-staged batches."""

    def __init__(self, batches: Sequence[Any]) -> None:
        if not batches:
            raise ValueError("no batches to benchmark with")
        self._batches, self._i = list(batches), 0

    def __call__(self) -> Any:
        batch = self._batches[self._i % len(self._batches)]
        self._i += 1
        return batch


def run_loop(
    step: Step,
    state: S,
    batches: Sequence[Any],
    plan: LoopPlan,
    *,
    check_stop: Callable[[int], None] = lambda done: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[S, Timings]:
    """Run ``plan`` and return the final state and the measurements.

    ``check_stop(steps_done)`` is called between steps; it may raise to abort (e.g. on SIGTERM).
    """
    next_batch = BatchCycle(batches)
    done = 0

    def advance(state: S, n: int, *, sync_each: bool) -> tuple[S, list[float]]:
        nonlocal done
        samples = []
        for _ in range(n):
            check_stop(done)
            start = clock() if sync_each else 0.0
            state, outputs = step(state, next_batch())
            if sync_each:
                jax.block_until_ready((state, outputs))
                samples.append(clock() - start)
            done += 1
        return state, samples

    state, (compile_seconds,) = advance(state, 1, sync_each=True)

    state, _ = advance(state, plan.warmup_steps, sync_each=False)
    jax.block_until_ready(state)

    state, samples = advance(state, plan.measure_steps, sync_each=True)

    start = clock()
    state, _ = advance(state, plan.measure_steps, sync_each=False)
    jax.block_until_ready(state)
    window_seconds = clock() - start

    if plan.profile_steps:
        with jax.profiler.trace(plan.profile_dir):
            state, _ = advance(state, plan.profile_steps, sync_each=False)
            jax.block_until_ready(state)

    timings = Timings(
        compile_seconds=compile_seconds,
        warmup_steps=plan.warmup_steps,
        step_times=summarize_step_times(samples),
        window_seconds=window_seconds,
        window_steps=plan.measure_steps,
    )
    return state, timings
