"""A step's recorded time is the interval between two completions on the device, the last step's too.

The loop runs the real tiny model, but its clock and the device's timing are simulated: every step
takes STEP seconds of "device" time on a fake clock, host work takes none. Two dispatch behaviours:
asynchronous (the call returns at once; fetching the metrics waits), and a launch that blocks until
only TAIL seconds of the step are left (a GPU's full launch queue), the case in which timing at the
fetch after the next dispatch credited each step with the next one's time and the last with TAIL.
All figures are multiples of 1/16, so the arithmetic is exact.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import numpy as np
import pytest

from tunix_trainer.config import load_run
from tunix_trainer.loop import _Loop, setup_train_loop

from .conftest import read_jsonl

STEP = 0.25  # seconds of device time per step
TAIL = 0.0625  # what is left of a step when a blocking launch returns


class SimulatedDevice:
    """Wraps the jitted step: the real result, finished on the fake clock STEP after it could start."""

    def __init__(self, step_fn: Any, *, launch_blocks: bool) -> None:
        self.step_fn = step_fn
        self.launch_blocks = launch_blocks
        self.now = 0.0
        self.finished = 0.0  # when the last dispatched step finishes

    def clock(self) -> float:
        return self.now

    def wait_until(self, moment: float) -> None:
        self.now = max(self.now, moment)

    def __call__(self, state: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        state, metrics = self.step_fn(state, batch)
        jax.block_until_ready(metrics)
        self.finished = max(self.now, self.finished) + STEP
        if self.launch_blocks:
            self.wait_until(self.finished - TAIL)
        return state, {name: _Result(value, self, self.finished) for name, value in metrics.items()}


class _Result:
    """A metric that becomes ready at ``ready`` on the fake clock (waiting for it moves the clock)."""

    def __init__(self, value: Any, device: SimulatedDevice, ready: float) -> None:
        self.value, self.device, self.ready = value, device, ready

    def block_until_ready(self) -> _Result:
        self.device.wait_until(self.ready)
        return self

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.device.wait_until(self.ready)
        return np.asarray(self.value, dtype=dtype)


@pytest.mark.parametrize("launch_blocks", [False, True], ids=["async-launch", "blocking-launch"])
def test_every_step_is_timed_between_two_device_completions(write_config, tmp_path, launch_blocks) -> None:
    config = write_config(
        training={"steps": 10, "batchSize": 2, "seqLen": 16},
        checkpoint={"saveIntervalSteps": 4},  # steps 4 and 8 are fetched at once, before their save
        metrics={"logEverySteps": 1},
    )
    art = tmp_path / "art"
    setup = setup_train_loop(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ck"))
    device = SimulatedDevice(setup.loop.step_fn, launch_blocks=launch_blocks)
    loop = _Loop(
        run=setup.loop.run_config,
        data=setup.loop.data,
        step_fn=device,
        mesh=setup.loop.mesh,
        checkpointer=setup.checkpointer,
        artifacts=setup.loop.artifacts,
        on_progress=None,
        stop_event=threading.Event(),
        clock=device.clock,
    )
    try:
        summary = loop.run(setup.state, setup.provenance)
    finally:
        setup.loop.data.close()
        setup.checkpointer.close()
    records = [r for r in read_jsonl(art / "metrics.jsonl") if "step_time_seconds" in r]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert [r["step_time_seconds"] for r in records] == [STEP] * 10
    assert summary["wall_time_seconds"] == 10 * STEP
