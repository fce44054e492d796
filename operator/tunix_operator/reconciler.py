"""One reconcile of one TunixRun: read (API, storage) -> decide (pure) -> write (status, children).

Synchronous I/O; the kopf layer runs it in a worker thread, one at a time per run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from tunix_api.run import Mode, TunixRun
from tunix_operator import state
from tunix_operator.kube import KubeClient
from tunix_operator.manifests import (
    RunRef,
    artifacts_uri,
    build_children,
    credentials_secret,
    job_name,
    run_selector,
)
from tunix_operator.settings import OperatorSettings
from tunix_operator.storage import ArtifactReader

logger = logging.getLogger(__name__)

# API answers that mean "this object can never be created as built": fail the run, do not loop.
PERMANENT_API_ERRORS = frozenset({400, 403, 422})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Result:
    body: dict[str, Any]  # the run as read (for events)
    decision: state.Decision


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock

    def reconcile(self, namespace: str, name: str) -> Result | None:
        """Reconcile the run once; None when it no longer exists."""
        body = self.kube.get_run(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        observed = self._observe(namespace, name, body)
        decision = state.decide(body, observed, self.clock(), self.settings)
        if decision.status_patch:
            self.kube.patch_run_status(namespace, name, decision.status_patch)
        try:
            self._act(body, decision)
        except ApiException as exc:
            if exc.status not in PERMANENT_API_ERRORS:
                raise
            decision = self.fail(
                body, "CreateFailed", f"the API server refused a child object: {_reason(exc)}"
            )
        return Result(body, decision)

    def fail(self, body: dict[str, Any], reason: str, message: str) -> state.Decision:
        """Mark the run Failed (used when reconciling it keeps raising)."""
        meta = body["metadata"]
        decision = state.fail(body, reason, message, self.clock(), self.settings)
        if decision.status_patch:
            self.kube.patch_run_status(meta["namespace"], meta["name"], decision.status_patch)
        return decision

    # ---- reading -------------------------------------------------------------------------------

    def _observe(self, namespace: str, name: str, body: dict[str, Any]) -> state.Observed:
        status = state.parse_status(body.get("status"))
        job = None
        if status.attempt is not None:
            job = self.kube.get_job(namespace, job_name(name, status.attempt))
        pods = self.kube.list_pods(namespace, run_selector(name))
        want_progress, want_result = state.reads_needed(body, job, pods)
        run, _ = state.parse_run(body)
        if run is None or not (want_progress or want_result):
            return state.Observed(job=job, pods=pods)
        reader = self._reader(namespace, run)
        progress = reader.progress() if want_progress else None
        summary = benchmark = None
        if want_result and run.spec.mode == Mode.BENCHMARK:
            benchmark = reader.benchmark()
        elif want_result:
            summary = reader.summary()
        return state.Observed(job=job, pods=pods, progress=progress, summary=summary, benchmark=benchmark)

    def _reader(self, namespace: str, run: TunixRun) -> ArtifactReader:
        secret = credentials_secret(run, self.settings)
        credentials = self.kube.read_secret(namespace, secret) if secret else None
        return ArtifactReader(artifacts_uri(run, self.settings), run.spec.storage, credentials)

    # ---- writing -------------------------------------------------------------------------------

    def _act(self, body: dict[str, Any], decision: state.Decision) -> None:
        meta = body["metadata"]
        ref = RunRef(meta["name"], meta["namespace"], meta["uid"])
        for action in decision.actions:
            if isinstance(action, state.DeleteJob):
                if self.kube.delete_job(ref.namespace, action.name):
                    logger.info("deleted Job %s/%s (%s)", ref.namespace, action.name, action.reason)
            elif isinstance(action, state.CreateAttempt):
                assert decision.run is not None
                for obj in build_children(decision.run, ref, self.settings, action.attempt):
                    if self.kube.create(obj):
                        logger.info("created %s %s/%s", obj["kind"], ref.namespace, obj["metadata"]["name"])


def _reason(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}: {(exc.body or '')[:300]!s}"
