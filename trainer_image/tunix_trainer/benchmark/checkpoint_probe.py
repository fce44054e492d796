"""Time asynchronous checkpoint saves of the benchmarked train state (``--checkpoint-cost N``).

The trainer's own ``Checkpointer`` saves into a fresh temporary local directory (under
``$TMPDIR``; removed afterwards, so a benchmark never writes into the run's checkpoint location).
For each of ``saves`` rounds: the state awaited with ``jax.block_until_ready``; ``save`` timed until
it returns (blocking); ``steps_during_save`` training steps dispatched at once, as the loop does,
and awaited (the window); then ``wait`` until the checkpoint is durable, so saves never queue on
each other. The stall is the window minus those steps' steady-state time (``step_seconds``): the
time the save really cost the loop, including any slowdown from the background copy and write.
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
STEPS_DURING_SAVE = 20  # long enough to cover the device-to-host copy of a large state


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
    steps_during_save: int = STEPS_DURING_SAVE,
    check_stop: Callable[[int], None] = lambda done: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[S, CheckpointCost]:
    """Save ``state`` ``saves`` times (see module doc); returns the final state and the cost.

    ``step_seconds`` is the steady-state step time (the stall's baseline); ``save_interval_steps``
    only enters the amortised overhead. ``check_stop(steps_done)`` is called before each training step.
    """
    if saves < 1:
        raise ValueError("at least one save is required")
    if jax.process_count() > 1:
        raise ValueError("checkpoint cost is measured in a single process only")
    next_batch = BatchCycle(batches)
    blocking: list[float] = []
    stall: list[float] = []
    durable: list[float] = []
    done = 0
    with tempfile.TemporaryDirectory(prefix="tunix-ckpt-cost-") as scratch:
        directory = os.path.join(scratch, "checkpoints")
        checkpointer = Checkpointer(directory, save_interval_steps=save_interval_steps, max_to_keep=1)
        try:
            for number in range(1, saves + 1):
                jax.block_until_ready(state)
                start = clock()
                checkpointer.save(number, state, {**(meta or {}), "step": number})
                blocking.append(clock() - start)
                for _ in range(steps_during_save):
                    check_stop(done)
                    state, _ = step(state, next_batch())
                    done += 1
                jax.block_until_ready(state)
                stall.append(clock() - start - steps_during_save * step_seconds)
                checkpointer.wait()
                durable.append(clock() - start)
            size = directory_bytes(os.path.join(directory, str(saves)))
        finally:
            checkpointer.close()
    cost = CheckpointCost.from_samples(
        blocking,
        stall,
        durable,
        checkpoint_bytes=size,
        save_interval_steps=save_interval_steps,
        step_seconds=step_seconds,
        steps_during_save=steps_during_save,
    )
    return state, cost
