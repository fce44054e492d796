"""A step's recorded time is the interval between two completions on the device, the last step's too,
and the device never idles between steps waiting for the host's next dispatch.

The loop runs the real tiny model, but its clocks and the device's timing are simulated: every step
takes STEP seconds of "device" time, a dispatch DISPATCH seconds of host time, other host work none.
Each thread has its own fake clock (the main thread dispatches and fetches; the loop's completion
watcher waits), as real threads each see the moment they were woken. Two dispatch behaviours:
asynchronous (the call returns after DISPATCH; waiting for the outputs moves the waiting thread's
clock to the step's end), and a launch that also blocks until only TAIL seconds of the step are
left (a GPU's full launch queue). Waiting for step k before dispatching step k+1 would leave the
device idle for DISPATCH every step; timing at the fetch after the next dispatch would credit each
step with the next one's time. All figures are multiples of 1/32, so the arithmetic is exact.
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
DISPATCH = 0.03125  # host seconds a dispatch takes


class SimulatedDevice:
    """Wraps the jitted step: the real result, finished on the fake clock STEP after it could start."""

    def __init__(self, step_fn: Any, *, launch_blocks: bool) -> None:
        self.step_fn = step_fn
        self.launch_blocks = launch_blocks
        self._clocks = threading.local()
        self.finished = 0.0  # when the last dispatched step finishes
        self.idle = 0.0  # device seconds between the first step's start and the last one's end unused

    def clock(self) -> float:
        return getattr(self._clocks, "now", 0.0)

    def wait_until(self, moment: float) -> None:
        self._clocks.now = max(self.clock(), moment)

    def __call__(self, state: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        state, metrics = self.step_fn(state, batch)
        jax.block_until_ready(metrics)
        self.wait_until(self.clock() + DISPATCH)
        start = max(self.clock(), self.finished)
        if self.finished:
            self.idle += start - self.finished
        self.finished = start + STEP
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
    # The device idles only after the steps whose metrics must be seen before a save (4 and 8).
    assert device.idle == 2 * DISPATCH
    after_gap = {1, 5, 9}  # the first dispatch, and the two after a save, start after DISPATCH
    assert [r["step_time_seconds"] for r in records] == [
        STEP + DISPATCH * (r["step"] in after_gap) for r in records
    ]
    assert summary["wall_time_seconds"] == 3 * DISPATCH + 10 * STEP
