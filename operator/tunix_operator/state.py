"""The TunixRun state machine: ``decide(run, observed, now, settings) -> Decision`` (pure).

The state lives in ``status`` (attempt, restarts, preemptions, conditions), so a
restarted operator continues where the last one stopped. See docs/DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from tunix_api import artifacts
from tunix_api.exit_codes import ExitClass
from tunix_api.names import name_errors
from tunix_api.run import (
    TERMINAL_PHASES,
    CheckpointStatus,
    Mode,
    ModelStatus,
    ObjectMeta,
    Phase,
    Progress,
    RetryPolicy,
    TunixRun,
    TunixRunSpec,
    TunixRunStatus,
)
from tunix_operator import conditions as cond
from tunix_operator.manifests import artifacts_uri, job_name, pvc_name
from tunix_operator.observe import AttemptState, Outcome, assess, job_active, pod_view, stop_due
from tunix_operator.settings import OperatorSettings
from tunix_operator.trainer_output import (
    describe_message,
    parse_benchmark_document,
    parse_benchmark_message,
    parse_progress,
    parse_summary,
    parse_termination_message,
    truncate,
)

# Failure reasons where the operator (not the trainer) ends the run: the Job is deleted so that
# its pods stop. When the trainer fails, the Job controller (backoffLimit 0) stops the other pods
# and the Job is kept for `kubectl logs` until ttlSecondsAfterFinished.
OPERATOR_STOPPED = frozenset({"DeadlineExceeded", "InvalidSpec", "OperatorError", "CreateFailed"})
# A Benchmark-mode attempt exited 0 but neither its termination message nor benchmark.json held
# a result: a benchmark without numbers is no success, and rerunning the same image would not help.
NO_BENCHMARK_RESULT = "NoBenchmarkResult"


@dataclass(frozen=True)
class CreateAttempt:
    """Create (or complete) the children of attempt ``attempt``; 409 means done already."""

    attempt: int


@dataclass(frozen=True)
class DeleteJob:
    """Delete a Job with propagation Background (its pods get SIGTERM and the grace period)."""

    name: str
    reason: str


Action = CreateAttempt | DeleteJob


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the handler read before deciding."""

    job: Mapping[str, Any] | None = None  # the Job of status.attempt
    pods: Sequence[Mapping[str, Any]] = ()  # every pod labelled with the run
    progress: Mapping[str, Any] | None = None  # <artifacts>/progress.json
    summary: Mapping[str, Any] | None = None  # <artifacts>/summary.json (only when needed)
    benchmark: Mapping[str, Any] | None = None  # <artifacts>/benchmark.json (Benchmark mode, when needed)


@dataclass
class Decision:
    status: dict[str, Any]  # the whole new status (wire form)
    status_patch: dict[str, Any]  # JSON merge patch of .status; empty when nothing changed
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    run: TunixRun | None = None  # the parsed run, for building children; None when invalid


def backoff_seconds(policy: RetryPolicy, restarts: int) -> float:
    """Delay before restart number ``restarts`` (1-based): doubling, capped."""
    if restarts <= 0:
        return 0.0
    return float(min(policy.backoff_seconds * 2 ** (restarts - 1), policy.max_backoff_seconds))


def parse_status(raw: Mapping[str, Any] | None) -> TunixRunStatus:
    """The stored status; an unreadable one counts as empty."""
    try:
        return TunixRunStatus.model_validate(dict(raw or {}))
    except ValidationError:
        return TunixRunStatus()


def parse_run(body: Mapping[str, Any]) -> tuple[TunixRun | None, str | None]:
    """(run, None) or (None, why the object is invalid)."""
    meta = body.get("metadata") or {}
    name = meta.get("name") or ""
    try:
        spec = TunixRunSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return None, _validation_message(exc)
    if problems := name_errors(name, hosts=spec.accelerator.hosts):  # the CRD's rules (tunix_api.names)
        return None, "; ".join(problems)
    metadata = ObjectMeta(
        name=name,
        namespace=meta.get("namespace"),
        labels=meta.get("labels"),
        annotations=meta.get("annotations"),
    )
    return TunixRun(metadata=metadata, spec=spec), None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"spec.{where}: {err.get('msg')}" if where else f"spec: {err.get('msg')}")
    return "; ".join(parts)


