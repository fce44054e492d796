"""kopf handlers: thin I/O glue around :class:`~tunix_operator.reconciler.Reconciler`.

One daemon per TunixRun owns its reconcile loop, so a run is never reconciled twice
at once; Job/Pod events and spec changes only wake that daemon. Requeue delays
(backoff, deadline, TTL, progress polling) are the daemon's sleep. The daemon reconciles
from memory: kopf keeps its ``body`` current, and two indices hold every Job and pod of
ours by (namespace, run), filled by watches that the API server filters by label.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kopf
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from tunix_api.run import GROUP, PLURAL, TERMINAL_PHASES, VERSION
from tunix_operator.cache import Children, slim_job, slim_pod
from tunix_operator.manifests import LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler
from tunix_operator.settings import OperatorSettings

logger = logging.getLogger("tunix_operator")

T = TypeVar("T")
LoginFn = Callable[..., Any]
TRANSIENT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, TimeoutError)
ERROR_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CHILD_EVENT_IDS = ("job-event", "pod-event", "run-event")
RUN_EVENT_ID = CHILD_EVENT_IDS[2]
JOB_INDEX, POD_INDEX = "run_jobs", "run_pods"  # kopf passes each index by its handler id
JOBS, PODS = ("batch", "v1", "jobs"), ("v1", "pods")
# The API server sends only our children to the Job and pod watches.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
# kopf logs the retries of its own API calls and handlers at ERROR; they are expected and retried.
RETRY_MESSAGES = re.compile(
    r"Request attempt \S+ failed; (will retry|TCP closed|SSL closed)|failed temporarily|will try again"
)


class SpecDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base without its deep copy of every watched object at every event.

    kopf builds a diff base (a deep copy of the whole body, managedFields and status included) for
    every event of every resource it watches, for change handlers (``on.update``/``on.field``) and
    daemons' idle timeouts. This operator has neither: its daemon reads the live body. A shallow copy
    of the spec says all kopf still asks of it (whether anything essential changed).
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {"spec": dict(body.get("spec") or {})}


class RunProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations; :meth:`clear` skips its deep copy when there is nothing to clear
    (a :class:`SpecDiffBase` essence has no metadata)."""

    def clear(self, *, essence: Any) -> Any:
        return essence if "metadata" not in essence else super().clear(essence=essence)


class QuietChildEvents(logging.Filter):
    """Drop kopf's "Handler 'pod-event' succeeded." lines: one per pod or run change is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message == f"Handler {hid!r} succeeded." for hid in CHILD_EVENT_IDS)


class RetriesAsWarnings(logging.Filter):
    """Log kopf's retried failures (an API request or a handler tried again) at WARNING, not ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and RETRY_MESSAGES.search(record.getMessage()):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class Stopping(Exception):
    """The operator is stopping: no more reconciles."""


