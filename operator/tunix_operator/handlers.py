"""kopf handlers: thin I/O glue around :class:`~tunix_operator.reconciler.Reconciler`.

One daemon per TunixRun owns its reconcile loop, so a run is never reconciled twice
at once; Job/Pod events and spec changes only wake that daemon. Requeue delays
(backoff, deadline, TTL, progress polling) are the daemon's sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import kopf
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from tunix_api.run import GROUP, PLURAL, VERSION
from tunix_operator.manifests import LABEL_RUN
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler
from tunix_operator.settings import OperatorSettings

logger = logging.getLogger("tunix_operator")

LoginFn = Callable[..., Any]
TRANSIENT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, TimeoutError)
ERROR_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CHILD_EVENT_IDS = ("job-event", "pod-event")


class QuietChildEvents(logging.Filter):
    """Drop kopf's "Handler 'pod-event' succeeded." lines: one per pod change is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message == f"Handler {hid!r} succeeded." for hid in CHILD_EVENT_IDS)


class RunDaemons:
    """Per-run reconcile loops and their wake-up events."""

    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics, settings: OperatorSettings) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.settings = settings
        self._wakers: dict[tuple[str, str], asyncio.Event] = {}

    def poke(self, namespace: str | None, name: str | None) -> None:
        """Ask the run's daemon to reconcile now (no-op for unknown runs)."""
        waker = self._wakers.get((namespace or "", name or ""))
        if waker is not None:
            waker.set()

    async def run(self, namespace: str, name: str, stopped: Any) -> None:
        key = (namespace, name)
        waker = self._wakers.setdefault(key, asyncio.Event())
        failures = 0
        try:
            while not stopped:
                waker.clear()
                delay, failed = await self._reconcile(namespace, name)
                failures = failures + 1 if failed else 0
                if failed:
                    delay = ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS)) - 1]
                if delay is None:  # the run is gone
                    break
                await _wait_any(waker, stopped, delay)
        finally:
            self._wakers.pop(key, None)
            self.metrics.forget(namespace, name)

    async def _reconcile(self, namespace: str, name: str) -> tuple[float | None, bool]:
        """(seconds until the next reconcile or None when the run is gone, whether it raised)."""
        try:
            with self.metrics.timed():
                result = await asyncio.to_thread(self.reconciler.reconcile, namespace, name)
        except TRANSIENT_ERRORS as exc:
            self.metrics.errors.inc()
            logger.warning("reconcile of %s/%s failed, will retry: %s", namespace, name, _short(exc))
            return self.settings.resync_interval_seconds, True
        except Exception as exc:  # a bug or a pathological object: fail this run, keep the others going
            self.metrics.errors.inc()
            logger.exception("reconcile of %s/%s raised", namespace, name)
            return await self._fail(namespace, name, exc), True
        if result is None:
            return None, False
        decision = result.decision
        self.metrics.observe_phase(namespace, name, decision.status.get("phase"))
        for event in decision.events:
            kopf.event(result.body, type=event.type, reason=event.reason, message=event.message)
            logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
        delay = self.settings.resync_interval_seconds
        if decision.requeue_after is not None:
            delay = min(delay, decision.requeue_after)
        return delay, False

    async def _fail(self, namespace: str, name: str, exc: Exception) -> float:
        message = f"the operator could not reconcile this run: {_short(exc)}"
        try:
            body = await asyncio.to_thread(self.reconciler.kube.get_run, namespace, name)
            if body is not None:
                decision = await asyncio.to_thread(self.reconciler.fail, body, "OperatorError", message)
                self.metrics.observe_phase(namespace, name, decision.status.get("phase"))
                for event in decision.events:
                    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        except Exception:
            logger.exception("could not mark %s/%s Failed", namespace, name)
        return self.settings.resync_interval_seconds


async def _wait_any(waker: asyncio.Event, stopped: Any, timeout: float) -> None:
    tasks = {asyncio.ensure_future(waker.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(tasks, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"API {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Keep kopf's bookkeeping in annotations: .status belongs to the TunixRun contract.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # our events are posted explicitly
    settings.peering.standalone = ours.standalone
    settings.peering.name = ours.peering_name
    settings.peering.mandatory = not ours.standalone
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Watching named namespaces, the operator holds Roles there only (the chart's namespaced mode): it
    # may not list Namespaces or CRDs cluster-wide, and need not. Without this kopf retries the
    # forbidden listing nine times before falling back, stalling the start (seen on a real API server).
    settings.scanning.disabled = bool(ours.watch_namespaces) and not any(
        set(pattern) & set("*?[]!,") for pattern in ours.watch_namespaces
    )


def build_registry(
    reconciler: Reconciler,
    settings: OperatorSettings,
    metrics: OperatorMetrics,
    login: LoginFn | None = None,
) -> kopf.OperatorRegistry:
    """A fresh kopf registry with every handler of the operator.

    ``login`` (kopf's ``on.login`` signature) overrides the default credentials lookup
    (kubeconfig or in-cluster, via the kubernetes client).
    """
    registry = kopf.OperatorRegistry()
    daemons = RunDaemons(reconciler, metrics, settings)
    runs = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_kopf(settings, reconciler.settings)

    if login is not None:
        kopf.on.login(registry=registry, id="login")(login)
    else:

        @kopf.on.login(registry=registry, id="login")
        def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_via_client(**kwargs)

    @kopf.daemon(*runs, registry=registry, id="reconcile", cancellation_timeout=30.0)
    async def reconcile_loop(name: str, namespace: str, stopped: Any, **_: Any) -> None:
        await daemons.run(namespace, name, stopped)

    @kopf.on.update(*runs, registry=registry, field="spec", id="spec-changed")
    async def spec_changed(name: str, namespace: str, **_: Any) -> None:
        daemons.poke(namespace, name)

    @kopf.on.field(*runs, registry=registry, field="spec.suspend", id="suspend-changed")
    async def suspend_changed(name: str, namespace: str, old: Any, new: Any, **_: Any) -> None:
        logger.info("%s/%s: spec.suspend %s -> %s", namespace, name, old, new)
        daemons.poke(namespace, name)

    @kopf.on.event(
        "batch", "v1", "jobs", registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=CHILD_EVENT_IDS[0]
    )
    async def job_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
        daemons.poke(namespace, labels.get(LABEL_RUN))

    @kopf.on.event("v1", "pods", registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=CHILD_EVENT_IDS[1])
    async def pod_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
        daemons.poke(namespace, labels.get(LABEL_RUN))

    return registry
