"""progress.json: the small document the operator polls while a run trains.

It is replaced whole at most once per ``progress_interval_seconds`` (unless forced). Writes are
best-effort: one try (bounded by the storage timeouts), a failure is logged and training goes on;
after a failure no write is tried for ``quiet_seconds``, so an outage costs at most one timed-out
try per quiet period. The next successful write brings it up to date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable

import fsspec

from tunix_api.artifacts import PROGRESS_FILE
from tunix_api.run import Progress
from tunix_trainer.artifact_io import bounded, is_local, json_safe, write_atomic

log = logging.getLogger(__name__)


def progress_document(
    *,
    step: int,
    total_steps: int,
    loss: float,
    tokens_per_second: float,
    eta_seconds: float | None,
    restored_from: int | None = None,
    updated_at: dt.datetime | None = None,
) -> dict:
    """progress.json: camelCase, as ``tunix_api.run.Progress``; unknown values omitted."""
    when = updated_at or dt.datetime.now(dt.UTC)
    progress = Progress(
        step=step,
        total_steps=total_steps,
        loss=json_safe(float(loss)) if loss is not None else None,
        tokens_per_second=json_safe(float(tokens_per_second)) if tokens_per_second is not None else None,
        eta_seconds=json_safe(float(eta_seconds)) if eta_seconds is not None else None,
        restored_from=restored_from,
        updated_at=when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return progress.to_wire()


class ProgressWriter:
    """Rewrites ``<root>/progress.json``; never raises on a storage failure."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        *,
        interval_seconds: float = 5.0,
        quiet_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[fsspec.AbstractFileSystem, str, bytes], None] | None = None,
    ) -> None:
        self.fs, self.path = fs, f"{root.rstrip('/')}/{PROGRESS_FILE}"
        self.interval_seconds = interval_seconds
        self.quiet_seconds = quiet_seconds
        self.failures = 0
        self._clock = clock
        self._write = write or _write_once
        self._lock = threading.Lock()
        self._last_write: float | None = None
        self._quiet_until: float | None = None

    def reset(self) -> None:
        """Forget the rate limit (a new attempt writes its first progress at once)."""
        with self._lock:
            self._last_write = None

    def write(self, document: dict, *, force: bool = False) -> bool:
        """Replace progress.json with ``document`` if due; False when skipped or failed."""
        with self._lock:
            now = self._clock()
            if self._quiet_until is not None and now < self._quiet_until:
                return False
            recent = self._last_write is not None and now - self._last_write < self.interval_seconds
            if recent and not force:
                return False
            try:
                self._write(self.fs, self.path, json.dumps(document).encode())
            except Exception as exc:
                self.failures += 1
                self._quiet_until = now + self.quiet_seconds
                log.warning(
                    "progress not written to %s (%s: %s); training goes on, next try in %.0f s",
                    self.path,
                    type(exc).__name__,
                    exc,
                    self.quiet_seconds,
                )
                return False
            self._quiet_until = None
            self._last_write = now
            return True


def _write_once(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """One PUT (or an atomic local replace): progress is not worth retrying."""
    if is_local(fs):
        write_atomic(fs, path, data)
    else:
        fs.pipe_file(path, data, **bounded(fs, len(data)))
