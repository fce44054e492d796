"""One reconcile of one TunixRun: observe (memory, storage) -> decide (pure) -> write (status, children).

Nothing is read from the API: the run's body is the daemon's live body and its Jobs and pods come
from kopf's indices (:class:`~tunix_operator.cache.Children`); :mod:`tunix_operator.cache` bridges
the few milliseconds by which the watches lag the operator's own writes. Synchronous I/O; the kopf
layer runs it in a worker thread, one at a time per run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from tunix_api.run import Mode, TunixRun
from tunix_operator import state
from tunix_operator.cache import Children, JobExpectations, RunKey, StatusWrites
from tunix_operator.kube import KubeClient
from tunix_operator.manifests import RunRef, artifacts_uri, build_children, credentials_secret, job_name
from tunix_operator.settings import OperatorSettings
from tunix_operator.storage import ArtifactReader, CredentialsCache, JsonReads

logger = logging.getLogger(__name__)

# API answers that mean "this object can never be created as built": fail the run, do not loop.
PERMANENT_API_ERRORS = frozenset({400, 403, 422})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Result:
    body: Mapping[str, Any]  # the run as decided on (for events)
    decision: state.Decision


def _key(body: Mapping[str, Any]) -> RunKey:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = utcnow,
        reads: JsonReads | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.reads = reads or JsonReads()
        self.secrets = CredentialsCache(kube.read_secret, max_age_seconds=settings.secret_cache_seconds)
        self.writes = StatusWrites()
        self.expectations = JobExpectations()

    def reconcile(self, live: Mapping[str, Any], children: Children) -> Result | None:
        """Reconcile the run once; None when it is being deleted or is gone."""
        key = _key(live)
        body = self.writes.current(key, live)
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        jobs = self.expectations.jobs(key, children.jobs)
        view = state.view_run(body)  # parsed once for reading and deciding
        observed = self._observe(body, view, jobs, children)
        decision = state.decide(view, observed, self.clock(), self.settings)
        if decision.status_patch and not self._patch_status(body, decision.status_patch):
            return None
        try:
            self._act(body, jobs, decision)
        except ApiException as exc:
            if exc.status not in PERMANENT_API_ERRORS:
                raise
            decision = self.fail(
                body, "CreateFailed", f"the API server refused a child object: {_reason(exc)}"
            )
        return Result(body, decision)

    def fail(self, body: Mapping[str, Any], reason: str, message: str) -> state.Decision:
        """Mark the run Failed (used when reconciling it keeps raising)."""
        body = self.writes.current(_key(body), body)
        decision = state.fail(body, reason, message, self.clock(), self.settings)
        if decision.status_patch:
            self._patch_status(body, decision.status_patch)
        return decision

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of a run (its daemon ended)."""
        self.writes.forget((namespace, name))
        self.expectations.forget((namespace, name))

    def _patch_status(self, body: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
        """Patch the status; False when the run is gone."""
        namespace, name = _key(body)
        stored = self.kube.patch_run_status(namespace, name, patch)
        if stored is None:
            return False
        self.writes.written((namespace, name), body, stored)
        return True

    # ---- observing -----------------------------------------------------------------------------

    def _observe(
        self,
        body: Mapping[str, Any],
        view: state.RunView,
        jobs: Mapping[str, Mapping[str, Any]],
        children: Children,
    ) -> state.Observed:
        namespace, name = _key(body)
        attempt = view.status.attempt
        job = jobs.get(job_name(name, attempt)) if attempt is not None else None
        pods = list(children.pods)
        want_progress, want_result = state.reads_needed(view, job, pods)
        run = view.run
        if run is None or not (want_progress or want_result):
            return state.Observed(job=job, pods=pods)
        reader = self._reader(namespace, run)
        progress = reader.progress() if want_progress else None
        summary = benchmark = None
        if want_result and run.spec.mode == Mode.BENCHMARK:
            benchmark = reader.benchmark()
        elif want_result:
            summary = reader.summary()
        secret = credentials_secret(run, self.settings)
        if reader.denied and secret:  # rotated keys: read the Secret again next time
            self.secrets.invalidate(namespace, secret)
        return state.Observed(job=job, pods=pods, progress=progress, summary=summary, benchmark=benchmark)

    def _reader(self, namespace: str, run: TunixRun) -> ArtifactReader:
        secret = credentials_secret(run, self.settings)
        credentials = self.secrets.get(namespace, secret) if secret else None
        return ArtifactReader(artifacts_uri(run, self.settings), run.spec.storage, credentials, self.reads)

    # ---- writing -------------------------------------------------------------------------------

    def _act(
        self, body: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]], decision: state.Decision
    ) -> None:
        meta = body["metadata"]
        ref = RunRef(meta["name"], meta["namespace"], meta["uid"])
        key = (ref.namespace, ref.name)
        for action in decision.actions:
            if isinstance(action, state.DeleteJob):
                if self.kube.delete_job(ref.namespace, action.name):
                    logger.info("deleted Job %s/%s (%s)", ref.namespace, action.name, action.reason)
                self.expectations.deleted(key, jobs.get(action.name), action.name)
            elif isinstance(action, state.CreateAttempt):
                assert decision.run is not None
                for obj in build_children(decision.run, ref, self.settings, action.attempt):
                    created = self.kube.create(obj)
                    if created is not None:
                        logger.info("created %s %s/%s", obj["kind"], ref.namespace, obj["metadata"]["name"])
                        if obj["kind"] == "Job":
                            self.expectations.created(key, created)
            elif isinstance(action, state.AnnotatePods):
                for pod in action.pods:
                    self.kube.annotate_pod(ref.namespace, pod, dict(action.annotations))


def _reason(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}: {(exc.body or '')[:300]!s}"
