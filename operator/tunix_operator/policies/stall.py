"""Stall detection (retryPolicy.stallTimeoutSeconds, startupTimeoutSeconds): a Running attempt whose
step has not advanced for that long (or that reported no step that long after its pods started)
is Stalled: a Stalled condition and event, its Job deleted (SIGTERM: the trainer checkpoints if it
can), and the next attempt resumes from the latest checkpoint, spending maxRestarts."""

from __future__ import annotations

from datetime import timedelta

from tunix_api.run import AttemptOutcome
from tunix_operator import conditions as cond
from tunix_operator.manifests import job_name
from tunix_operator.policies import history, retries
from tunix_operator.policies.draft import DeleteJob, Draft

STEP_STALLED = "StepStalled"
STARTUP_TIMEOUT = "StartupTimeout"


def stalled(d: Draft) -> bool:
    """Restart the current (Running) attempt when it stalled (True); else requeue for the deadline."""
    record = history.current(d)
    if record is None or d.benchmark:
        return False
    policy = d.spec.retry_policy
    if record.last_step is not None:
        if d.observed.progress is None:  # unreadable progress is no evidence of a stall
            return False
        timeout, since = policy.stall_timeout_seconds, cond.parse_time(record.last_step_time)
        reason = STEP_STALLED
        what = f"attempt {d.attempt} stalled: step {record.last_step} did not advance for {timeout}s"
    else:
        running = cond.get_condition(d.new.conditions, cond.RUNNING)
        timeout = policy.startup_timeout_seconds
        since = (
            cond.parse_time(running.last_transition_time) if running and running.status == "True" else None
        )
        reason = STARTUP_TIMEOUT
        what = f"attempt {d.attempt} stalled: no step reported {timeout}s after its pods started running"
    if timeout is None or since is None:
        return False
    due = since + timedelta(seconds=timeout)
    if d.now < due:
        d.requeue_in((due - d.now).total_seconds())
        return False
    d.condition(cond.STALLED, True, reason, what)
    history.ended(d, AttemptOutcome.STALLED, reason=reason)
    d.actions.append(DeleteJob(job_name(d.name, d.attempt), "Stalled"))
    d.event("Warning", "Stalled", f"{what}; deleting Job {job_name(d.name, d.attempt)}")
    retries.restart(d, "Stalled", what)
    return True


def progressing(d: Draft) -> None:
    """A step of the current attempt was seen: a Stalled condition goes False."""
    record = history.current(d)
    if record is not None and record.last_step is not None and cond.is_true(d.new.conditions, cond.STALLED):
        d.condition(
            cond.STALLED, False, "Progressing", f"attempt {d.attempt} reported step {record.last_step}"
        )
