"""When each dispatched step finished on the device, noted by a thread that does nothing else.

The loop dispatches step k+1 before it waits for step k, so the device always has the next step
queued (waiting for step k first left the device idle for the host's dispatch every step: 66.4
against 61.1 ms per `125m` step on an H200, docs/PERFORMANCE.md). A step's time is the interval
between two completions; the main thread cannot note step k's completion itself, because it may be
inside step k+1's launch (a launch can block until the device has nearly run it).
``CompletionWatch`` waits for the steps in dispatch order on its own thread and reads the clock the
moment each one is ready; the wait releases the GIL, and the main thread is then usually waiting on
that same completion, so the note is prompt.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import jax


class Completion:
    """One step's completion: the clock's value when it was ready on the device."""

    def __init__(self, outputs: Any) -> None:
        self.outputs = outputs
        self._ready = threading.Event()
        self._moment = 0.0
        self._error: BaseException | None = None

    def _settle(self, moment: float, error: BaseException | None) -> None:
        self._moment, self._error = moment, error
        self.outputs = None  # the main thread holds its own reference
        self._ready.set()

    def wait(self) -> float:
        """Block until the step finished; its moment, or the device's error raised here."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._moment


class CompletionWatch:
    """A daemon thread that waits for each watched step's outputs in order and notes the time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._queue: queue.SimpleQueue[Completion | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._watch_all, name="step-completions", daemon=True)
        self._thread.start()

    def watch(self, outputs: Any) -> Completion:
        """Start watching a just-dispatched step's outputs."""
        completion = Completion(outputs)
        self._queue.put(completion)
        return completion

    def close(self) -> None:
        """Stop the thread after the steps already watched (it never waits on anything else)."""
        self._queue.put(None)
        self._thread.join()

    def _watch_all(self) -> None:
        while (completion := self._queue.get()) is not None:
            try:
                jax.block_until_ready(completion.outputs)
            except BaseException as error:  # a device error belongs to the main thread
                completion._settle(self._clock(), error)
            else:
                completion._settle(self._clock(), None)
