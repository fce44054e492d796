"""The run's artifacts in object storage: metrics.jsonl, progress.json, summary.json.

The same code serves local paths, ``file://``, ``s3://``, ``gs://`` and ``memory://`` (through
fsspec). :class:`RunArtifacts` puts together the three documents, each in its own module:

- :mod:`tunix_trainer.metric_store`: the exactly-once metrics chunk store and ``metrics.jsonl``;
- :mod:`tunix_trainer.progress`: ``progress.json``, best-effort, never stopping training;
- :mod:`tunix_trainer.summary`: ``summary.json`` and the termination message;

over :mod:`tunix_trainer.artifact_io` (whole-object writes, retries on object stores).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tunix_api.artifacts import METRICS_FILE, SUMMARY_FILE
from tunix_trainer.artifact_io import json_safe, open_fs, read_json, write_atomic, write_json
from tunix_trainer.metric_store import MetricStore
from tunix_trainer.progress import ProgressWriter
from tunix_trainer.summary import compact_summary, summarize
from tunix_trainer.termination import write_termination_message

__all__ = ["RunArtifacts", "read_json", "summarize", "write_json"]


class RunArtifacts:
    """Writes one run's metrics, progress and summary under ``uri``.

    Not safe for concurrent writers: one trainer process (host 0) owns a run's artifacts.
    Methods may be called from several threads of that process.
    """

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict | None = None,
        flush_every_steps: int = 50,
        progress_interval_seconds: float = 5.0,
        termination_log: str | None = None,
        log_every_steps: int = 1,
        consolidate_every_flushes: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = open_fs(self.uri, storage_options)
        self.root = root.rstrip("/")
        self.termination_log = termination_log
        self.restored_from: int | None = None
        self.metrics = MetricStore(
            self.fs,
            self.root,
            flush_every_steps=flush_every_steps,
            log_every_steps=log_every_steps,
            consolidate_every_flushes=consolidate_every_flushes,
        )
        self._progress = ProgressWriter(
            self.fs, self.root, interval_seconds=progress_interval_seconds, clock=clock
        )

    @property
    def metrics_uri(self) -> str:
        """Where the consolidated metrics.jsonl lives."""
        return f"{self.uri}/{METRICS_FILE}"

    @property
    def missing_steps(self) -> tuple[int, int] | None:
        """Steps whose records were lost before this attempt's resume point (see metric_store)."""
        return self.metrics.missing_steps

    # ---- metrics

    def read_metrics(self) -> list[dict]:
        """Every durable record, one per step, in step order."""
        return self.metrics.read_metrics()

    def start(self, resume_step: int, restored_from: int | None = None) -> None:
        """Begin an attempt resuming after ``resume_step`` (0: from scratch); ``restored_from``
        (the checkpoint step restored, if any) goes into progress.json."""
        self.metrics.start(resume_step)
        self.restored_from = restored_from
        self._progress.reset()

    def log_step(self, record: dict) -> None:
        """Buffer the record of one step; flushes every ``flush_every_steps`` steps."""
        self.metrics.log_step(record)

    def flush(self) -> None:
        """Make buffered records durable (the loop calls it before every checkpoint save)."""
        self.metrics.flush()

    def close(self) -> None:
        """Flush and write the final, complete metrics.jsonl (a no-op when nothing changed)."""
        self.metrics.close()

    # ---- progress and summary

    def progress(
        self,
        *,
        step: int,
        total_steps: int,
        loss: float,
        tokens_per_second: float,
        eta_seconds: float | None,
        force: bool = False,
        mfu: float | None = None,
        checkpoint_step: int | None = None,
        eval_loss: float | None = None,
        eval_step: int | None = None,
    ) -> None:
        """Rewrite progress.json, at most once per ``progress_interval_seconds`` unless ``force`` (or a
        newly durable ``checkpoint_step``); best-effort: a storage failure is logged, never raised."""
        self._progress.report(
            step=step,
            total_steps=total_steps,
            loss=loss,
            tokens_per_second=tokens_per_second,
            eta_seconds=eta_seconds,
            restored_from=self.restored_from,
            mfu=mfu,
            checkpoint_step=checkpoint_step,
            eval_loss=eval_loss,
            eval_step=eval_step,
            force=force,
        )

    def write_summary(self, summary: dict) -> None:
        """Write summary.json, and the compact summary to the termination log if set."""
        doc = json_safe(summary)
        write_atomic(
            self.fs, f"{self.root}/{SUMMARY_FILE}", json.dumps(doc, indent=2, allow_nan=False).encode()
        )
        write_termination_message(self.termination_log, compact_summary(doc))
