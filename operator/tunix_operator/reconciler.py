"""One reconcile of one TunixRun: observe (memory, storage) -> decide (pure) -> write (status, children).

Nothing is read from the API: the run's body is the daemon's live body and its Jobs and pods come
from kopf's indices (:class:`~tunix_operator.cache.Children`); :mod:`tunix_operator.cache` bridges
the few milliseconds by which the watches lag the operator's own writes. Synchronous I/O; the kopf
layer runs it in a worker thread, one at a time per run.

A poll that finds nothing new is not decided again (:mod:`tunix_operator.quiet`): when the
last decision changed nothing and the run, its children and the files read are the same versions,
the same decision stands until its next time-based check (deadline, stall, backoff, TTL) or the
resync interval, whichever comes first. How often files are read is the progress interval, stretched
when many runs are running (:mod:`tunix_operator.budget`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from tunix_api.run import Mode, TunixRun
from tunix_operator import state
from tunix_operator.budget import ReadBudget
from tunix_operator.cache import Children, JobExpectations, RunKey, StatusWrites
from tunix_operator.kube import KubeClient
from tunix_operator.manifests import RunRef, artifacts_uri, build_children, credentials_secret, job_name
from tunix_operator.quiet import Files, Quiet, QuietDecisions, versions
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
    skipped: bool = False  # nothing new since the last (quiet) decision: not decided again
    # A quiet decision: (seconds until the files are to be read again, seconds it stands at most)
    # (for :class:`~tunix_operator.poller.Poller`); None otherwise.
    quiet: tuple[float, float] | None = None


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
        self.quiet: QuietDecisions = QuietDecisions()
        self.budget = ReadBudget(
            settings.progress_interval_seconds,
            settings.resync_interval_seconds,
            settings.max_progress_reads_per_second,
        )
        self._decide_settings = settings  # settings with the read interval the budget allows now
        # Files a poll found changed, with the quiet decision they were compared with: the next
        # reconcile uses them only while that decision is still the run's last one.
        self._read_ahead: dict[RunKey, tuple[Quiet, Files]] = {}

    def reconcile(self, live: Mapping[str, Any], children: Children) -> Result | None:
        """Reconcile the run once; None when it is being deleted or is gone."""
        key = _key(live)
        body = self.writes.current(key, live)
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        jobs = self.expectations.jobs(key, children.jobs)
        now = self.clock()
        seen = versions(body, jobs.values(), children.pods)
        last = self.quiet.valid(key, seen, now)
        view = last.view if last is not None else state.view_run(body)  # parsed once per version
        attempt = view.status.attempt
        job = jobs.get(job_name(view.name, attempt)) if attempt is not None else None
        pods = list(children.pods)
        wants = last.wants if last is not None else state.reads_needed(view, job, pods)
        self.budget.reads(key, any(wants))
        ahead = self._read_ahead.pop(key, None)
        files = ahead[1] if ahead is not None and ahead[0] is last else self._read(key[0], view, wants)
        if last is not None and files == last.files:
            return self._again(body, last, now)
        observed = state.Observed(job=job, pods=pods, **vars(files))
        decision = state.decide(view, observed, now, self._settings_now())
        self.quiet.forget(key)
        if decision.quiet and seen is not None:
            quiet = Quiet(seen, view, wants, files, self._until(now, decision), decision)
            self.quiet.remember(key, quiet)
            return Result(body, decision, quiet=_polls(quiet, now))
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
        self.quiet.forget((namespace, name))
        self.budget.forget((namespace, name))
        self._read_ahead.pop((namespace, name), None)

    def _settings_now(self) -> OperatorSettings:
        """The settings, with the read interval the budget allows for as many runs as read now."""
        interval = self.budget.read_interval()
        if interval != self._decide_settings.progress_interval_seconds:
            self._decide_settings = self.settings.model_copy(update={"progress_interval_seconds": interval})
        return self._decide_settings

    def _until(self, now: datetime, decision: state.Decision) -> datetime:
        """Until when a quiet decision stands: its next time-based check, at most the resync interval."""
        seconds = self.budget.resync_interval()
        if decision.due_after is not None:
            seconds = min(seconds, decision.due_after)
        return now + timedelta(seconds=seconds)

    def _again(self, body: Mapping[str, Any], last: Quiet, now: datetime) -> Result:
        """The last quiet decision, with the delay until the next poll or its time-based check."""
        left = (last.until - now).total_seconds()
        poll = last.decision.requeue_after
        decision = replace(last.decision, requeue_after=left if poll is None else min(poll, left))
        return Result(body, decision, skipped=True, quiet=_polls(last, now))

    def changed(self, key: RunKey) -> bool:
        """Whether the run needs a decision: it has no quiet one, or its files changed since."""
        last = self.quiet.get(key)
        if last is None:
            return True
        files = self._read(key[0], last.view, last.wants)
        if files == last.files:
            return False
        self._read_ahead[key] = (last, files)  # the reconcile this causes need not read them again
        return True

    def _patch_status(self, body: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
        """Patch the status; False when the run is gone."""
        namespace, name = _key(body)
        stored = self.kube.patch_run_status(namespace, name, patch)
        if stored is None:
            return False
        self.writes.written((namespace, name), body, stored)
        return True

    # ---- observing -----------------------------------------------------------------------------

    def _read(self, namespace: str, view: state.RunView, wants: tuple[bool, bool]) -> Files:
        want_progress, want_result = wants
        run = view.run
        if run is None or not (want_progress or want_result):
            return Files()
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
        return Files(progress=progress, summary=summary, benchmark=benchmark)

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


def _polls(quiet: Quiet, now: datetime) -> tuple[float, float] | None:
    poll = quiet.poll_after
    return None if poll is None else (poll, (quiet.until - now).total_seconds())


def _reason(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}: {(exc.body or '')[:300]!s}"
