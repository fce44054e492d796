"""Prometheus metrics of the operator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tunix_api.run import Phase


class OperatorMetrics:
    """tunix_runs{phase}, tunix_reconcile_errors_total, tunix_reconcile_duration_seconds,
    tunix_reconcile_queue_depth, tunix_reconciles_in_flight, tunix_storage_reads_total{result}."""

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
        self.storage_reads = Counter(
            "tunix_storage_reads",
            "Object-storage reads of progress/summary/benchmark files, by result "
            "(read, unchanged: skipped by ETag/mtime, missing, error).",
            ["result"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._publish()

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        with self.duration.time():
            yield

    def observe_phase(self, namespace: str, name: str, phase: str | None) -> None:
        if phase:
            self._phases[(namespace, name)] = phase
        else:
            self._phases.pop((namespace, name), None)
        self._publish()

    def forget(self, namespace: str, name: str) -> None:
        self.observe_phase(namespace, name, None)

    def _publish(self) -> None:
        counts = {phase.value: 0 for phase in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.runs.labels(phase=phase).set(count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
