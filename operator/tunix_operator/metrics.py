"""Prometheus metrics of the operator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tunix_api.run import Phase


class OperatorMetrics:
    """tunix_runs{phase}, tunix_reconcile_errors_total, tunix_reconcile_duration_seconds,
    tunix_reconcile_queue_depth, tunix_reconciles_in_flight, tunix_reconciles_unchanged_total,
    tunix_storage_reads_total{result}, tunix_progress_readers, tunix_progress_read_interval_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs = Gauge(
            "tunix_runs", "TunixRuns by phase, as last reconciled.", ["phase"], registry=self.registry
        )
        self.errors = Counter("tunix_reconcile_errors", "Reconciles that raised.", registry=self.registry)
        self.duration = Histogram(
            "tunix_reconcile_duration_seconds", "Time of one reconcile.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "tunix_reconcile_queue_depth",
            "Reconciles due but waiting for a worker (TUNIX_MAX_CONCURRENT_RECONCILES).",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tunix_reconciles_in_flight", "Reconciles running in a worker now.", registry=self.registry
        )
        self.unchanged = Counter(
            "tunix_reconciles_unchanged",
            "Polls (in the poller's threads) and reconciles that found the run, its children and its "
            "files as a quiet decision left them, so nothing was decided again.",
            registry=self.registry,
        )
        self.storage_reads = Counter(
            "tunix_storage_reads",
            "Object-storage reads of progress/summary/benchmark files, by result "
            "(read, unchanged: skipped by ETag/mtime, missing, error).",
            ["result"],
            registry=self.registry,
        )
        self.progress_readers = Gauge(
            "tunix_progress_readers",
            "Runs whose files (progress.json, the result) are re-read, as their last reconcile decided.",
            registry=self.registry,
        )
        self.progress_read_interval = Gauge(
            "tunix_progress_read_interval_seconds",
            "Seconds between two reads of one run's files: TUNIX_PROGRESS_INTERVAL_SECONDS, stretched "
            "when the runs read together would exceed TUNIX_MAX_PROGRESS_READS_PER_SECOND.",
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        for phase in Phase:
            self.runs.labels(phase=phase.value).set(0)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        with self.duration.time():
            yield

    def observe_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Count the run in ``phase`` (None: in none); O(1), as it runs at every reconcile."""
        key = (namespace, name)
        old = self._phases.get(key)
        if old == phase:
            return
        if old is not None:
            self.runs.labels(phase=old).dec()
        if phase:
            self._phases[key] = phase
            self.runs.labels(phase=phase).inc()
        else:
            self._phases.pop(key, None)

    def forget(self, namespace: str, name: str) -> None:
        self.observe_phase(namespace, name, None)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