class Workers:
    """At most ``size`` reconciles at once, in a thread pool of that size; the others wait in a queue
    whose depth the ``tunix_reconcile_queue_depth`` gauge shows."""

    def __init__(self, size: int, metrics: OperatorMetrics) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="reconcile")
        self._slots = asyncio.Semaphore(size)
        self._metrics = metrics
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker; :class:`Stopping` once :meth:`shutdown` was called."""
        self._metrics.queue_depth.inc()
        try:
            await self._slots.acquire()
        finally:
            self._metrics.queue_depth.dec()
        try:
            if self._closed:
                raise Stopping
            self._metrics.in_flight.inc()
            try:
                return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
            finally:
                self._metrics.in_flight.dec()
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        """Let the threads go once their work is done (the operator is stopping)."""
        self._closed = True
        self._executor.shutdown(wait=False)


ChildrenFn = Callable[[], Children]


class RunDaemons:
    """Per-run reconcile loops and their wake-up events."""

    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics, settings: OperatorSettings) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.settings = settings
        self.workers = Workers(settings.max_concurrent_reconciles, metrics)
        self._wakers: dict[tuple[str, str], asyncio.Event] = {}
        self._specs: dict[tuple[str, str], tuple[Any, Any]] = {}  # (generation, spec.suspend) last seen
        self._deleted: set[str] = set()  # uids of runs deleted while their daemon runs

    def spec_seen(self, namespace: str, name: str, body: Mapping[str, Any], gone: bool = False) -> None:
        """Wake the run's daemon when its spec changed (a new generation) since the last event."""
        key = (namespace, name)
        if gone or (body.get("metadata") or {}).get("deletionTimestamp"):
            self._specs.pop(key, None)
            if gone and key in self._wakers:  # no finalizer holds the run: its daemon ends by itself
                self._deleted.add((body.get("metadata") or {}).get("uid") or "")
                self.poke(namespace, name)
            return
        spec = body.get("spec") or {}
        seen = ((body.get("metadata") or {}).get("generation"), spec.get("suspend"))
        previous = self._specs.get(key)
        self._specs[key] = seen
        if previous is None or previous == seen:
            return
        if previous[1] != seen[1]:
            logger.info("%s/%s: spec.suspend %s -> %s", namespace, name, previous[1], seen[1])
        self.poke(namespace, name)

    def poke(self, namespace: str | None, name: str | None) -> None:
        """Ask the run's daemon to reconcile now (no-op for unknown runs)."""
        waker = self._wakers.get((namespace or "", name or ""))
        if waker is not None:
            waker.set()

    async def run(
        self, namespace: str, name: str, body: Mapping[str, Any], children: ChildrenFn, stopped: Any
    ) -> None:
        """Reconcile ``body`` (kopf keeps it current) until the run goes: at once when poked, else at
        the decision's requeue time or the resync interval; a finished run with nothing pending
        (no TTL) waits for a poke only."""
        key = (namespace, name)
        uid = (body.get("metadata") or {}).get("uid") or ""
        waker = self._wakers.setdefault(key, asyncio.Event())
        watcher = asyncio.ensure_future(_set_when_stopped(stopped, waker))
        failures = 0
        try:
            while not stopped and uid not in self._deleted:
                waker.clear()
                delay, failed = await self._reconcile(body, children)
                failures = failures + 1 if failed else 0
                if failed:
                    delay = ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS)) - 1]
                if delay is None:  # the run is gone
                    break
                await _sleep(waker, delay)
        finally:
            watcher.cancel()
            self._deleted.discard(uid)
            self._wakers.pop(key, None)
            self.metrics.forget(namespace, name)
            self.reconciler.forget(namespace, name)

    async def _reconcile(self, body: Mapping[str, Any], children: ChildrenFn) -> tuple[float | None, bool]:
        """(seconds until the next reconcile (inf: only when poked) or None when the run is gone,
        whether it raised)."""
        snapshot = dict(body)  # kopf replaces the live body's content as events arrive
        namespace, name = _names(snapshot)
        try:
            with self.metrics.timed():
                result = await self.workers.run(self.reconciler.reconcile, snapshot, children())
        except Stopping:
            return None, False
        except TRANSIENT_ERRORS as exc:
            self.metrics.errors.inc()
            logger.warning("reconcile of %s/%s failed, will retry: %s", namespace, name, _short(exc))
            return self.settings.resync_interval_seconds, True
        except Exception as exc:  # a bug or a pathological object: fail this run, keep the others going
            self.metrics.errors.inc()
            logger.exception("reconcile of %s/%s raised", namespace, name)
            return await self._fail(snapshot, exc), True
        if result is None:
            return None, False
        decision = result.decision
        phase = decision.status.get("phase")
        self.metrics.observe_phase(namespace, name, phase)
        for event in decision.events:
            kopf.event(dict(result.body), type=event.type, reason=event.reason, message=event.message)
            logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
        if decision.requeue_after is None and phase in TERMINAL_PHASES:
            return math.inf, False  # finished: nothing to do until a child or the spec changes
        delay = self.settings.resync_interval_seconds
        if decision.requeue_after is not None:
            delay = min(delay, decision.requeue_after)
        return delay, False

    async def _fail(self, body: Mapping[str, Any], exc: Exception) -> float:
        namespace, name = _names(body)
        message = f"the operator could not reconcile this run: {_short(exc)}"
        try:
            decision = await self.workers.run(self.reconciler.fail, body, "OperatorError", message)
            self.metrics.observe_phase(namespace, name, decision.status.get("phase"))
            for event in decision.events:
                kopf.event(dict(body), type=event.type, reason=event.reason, message=event.message)
        except Exception:
            logger.exception("could not mark %s/%s Failed", namespace, name)
        return self.settings.resync_interval_seconds


