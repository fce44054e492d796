"""``decide``: the policies composed into one decision per observation (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tunix_api import artifacts
from tunix_api.run import TERMINAL_PHASES, Phase
from tunix_operator import conditions as cond
from tunix_operator.manifests import artifacts_uri
from tunix_operator.observe import AttemptState, Outcome, assess, pod_view
from tunix_operator.policies import (
    attempts,
    benchmark_result,
    deadline,
    history,
    retries,
    running,
    success,
    suspend,
    terminal,
)
from tunix_operator.policies.draft import Decision, Draft, Observed, RunView, view_run
from tunix_operator.settings import OperatorSettings
from tunix_operator.trainer_output import parse_benchmark_message, parse_termination_message


def decide(
    body: Mapping[str, Any] | RunView, observed: Observed, now: datetime, settings: OperatorSettings
) -> Decision:
    """The next status, actions, events and requeue delay of one TunixRun (a body or its RunView)."""
    d = Draft(view_run(body), observed, now, settings)
    d.new.observed_generation = d.generation
    if d.old.phase in TERMINAL_PHASES:
        terminal.finished(d)
    elif d.run is None:
        terminal.fail(d, "InvalidSpec", d.view.error or "invalid spec")
    else:
        d.new.metrics_uri = artifacts.join_uri(artifacts_uri(d.run, d.settings), artifacts.METRICS_FILE)
        _active(d)
    if d.new.attempts != d.old.attempts or d.new.completion_time != d.old.completion_time:
        history.update_goodput(d)
    return d.decision()


def fail(
    body: Mapping[str, Any] | RunView, reason: str, message: str, now: datetime, settings: OperatorSettings
) -> Decision:
    """A decision that only marks the run Failed (for errors outside the state machine)."""
    view = view_run(body)
    if view.status.phase in TERMINAL_PHASES:
        return decide(view, Observed(), now, settings)
    d = Draft(view, Observed(), now, settings)
    d.new.observed_generation = d.generation
    terminal.fail(d, reason, message)
    history.update_goodput(d)
    return d.decision()


def reads_needed(
    body: Mapping[str, Any] | RunView, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> tuple[bool, bool]:
    """(read progress.json?, read the result file?) for this observation: I/O only when useful.

    The result file is summary.json, or benchmark.json in Benchmark mode; it is read only when
    the termination message holds no result. progress.json is read while the attempt runs, when it
    failed, and while pods of an attempt that ended remain (its trainer may still be saving its final
    checkpoint). Benchmarks write no progress.json.
    """
    view = view_run(body)
    status = view.status
    if status.phase in TERMINAL_PHASES or view.run is None:
        return False, False
    if not view.benchmark and history.ended_attempt_lingers(status, [pod_view(p) for p in pods]):
        return True, False  # its trainer may still report its final checkpoint
    if job is None or status.attempt is None:
        return False, False
    state = assess(job, [pod_view(p) for p in pods], status.attempt, view.run.spec.accelerator.hosts)
    if state.outcome in (Outcome.RUNNING, Outcome.FAILED):  # a failed attempt's last word, too
        return not view.benchmark, False
    if state.outcome == Outcome.SUCCEEDED:
        if view.benchmark:
            return False, parse_benchmark_message(state.termination_message) is None
        return False, parse_termination_message(state.termination_message)[0] is None
    return False, False


def _active(d: Draft) -> None:
    history.late_exit_code(d)
    if not d.benchmark:
        running.merge_late_progress(d)
    if deadline.deadline_exceeded(d):
        return
    if d.spec.suspend:
        suspend.suspend(d)
        return
    if d.old.phase == Phase.SUSPENDED:
        suspend.resume(d)
        return
    if d.old.attempt is None:
        d.new.start_time = cond.format_time(d.now)
        d.new.restarts = 0
        d.new.preemptions = 0
        attempts.create(d, 0, Phase.PENDING, "Created")
        return
    job = d.observed.job
    if cond.is_true(d.new.conditions, cond.RESTARTING):
        retries.restart_when_due(d)
    elif job is None:
        phase = d.old.phase if d.old.phase in (Phase.PENDING, Phase.RESTARTING) else Phase.PENDING
        attempts.create(d, d.attempt, phase, "Recreated")
    elif d.job_deleting():
        d.requeue_in(d.settings.restart_settle_seconds)
    else:
        _observe(d, assess(job, d.pods, d.attempt, d.spec.accelerator.hosts))


def _observe(d: Draft, state: AttemptState) -> None:
    if state.outcome == Outcome.RUNNING:
        running.running(d, state)
    elif state.outcome == Outcome.PENDING:
        running.pending(d, state)
    elif state.outcome == Outcome.SUCCEEDED:
        if d.benchmark:
            benchmark_result.succeeded(d, state)
        else:
            success.succeeded(d, state)
    else:
        if not d.benchmark:
            running.merge_progress(d)  # its last steps and checkpoint, for the history
        retries.failed_attempt(d, state)
