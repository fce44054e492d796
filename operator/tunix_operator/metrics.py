"""Prometheus metrics of the operator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tunix_api.run import Phase


class OperatorMetrics:
    """tunix_runs{phase}, tunix_reconcile_errors_total, tunix_reconcile_duration_seconds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs = Gauge(
            "tunix_runs", "TunixRuns by phase, as last reconciled.", ["phase"], registry=self.registry
        )
        self.errors = Counter("tunix_reconcile_errors", "Reconciles that raised.", registry=self.registry)
        self.duration = Histogram(
            "tunix_reconcile_duration_seconds", "Time of one reconcile.", registry=self.registry
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