def _names(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


async def _set_when_stopped(stopped: Any, waker: asyncio.Event) -> None:
    """Wake the daemon when kopf stops it (one task per daemon, not one per sleep)."""
    await stopped.wait()
    waker.set()


async def _sleep(waker: asyncio.Event, timeout: float) -> None:
    """Until ``waker`` is set or ``timeout`` seconds passed (inf: no timeout)."""
    if math.isinf(timeout):
        await waker.wait()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await waker.wait()


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"API {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Keep kopf's bookkeeping in annotations: .status belongs to the TunixRun contract.
    settings.persistence.progress_storage = RunProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = SpecDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # our events are posted explicitly
    settings.peering.standalone = ours.standalone
    settings.peering.name = ours.peering_name
    settings.peering.mandatory = not ours.standalone
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.label_selectors[JOBS] = CHILD_SELECTOR
    settings.watching.label_selectors[PODS] = CHILD_SELECTOR
    # Watching named namespaces, the operator holds Roles there only (the chart's namespaced mode): it
    # may not list Namespaces or CRDs cluster-wide, and need not. Without this kopf retries the
    # forbidden listing nine times before falling back, stalling the start (seen on a real API server).
    settings.scanning.disabled = bool(ours.watch_namespaces) and not any(
        set(pattern) & set("*?[]!,") for pattern in ours.watch_namespaces
    )


def _without_finalizer(registry: kopf.OperatorRegistry, daemon_id: str) -> None:
    """No kopf finalizer on the runs for this daemon (one patch less per run created, one per run
    deleted). kopf blocks deletion with a finalizer until a daemon has stopped; this daemon needs no
    such wait: it ends when it sees the run's DELETED event (:meth:`RunDaemons.spec_seen`), and the
    garbage collector deletes the children by their owner references. A finalizer that an earlier
    version added is removed by kopf at the run's next event. kopf offers no option for this, so the
    registered handler is replaced by a copy (kopf is pinned; tests check that no finalizer is added).
    """
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) if h.id == daemon_id else h
        for h in spawning._handlers
    ]


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
    reconciler.reads.observer = lambda result: metrics.storage_reads.labels(result=result).inc()
    runs = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_kopf(settings, reconciler.settings)

    @kopf.on.cleanup(registry=registry, id="stop-workers")
    async def stop_workers(**_: Any) -> None:
        daemons.workers.shutdown()

    if login is not None:
        kopf.on.login(registry=registry, id="login")(login)
    else:

        @kopf.on.login(registry=registry, id="login")
        def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_via_client(**kwargs)

    # kopf fills the indices from its initial listing before any daemon starts, and keeps them current.
    @kopf.index(*JOBS, registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=JOB_INDEX)
    async def run_jobs(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[LABEL_RUN]): slim_job(body)}

    @kopf.index(*PODS, registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=POD_INDEX)
    async def run_pods(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[LABEL_RUN]): slim_pod(body)}

    @kopf.daemon(*runs, registry=registry, id="reconcile", cancellation_timeout=30.0)
    async def reconcile_loop(
        name: str,
        namespace: str,
        body: Any,
        stopped: Any,
        run_jobs: kopf.Index,
        run_pods: kopf.Index,
        **_: Any,
    ) -> None:
        key = (namespace, name)

        def children() -> Children:
            return Children(jobs=tuple(run_jobs.get(key, ())), pods=tuple(run_pods.get(key, ())))

        await daemons.run(namespace, name, body, children, stopped)

    _without_finalizer(registry, "reconcile")

    # A spec change wakes the daemon. An event handler, not on.update/on.field: those need kopf's
    # "last-handled-configuration" annotation, one more patch of every run.
    @kopf.on.event(*runs, registry=registry, id=RUN_EVENT_ID)
    async def run_event(name: str, namespace: str, body: Any, type: str | None, **_: Any) -> None:
        daemons.spec_seen(namespace, name, body, gone=type == "DELETED")

    @kopf.on.event(*JOBS, registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=CHILD_EVENT_IDS[0])
    async def job_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
        daemons.poke(namespace, labels.get(LABEL_RUN))

    @kopf.on.event(*PODS, registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=CHILD_EVENT_IDS[1])
    async def pod_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
        daemons.poke(namespace, labels.get(LABEL_RUN))

    return registry
