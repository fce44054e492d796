"""Polls of quiet runs' files, off kopf's event loop: a schedule, one thread and a pool of readers.

A run whose last decision changed nothing (:mod:`tunix_operator.quiet`) needs its files re-read
every progress interval, and nothing else until its next time-based check. Waking its daemon for
each read costs the event loop a wake-up and a hop to a worker and back (about as much CPU as the
read itself, measured); here a read is a function call in a reader thread. ``check(key)`` reads
and says whether anything is new; if so (or if it raised) ``changed(key)`` is called (the daemon
is poked) and the run leaves the schedule until it is scheduled again, else it is read again one
interval later, unless that comes at or after the daemon's own next decision (which reads the files
itself: a read there would be the same read twice). The daemon still sleeps until the decision's
time-based check and is woken at once by the watch events of the run and its children.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K")


class Poller(Generic[K]):
    """Calls ``check(key)`` every ``interval`` given at :meth:`schedule`, in ``workers`` threads."""

    def __init__(
        self,
        check: Callable[[K], bool],
        changed: Callable[[K], None],
        workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._changed = changed
        self._clock = clock
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="poll")
        self._heap: list[tuple[float, int, K]] = []
        # key -> (ticket, interval, no check from then on): the live entry
        self._entries: dict[K, tuple[int, float, float]] = {}
        self._tickets = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None  # started at the first schedule

    def schedule(self, key: K, interval: float, until: float = math.inf) -> None:
        """Check ``key`` in ``interval`` seconds, and every ``interval`` after while nothing is new,
        as long as a check comes before ``until`` seconds from now."""
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
                self._thread.start()
            self._push(key, interval, self._clock() + until)
            self._cond.notify()

    def cancel(self, key: K) -> None:
        """No more checks of ``key`` (until scheduled again)."""
        with self._cond:
            self._entries.pop(key, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __len__(self) -> int:
        return len(self._entries)

    def _push(self, key: K, interval: float, until: float) -> None:
        due = self._clock() + interval
        if due >= until:  # the caller decides by then itself
            self._entries.pop(key, None)
            return
        ticket = next(self._tickets)
        self._entries[key] = (ticket, interval, until)
        heapq.heappush(self._heap, (due, ticket, key))

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._take_due()
                while not due and not self._stopped:
                    timeout = self._heap[0][0] - self._clock() if self._heap else None
                    self._cond.wait(timeout)
                    due = self._take_due()
                if self._stopped:
                    return
            for key, ticket in due:
                try:
                    self._pool.submit(self._poll, key, ticket)
                except RuntimeError:  # the pool is shut down: stopping
                    return

    def _take_due(self) -> list[tuple[K, int]]:
        """The live entries due now, taken off the heap (cancelled and replaced ones are dropped)."""
        now, due = self._clock(), []
        while self._heap and self._heap[0][0] <= now:
            _, ticket, key = heapq.heappop(self._heap)
            if self._entries.get(key, (None,))[0] == ticket:
                due.append((key, ticket))
        return due

    def _poll(self, key: K, ticket: int) -> None:
        try:
            new = self._check(key)
        except Exception:
            logger.exception("poll of %s raised", key)
            new = True
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry[0] != ticket:
                return  # cancelled or scheduled again meanwhile
            if not new:
                self._push(key, entry[1], entry[2])
                self._cond.notify()
                return
            del self._entries[key]
        self._changed(key)
