"""Time asynchronous checkpoint saves of the benchmarked train state (``--checkpoint-cost N``).

The trainer's own ``Checkpointer`` saves into a fresh temporary local directory (under
``$TMPDIR``; removed afterwards, so a benchmark never writes into the run's checkpoint location).
For each of ``saves`` rounds: ``steps_between_saves`` training steps, the state awaited with
``jax.block_until_ready``, then ``save`` timed until it returns (the stall the training loop sees)
and ``wait`` until the checkpoint is durable, so saves never queue on each other.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax

from tunix_trainer.benchmark.checkpoint_cost import CheckpointCost
from tunix_trainer.benchmark.runner import BatchCycle
from tunix_trainer.checkpoint import Checkpointer

S = TypeVar("S")
STEPS_BETWEEN_SAVES = 2  # so every save writes a state the step has just produced


def directory_bytes(path: str) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            file_path = os.path.join(directory, name)
            if not os.path.islink(file_path):
                total += os.path.getsize(file_path)
    return total


def measure_checkpoint_cost(
    step: Callable[[S, Any], tuple[S, Any]],
    state: S,
    batches: Sequence[Any],
    *,
    saves: int,
    save_interval_steps: int,
    step_seconds: float,
    meta: Mapping[str, Any] | None = None,
    steps_between_saves: int = STEPS_BETWEEN_SAVES,
    check_stop: Callable[[int], None] = lambda done: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[S, CheckpointCost]:
    """Save ``state`` ``saves`` times (see module doc); returns the final state and the cost.

    ``step_seconds`` (the steady-state step time) and ``save_interval_steps`` only enter the
    amortised overhead. ``check_stop(steps_done)`` is called before each training step.
    """
    if saves < 1:
        raise ValueError("at least one save is required")
    if jax.process_count() > 1:
        raise ValueError("checkpoint cost is measured in a single process only")
    next_batch = BatchCycle(batches)
    blocking: list[float] = []
    durable: list[float] = []
    done = 0
    with tempfile.TemporaryDirectory(prefix="tunix-ckpt-cost-") as scratch:
        directory = os.path.join(scratch, "checkpoints")
        checkpointer = Checkpointer(directory, save_interval_steps=save_interval_steps, max_to_keep=1)
        try:
            for number in range(1, saves + 1):
                for _ in range(steps_between_saves):
                    check_stop(done)
                    state, _ = step(state, next_batch())
                    done += 1
                jax.block_until_ready(state)
                start = clock()
                checkpointer.save(number, state, {**(meta or {}), "step": number})
                returned = clock()
                checkpointer.wait()
                blocking.append(returned - start)
                durable.append(clock() - start)
            size = directory_bytes(os.path.join(directory, str(saves)))
        finally:
            checkpointer.close()
    cost = CheckpointCost.from_samples(
        blocking,
        durable,
        checkpoint_bytes=size,
        save_interval_steps=save_interval_steps,
        step_seconds=step_seconds,
        steps_between_saves=steps_between_saves,
    )
    return state, cost
