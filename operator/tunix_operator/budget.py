"""The progress-read budget: how often a run's files are read when many runs are running.

Each running run's progress.json is read every ``progress_interval_seconds``, and a read that finds it
changed costs a status patch and the watch event that patch causes (several times the read itself).
So the operator's CPU, its API writes and its object-storage requests grow with the number of running
runs. With a budget of ``max_progress_reads_per_second`` the interval stretches once the runs that
read their files outnumber what the budget allows at the configured interval: with 15 reads/s and a
10 s interval, up to 150 runs are read every 10 s, 1,000 runs every 67 s. What is bounded is the rate
of reads of all runs together; ``status.progress`` lags the trainer by up to one (stretched)
interval. Time-based checks (stall and startup timeouts, deadlines, backoff) are not stretched: they
decide with a fresh read when they come due. A resync reads the files too, so while the interval is
stretched the resync interval is a whole number of read intervals: a resync takes the place of a read
instead of adding one. Thread-safe: reconciles run in a worker pool.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable


class ReadBudget:
    """The runs whose files are read, and the intervals that keep their reads within the budget."""

    def __init__(self, interval: float, resync: float, per_second: float) -> None:
        self.interval = interval
        self.resync = resync
        self.per_second = per_second
        self._readers: set[Hashable] = set()
        self._lock = threading.Lock()

    def reads(self, key: Hashable, reading: bool) -> None:
        """Note whether the run ``key`` reads its files now (its last decision wanted them)."""
        with self._lock:
            if reading:
                self._readers.add(key)
            else:
                self._readers.discard(key)

    def forget(self, key: Hashable) -> None:
        self.reads(key, False)

    def readers(self) -> int:
        """How many runs read their files."""
        return len(self._readers)

    def read_interval(self) -> float:
        """Seconds between two reads of one run's files: the configured interval, or longer when the
        runs that read together would exceed the budget at it."""
        return max(self.interval, len(self._readers) / self.per_second)

    def resync_interval(self) -> float:
        """The longest a decision stands: the resync interval, or while the read interval is stretched
        the first whole number of read intervals not shorter than it."""
        interval = self.read_interval()
        if interval <= self.interval:
            return self.resync
        return interval * math.ceil(self.resync / interval)
