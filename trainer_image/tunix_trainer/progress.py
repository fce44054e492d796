"""progress.json: the small document the operator polls while a run trains.

Besides the step, loss and throughput it carries the attempt that wrote it, the live MFU and the
newest checkpoint step known durable with the time it became so: the operator's live
``status.checkpoint`` (and its pod annotation), and its attempt history and goodput.

It is replaced whole at most once per ``progress_interval_seconds`` (unless forced). Writes are
best-effort: one try (bounded by the storage timeouts), a failure is logged and training goes on;
after a failure no write is tried for ``quiet_seconds``, so an outage costs at most one timed-out
try per quiet period. The next successful write brings it up to date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import fsspec

from tunix_api.artifacts import PROGRESS_FILE
from tunix_api.run import Progress
from tunix_trainer.artifact_io import bounded, is_local, json_safe, write_atomic
from tunix_trainer.benchmark.hardware import peak_flops
from tunix_trainer.benchmark.mfu import mfu

log = logging.getLogger(__name__)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def attempt_from_env() -> int | None:
    """The attempt the operator started this pod for (``TUNIX_ATTEMPT``); None outside the operator."""
    value = os.environ.get("TUNIX_ATTEMPT", "")
    return int(value) if value.isdigit() else None


def progress_document(
    *,
    step: int,
    total_steps: int,
    loss: float,
    tokens_per_second: float,
    eta_seconds: float | None,
    restored_from: int | None = None,
    updated_at: dt.datetime | None = None,
    attempt: int | None = None,
    mfu: float | None = None,
    checkpoint_step: int | None = None,
    checkpoint_time: dt.datetime | None = None,
    eval_loss: float | None = None,
    eval_step: int | None = None,
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
        updated_at=rfc3339(when),
        attempt=attempt,
        mfu=json_safe(float(mfu)) if mfu is not None else None,
        checkpoint_step=checkpoint_step,
        checkpoint_time=rfc3339(checkpoint_time) if checkpoint_time is not None else None,
        eval_loss=json_safe(float(eval_loss)) if eval_loss is not None else None,
        eval_step=eval_step,
    )
    return progress.to_wire()


MfuMeter = Callable[[int, float], "float | None"]


def mfu_meter(flops_per_token: float, device_kind: str, platform: str, dtype: str, devices: int) -> MfuMeter:
    """``meter(tokens, step_seconds)``: the MFU of one training step, with the benchmark's formula and
    peak table (``tunix_trainer.benchmark.mfu``, ``.hardware``); None where the peak is unknown (CPU)."""
    peak = peak_flops(device_kind, dtype, platform).flops

    def meter(tokens: int, step_seconds: float) -> float | None:
        if peak is None or tokens <= 0 or step_seconds <= 0:
            return None
        return mfu(flops_per_token, tokens, step_seconds, peak, devices)

    return meter


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
        self.attempt = attempt_from_env()
        self._checkpoint: tuple[int | None, dt.datetime | None] = (None, None)

    def reset(self) -> None:
        """Forget the rate limit (a new attempt writes its first progress at once)."""
        with self._lock:
            self._last_write = None

    def report(self, *, checkpoint_step: int | None = None, force: bool = False, **fields: Any) -> bool:
        """Write a progress_document of ``fields`` with this attempt and the newest durable checkpoint
        (and when it was first reported durable); a newly durable checkpoint is written at once."""
        if checkpoint_step is not None and checkpoint_step != self._checkpoint[0]:
            # A step restored is durable since before this attempt: its save time is unknown here.
            first = self._checkpoint[0] is None and checkpoint_step == fields.get("restored_from")
            self._checkpoint = (checkpoint_step, None if first else dt.datetime.now(dt.UTC))
            force = True
        step, when = self._checkpoint
        document = progress_document(
            attempt=self.attempt, checkpoint_step=step, checkpoint_time=when, **fields
        )
        return self.write(document, force=force)

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