def _status_wire(status: TunixRunStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level JSON merge patch turning ``old`` into ``new`` (removed keys become null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def reads_needed(
    body: Mapping[str, Any], job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> tuple[bool, bool]:
    """(read progress.json?, read the result file?) for this observation: I/O only when useful.

    The result file is summary.json, or benchmark.json in Benchmark mode; it is read only when
    the termination message holds no result. Benchmarks write no progress.json.
    """
    status = parse_status(body.get("status"))
    if status.phase in TERMINAL_PHASES or job is None or status.attempt is None:
        return False, False
    run, _ = parse_run(body)
    if run is None:
        return False, False
    benchmark = run.spec.mode == Mode.BENCHMARK
    state = assess(job, [pod_view(p) for p in pods], status.attempt, run.spec.accelerator.hosts)
    if state.outcome == Outcome.RUNNING:
        return not benchmark, False
    if state.outcome == Outcome.SUCCEEDED:
        if benchmark:
            return False, parse_benchmark_message(state.termination_message) is None
        return False, parse_termination_message(state.termination_message)[0] is None
    return False, False


class _Reconcile:
    """One decision: a copy of the status mutated step by step, plus actions and events."""

    def __init__(
        self, body: Mapping[str, Any], observed: Observed, now: datetime, settings: OperatorSettings
    ) -> None:
        meta = body.get("metadata") or {}
        self.name: str = meta.get("name") or ""
        self.created = cond.parse_time(meta.get("creationTimestamp"))
        self.generation: int | None = meta.get("generation")
        self.observed = observed
        self.pods = [pod_view(p) for p in observed.pods]
        self.now = now
        self.settings = settings
        self.old = parse_status(body.get("status"))
        self.new = self.old.model_copy(deep=True)
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.run, self.error = parse_run(body)

    # ---- small helpers ---------------------------------------------------------------------

    def _text(self, text: str | None) -> str | None:
        return truncate(text, self.settings.max_message_chars)

    def _event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, self._text(message) or reason))

    def _condition(self, kind: str, status: bool, reason: str, message: str | None = None) -> None:
        self.new.conditions = cond.set_condition(
            self.new.conditions, kind, status, reason, self._text(message), self.now, self.generation
        )

    def _clear(self, kind: str, reason: str) -> None:
        """Set ``kind`` False only if the run already has it (keeps the list small)."""
        if cond.get_condition(self.new.conditions, kind) is not None:
            self._condition(kind, False, reason)

    def _requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    @property
    def spec(self) -> TunixRunSpec:
        assert self.run is not None
        return self.run.spec

    @property
    def attempt(self) -> int:
        return self.new.attempt or 0

    @property
    def benchmark(self) -> bool:
        return self.run is not None and self.spec.mode == Mode.BENCHMARK

    # ---- the machine -----------------------------------------------------------------------

    def decide(self) -> Decision:
        self.new.observed_generation = self.generation
        if self.old.phase in TERMINAL_PHASES:
            self._finished()
        elif self.run is None:
            self._fail("InvalidSpec", self.error or "invalid spec")
        else:
            self.new.metrics_uri = artifacts.join_uri(
                artifacts_uri(self.run, self.settings), artifacts.METRICS_FILE
            )
            self._active()
        return self.decision()

    def decision(self) -> Decision:
        """What this reconcile decided so far, with the status patch from old to new."""
        new_wire = _status_wire(self.new)
        return Decision(
            status=new_wire,
            status_patch=merge_patch(_status_wire(self.old), new_wire),
            actions=self.actions,
            events=self.events,
            requeue_after=self.requeue,
            run=self.run,
        )

    def _active(self) -> None:
        if self._deadline_exceeded():
            return
        if self.spec.suspend:
            self._suspend()
            return
        if self.old.phase == Phase.SUSPENDED:
            self._resume()
            return
        if self.old.attempt is None:
            self.new.start_time = cond.format_time(self.now)
            self.new.restarts = 0
            self.new.preemptions = 0
            self._create(0, Phase.PENDING, "Created")
            return
        job = self.observed.job
        if cond.is_true(self.new.conditions, cond.RESTARTING):
            self._restart_when_due()
        elif job is None:
            phase = self.old.phase if self.old.phase in (Phase.PENDING, Phase.RESTARTING) else Phase.PENDING
            self._create(self.attempt, phase, "Recreated")
        elif (job.get("metadata") or {}).get("deletionTimestamp"):
            self._requeue(self.settings.restart_settle_seconds)
        else:
            self._observe(assess(job, self.pods, self.attempt, self.spec.accelerator.hosts))

    def _observe(self, state: AttemptState) -> None:
        if state.outcome == Outcome.RUNNING:
            self._running(state)
        elif state.outcome == Outcome.PENDING:
            self._pending(state)
        elif state.outcome == Outcome.SUCCEEDED:
            self._succeeded(state)
        else:
            self._failed_attempt(state)

    # ---- creating attempts -----------------------------------------------------------------

    def _create(self, attempt: int, phase: Phase, reason: str) -> None:
        if self._earlier_pods_still_stopping(attempt):
            return
        if attempt > 0:
            self.actions.append(DeleteJob(job_name(self.name, attempt - 1), "Superseded"))
        self.actions.append(CreateAttempt(attempt))
        self.new.attempt = attempt
        self.new.phase = phase
        self.new.message = f"attempt {attempt} created"
        self.new.checkpoint = self._checkpoint_status(self.new.checkpoint)
        self._condition(cond.RUNNING, False, "PodsPending", "waiting for the pods to run")
        self._clear(cond.RESTARTING, "AttemptCreated")
        self._event("Normal", reason, f"created Job {job_name(self.name, attempt)} (attempt {attempt})")

    def _earlier_pods_still_stopping(self, attempt: int) -> bool:
        """Whether to wait for pods of an earlier attempt: a trainer told to stop (deleted, or evicted by
        its kubelet without being deleted) may still be writing its final checkpoint and metrics to the
        same places the next attempt uses. Pods not told yet (a healthy member of a gang) are told by
        deleting their Job. The wait ends when all are terminal or gone, or at their grace period plus
        a margin."""
        lingering = [p for p in self.pods if p.attempt != attempt and not p.terminal]
        if not lingering:
            return False
        due = [stop_due(p) for p in lingering]
        job = self.observed.job
        if None in due and job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            self.actions.append(DeleteJob(job["metadata"]["name"], "Superseded"))
        if all(d is not None and self.now >= d for d in due):
            names = ", ".join(p.name for p in lingering)
            self._event("Warning", "StopTimedOut", f"{names} still not stopped after the grace period")
            return False
        self.new.message = (
            f"waiting for {len(lingering)} pod(s) of an earlier attempt to stop "
            "(a final checkpoint may be saving)"
        )
        self._requeue(self.settings.restart_settle_seconds)
        return True

    def _checkpoint_status(self, current: CheckpointStatus | None) -> CheckpointStatus | None:
        if self.benchmark:
            return current
        volume = self.spec.checkpoint.volume
        uri = self.spec.checkpoint.uri
        if uri is None and volume is not None:
            uri = f"pvc://{volume.claim_name or pvc_name(self.name)}"
        if uri is None and current is None:
            return None
        latest = current.latest_step if current else None
        return CheckpointStatus(uri=uri, latest_step=latest)

    def _restart_when_due(self) -> None:
        restarting = cond.get_condition(self.new.conditions, cond.RESTARTING)
        since = cond.parse_time(restarting.last_transition_time if restarting else None) or self.now
        preempted = restarting is not None and restarting.reason == "Preempted"
        delay = 0.0 if preempted else backoff_seconds(self.spec.retry_policy, self.new.restarts or 0)
        due = since + timedelta(seconds=delay)
        if self.now >= due:
            self._create(self.attempt, Phase.RESTARTING, "Restarted")
        else:
            wait = (due - self.now).total_seconds()
            self.new.message = f"attempt {self.attempt} starts in {wait:.0f}s (backoff)"
            self._requeue(wait)

    # ---- observing the current attempt -----------------------------------------------------

    def _running(self, state: AttemptState) -> None:
        hosts = self.spec.accelerator.hosts
        if self.old.phase != Phase.RUNNING:
            self._event(
                "Normal", "Running", f"attempt {self.attempt}: {state.running}/{hosts} pod(s) running"
            )
        self.new.phase = Phase.RUNNING
        self.new.message = f"attempt {self.attempt} running"
        self._condition(cond.RUNNING, True, "PodsRunning", f"{state.running}/{hosts} pod(s) running")
        if not self.benchmark:  # tunix-bench writes no progress.json
            self._merge_progress()
            self._requeue(self.settings.progress_interval_seconds)

    def _merge_progress(self) -> None:
        progress = parse_progress(self.observed.progress, not_before=self.created)
        if progress is not None and progress != self.old.progress:
            self.new.progress = progress
            if progress.restored_from is not None:  # the trainer resumed from this (intact) step
                current = self.new.checkpoint or CheckpointStatus()
                self.new.checkpoint = current.model_copy(update={"restored_from": progress.restored_from})

    def _pending(self, state: AttemptState) -> None:
        if self.old.phase not in (Phase.PENDING, Phase.RESTARTING):
            self.new.phase = Phase.PENDING
        previous = cond.get_condition(self.old.conditions, cond.RUNNING)
        problem = state.reason not in (None, "PodsPending")
        if problem and (previous is None or previous.reason != state.reason):
            self._event("Warning", state.reason or "Pending", state.message or "")
        self._condition(cond.RUNNING, False, state.reason or "PodsPending", state.message)
        self.new.message = self._text(state.message)

    def _succeeded(self, state: AttemptState) -> None:
        if self.benchmark:
            self._benchmark_succeeded(state)
            return
        summary, provenance = parse_termination_message(state.termination_message)
        if summary is None:
            summary, provenance = parse_summary(self.observed.summary)
        self.new.summary = summary
        assert self.run is not None
        model_uri = artifacts.join_uri(artifacts_uri(self.run, self.settings), artifacts.MODEL_DIR)
        self.new.model = ModelStatus(uri=model_uri)  # the trainer exports it before exiting 0
        if provenance:
            self.new.provenance = provenance
        if summary is not None and summary.total_steps is not None:
            old = self.new.progress or Progress()
            self.new.progress = old.model_copy(
                update={
                    "step": summary.total_steps,
                    "total_steps": summary.total_steps,
                    "step_of_total": f"{summary.total_steps}/{summary.total_steps}",
                    "loss": summary.final_loss if summary.final_loss is not None else old.loss,
                    "eta_seconds": 0.0,
                }
            )
            if self.new.checkpoint is not None:
                self.new.checkpoint = self.new.checkpoint.model_copy(
                    update={"latest_step": summary.total_steps}
                )
        detail = (
            f": final loss {summary.final_loss:.4g} after {summary.total_steps} steps"
            if summary and summary.final_loss is not None
            else ""
        )
        self._complete(f"attempt {self.attempt} completed{detail}")

    def _benchmark_succeeded(self, state: AttemptState) -> None:
        """status.benchmark from the termination message, else benchmark.json; Failed without either."""
        result = parse_benchmark_message(state.termination_message)
        if result is None:
            result = parse_benchmark_document(self.observed.benchmark)
        if result is None:
            assert self.run is not None
            where = artifacts.join_uri(artifacts_uri(self.run, self.settings), artifacts.BENCHMARK_FILE)
            self._fail(
                NO_BENCHMARK_RESULT,
                f"attempt {self.attempt} exited 0 but reported no benchmark result: "
                f"{describe_message(state.termination_message)}, and {where} is missing or unreadable",
            )
            return
        self.new.benchmark = result
        parts = [
            f"MFU {result.mfu:.2%}" if result.mfu is not None else None,
            f"{result.tokens_per_second:,.0f} tokens/s" if result.tokens_per_second is not None else None,
            f"step p50 {result.step_time_p50_ms:.4g} ms" if result.step_time_p50_ms is not None else None,
        ]
        detail = ", ".join(p for p in parts if p)
        self._complete(f"attempt {self.attempt} completed" + (f": {detail}" if detail else ""))

    def _complete(self, message: str) -> None:
        self.new.phase = Phase.SUCCEEDED
        self.new.completion_time = cond.format_time(self.now)
        self.new.message = message
        self._condition(cond.SUCCEEDED, True, "Completed", message)
        self._condition(cond.RUNNING, False, "Completed")
        self._event("Normal", "Succeeded", message)
        self._schedule_ttl()

    def _failed_attempt(self, state: AttemptState) -> None:
        code = f" (exit code {state.exit_code})" if state.exit_code is not None else ""
        detail = f": {state.message.strip()}" if state.message and state.message.strip() else ""
        what = f"attempt {self.attempt} failed with {state.reason}{code}{detail}"
        policy = self.spec.retry_policy
        if state.exit_class == ExitClass.FATAL:
            self._fail(state.reason or "Failed", what)
        elif state.exit_class == ExitClass.PREEMPTED:
            used = self.old.preemptions or 0
            if used >= policy.max_preemptions:
                self._fail(
                    "PreemptionLimitExceeded", f"{what}; maxPreemptions={policy.max_preemptions} spent"
                )
                return
            self.new.preemptions = used + 1
            then = "rerunning the benchmark" if self.benchmark else "resuming from the latest checkpoint"
            self._event("Warning", "Preempted", f"{what}; {then}")
            self._schedule_restart("Preempted", what)
        else:
            used = self.old.restarts or 0
            if used >= policy.max_restarts:
                self._fail("BackoffLimitExceeded", f"{what}; maxRestarts={policy.max_restarts} spent")
                return
            self.new.restarts = used + 1
            delay = backoff_seconds(policy, used + 1)
            self._event(
                "Warning", "Restarting", f"{what}; restart {used + 1}/{policy.max_restarts} in {delay:.0f}s"
            )
            self._schedule_restart(state.reason or "Failed", what)

    def _schedule_restart(self, reason: str, message: str) -> None:
        self.new.attempt = self.attempt + 1
        self.new.phase = Phase.RESTARTING
        self._condition(cond.RESTARTING, True, reason, message)
        self._condition(cond.RUNNING, False, reason, message)
        self._restart_when_due()

    # ---- suspend, deadline, end ------------------------------------------------------------

    def _suspend(self) -> None:
        job = self.observed.job
        if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            self.actions.append(DeleteJob(job_name(self.name, self.attempt), "Suspended"))
        if self.old.phase != Phase.SUSPENDED:
            then = (
                "resuming reruns the benchmark" if self.benchmark else "pods stop after saving a checkpoint"
            )
            self._event("Normal", "Suspended", f"spec.suspend is true: {then}")
        self.new.phase = Phase.SUSPENDED
        self.new.message = "suspended"
        self._condition(cond.SUSPENDED, True, "Suspended", "spec.suspend is true")
        self._condition(cond.RUNNING, False, "Suspended")

    def _resume(self) -> None:
        attempt = self.attempt + 1 if self.old.attempt is not None else 0
        if self.new.restarts is None:
            self.new.restarts, self.new.preemptions = 0, 0
        before = len(self.actions)
        self._create(attempt, Phase.PENDING, "Resumed")
        if len(self.actions) > before:
            self.new.start_time = cond.format_time(self.now)  # the deadline restarts, as for a Job
            self._condition(cond.SUSPENDED, False, "Resumed", "resumed from the latest checkpoint")

    def _deadline_exceeded(self) -> bool:
        deadline = self.spec.active_deadline_seconds
        started = cond.parse_time(self.new.start_time)
        if deadline is None or started is None or self.spec.suspend:
            return False
        due = started + timedelta(seconds=deadline)
        if self.now < due:
            self._requeue((due - self.now).total_seconds())
            return False
        self._fail("DeadlineExceeded", f"the run was active longer than activeDeadlineSeconds={deadline}")
        return True

    def _fail(self, reason: str, message: str) -> None:
        """Fail the run. When the operator ends it (not the trainer), the Job is stopped too."""
        self.new.phase = Phase.FAILED
        self.new.completion_time = cond.format_time(self.now)
        self.new.message = self._text(message)
        self._condition(cond.FAILED, True, reason, message)
        self._condition(cond.RUNNING, False, reason)
        self._clear(cond.RESTARTING, reason)
        self._event("Warning", reason, message)
        if reason in OPERATOR_STOPPED:
            self._stop_job("RunFailed")
        if self.run is not None:
            self._schedule_ttl()

    def _stop_job(self, reason: str) -> None:
        job = self.observed.job
        if job is not None and job_active(job) and not (job.get("metadata") or {}).get("deletionTimestamp"):
            self.actions.append(DeleteJob(job["metadata"]["name"], reason))

    def _schedule_ttl(self) -> bool:
        """True when the TTL after finishing has expired."""
        ttl = self.spec.ttl_seconds_after_finished
        finished = cond.parse_time(self.new.completion_time)
        if ttl is None or finished is None:
            return False
        due = finished + timedelta(seconds=ttl)
        if self.now >= due:
            return True
        self._requeue((due - self.now).total_seconds())
        return False

    def _finished(self) -> None:
        """Terminal runs never get new children; only clean-up happens."""
        job = self.observed.job
        if job is None:
            return
        failed = cond.get_condition(self.old.conditions, cond.FAILED)
        if self.old.phase == Phase.FAILED and failed is not None and failed.reason in OPERATOR_STOPPED:
            self._stop_job("RunFailed")  # again, in case the first delete did not happen
            if self.actions:
                return
        if self.run is not None and self._schedule_ttl():
            name = job["metadata"]["name"]
            self.actions.append(DeleteJob(name, "TTLExpired"))
            self._event("Normal", "TTLExpired", f"deleted Job {name} (ttlSecondsAfterFinished)")


def decide(
    body: Mapping[str, Any], observed: Observed, now: datetime, settings: OperatorSettings
) -> Decision:
    """The next status, actions, events and requeue delay of one TunixRun."""
    return _Reconcile(body, observed, now, settings).decide()


def fail(
    body: Mapping[str, Any], reason: str, message: str, now: datetime, settings: OperatorSettings
) -> Decision:
    """A decision that only marks the run Failed (for errors outside the state machine)."""
    reconcile = _Reconcile(body, Observed(), now, settings)
    if reconcile.old.phase in TERMINAL_PHASES:
        return reconcile.decide()
    reconcile.new.observed_generation = reconcile.generation
    reconcile._fail(reason, message)
    return reconcile.decision()
