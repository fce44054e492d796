"""kopf handlers: thin I/O glue around :class:`~tunix_operator.reconciler.Reconciler`.

One daemon per TunixRun owns its reconcile loop, so a run is never reconciled twice
at once; Job/Pod events and spec changes only wake that daemon. Requeue delays
(backoff, deadline, TTL, progress polling) are the daemon's sleep; a run whose last decision
changed nothing sleeps until its next time-based check while the poller re-reads its files.
The daemon reconciles from memory: kopf keeps its ``body`` current, and two indices hold every
Job and pod of ours by (namespace, run), filled by watches that the API server filters by label.
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
from tunix_operator.poller import Poller
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
        # Quiet runs' files are re-read off the event loop; a change pokes the daemon.
        self.poller: Poller[tuple[str, str]] = Poller(
            self._unchanged_or_poke, self._poke_threadsafe, settings.max_concurrent_reconciles
        )
        self._loop: asyncio.AbstractEventLoop | None = None
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

    def child_seen(self, namespace: str, run: str | None, event: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of one of the run's Jobs or pods: wake its daemon, unless the event is the
        ADDED of a Job exactly as this operator created it. The reconcile that created the Job
        decided as if it existed (its status already says "0/N pods running"), so deciding again
        would find nothing new (a paired burst: 5% of the operator's CPU; PERFORMANCE.md)."""
        if event == "ADDED" and self.reconciler.expectations.shows_as_created((namespace, run or ""), body):
            return
        self.poke(namespace, run)

    def poke(self, namespace: str | None, name: str | None) -> None:
        """Ask the run's daemon to reconcile now (no-op for unknown runs)."""
        waker = self._wakers.get((namespace or "", name or ""))
        if waker is not None:
            waker.set()

    def _unchanged_or_poke(self, key: tuple[str, str]) -> bool:
        """(In a poller thread.) Whether the quiet run's files changed; counts those that did not."""
        new = self.reconciler.changed(key)
        if not new:
            self.metrics.unchanged.inc()
        return new

    def _poke_threadsafe(self, key: tuple[str, str]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.poke, *key)

    def stop(self) -> None:
        """No more reconciles or polls (the operator is stopping)."""
        self.poller.stop()
        self.workers.shutdown()

    async def run(
        self, namespace: str, name: str, body: Mapping[str, Any], children: ChildrenFn, stopped: Any
    ) -> None:
        """Reconcile ``body`` (kopf keeps it current) until the run goes: at once when poked, else at
        the decision's requeue time or the resync interval; a finished run with nothing pending
        (no TTL) waits for a poke only."""
        key = (namespace, name)
        uid = (body.get("metadata") or {}).get("uid") or ""
        self._loop = asyncio.get_running_loop()
        waker = self._wakers.setdefault(key, asyncio.Event())
        watcher = asyncio.ensure_future(_set_when_stopped(stopped, waker))
        failures = 0
        try:
            while not stopped and uid not in self._deleted:
                waker.clear()
                self.poller.cancel(key)
                delay, failed, poll = await self._reconcile(body, children)
                failures = failures + 1 if failed else 0
                if failed:
                    delay = ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS)) - 1]
                if delay is None:  # the run is gone
                    break
                if poll is not None:  # a quiet run: its files are polled, it sleeps until a check is due
                    self.poller.schedule(key, poll, until=delay)
                await _sleep(waker, delay)
        finally:
            watcher.cancel()
            self.poller.cancel(key)
            self._deleted.discard(uid)
            self._wakers.pop(key, None)
            self.metrics.forget(namespace, name)
            self.reconciler.forget(namespace, name)

    async def _reconcile(
        self, body: Mapping[str, Any], children: ChildrenFn
    ) -> tuple[float | None, bool, float | None]:
        """(seconds until the next reconcile (inf: only when poked) or None when the run is gone,
        whether it raised, seconds until the poller is to re-read the files of a quiet run)."""
        snapshot = dict(body)  # kopf replaces the live body's content as events arrive
        namespace, name = _names(snapshot)
        try:
            with self.metrics.timed():
                result = await self.workers.run(self.reconciler.reconcile, snapshot, children())
        except Stopping:
            return None, False, None
        except TRANSIENT_ERRORS as exc:
            self.metrics.errors.inc()
            logger.warning("reconcile of %s/%s failed, will retry: %s", namespace, name, _short(exc))
            return self.reconciler.budget.resync_interval(), True, None
        except Exception as exc:  # a bug or a pathological object: fail this run, keep the others going
            self.metrics.errors.inc()
            logger.exception("reconcile of %s/%s raised", namespace, name)
            return await self._fail(snapshot, exc), True, None
        if result is None:
            return None, False, None
        if result.skipped:
            self.metrics.unchanged.inc()
        decision = result.decision
        phase = decision.status.get("phase")
        self.metrics.observe_phase(namespace, name, phase)
        for event in decision.events:
            kopf.event(dict(result.body), type=event.type, reason=event.reason, message=event.message)
            logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
        if decision.requeue_after is None and phase in TERMINAL_PHASES:
            return math.inf, False, None  # finished: nothing to do until a child or the spec changes
        if result.quiet is not None:
            poll, stands = result.quiet
            return min(stands, self.reconciler.budget.resync_interval()), False, poll
        delay = self.reconciler.budget.resync_interval()
        if decision.requeue_after is not None:
            delay = min(delay, decision.requeue_after)
        return delay, False, None

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
    metrics.progress_readers.set_function(reconciler.budget.readers)
    metrics.progress_read_interval.set_function(reconciler.budget.read_interval)
    runs = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_kopf(settings, reconciler.settings)

    @kopf.on.cleanup(registry=registry, id="stop-workers")
    async def stop_workers(**_: Any) -> None:
        daemons.stop()

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

    # Watch events wake daemons from the filters of event handlers that are never called: kopf calls
    # a handler's ``when`` filter after it has updated the indices, and a filter costs a function call
    # where a handler invocation costs kopf's whole execution path (a 300-run burst under cProfile:
    # kopf's watching causes 4.9 -> 2.1 s, the event loop's CPU 5.7 -> 4.9 s). The run's events: a
    # spec change (not on.update/on.field: those need kopf's "last-handled-configuration" annotation,
    # one more patch of every run) or its deletion.
    def run_seen(name: str, namespace: str, body: Any, type: str | None, **_: Any) -> bool:
        daemons.spec_seen(namespace, name, body, gone=type == "DELETED")
        return False

    def child_seen(namespace: str, labels: Mapping[str, str], type: str | None, body: Any, **_: Any) -> bool:
        daemons.child_seen(namespace, labels.get(LABEL_RUN), type, body)
        return False

    async def never_called(**_: Any) -> None:
        """The filter did the work."""

    kopf.on.event(*runs, registry=registry, id=RUN_EVENT_ID, when=run_seen)(never_called)
    for resource, handler_id in ((JOBS, CHILD_EVENT_IDS[0]), (PODS, CHILD_EVENT_IDS[1])):
        kopf.on.event(
            *resource, registry=registry, labels={LABEL_RUN: kopf.PRESENT}, id=handler_id, when=child_seen
        )(never_called)

    return registry
