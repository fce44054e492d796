"""The two ends of a run: Failed (by the trainer or by the operator) and Succeeded."""

from __future__ import annotations

from tunix_api.run import AttemptOutcome, Phase
from tunix_operator import conditions as cond
from tunix_operator.observe import job_active
from tunix_operator.policies import history, ttl
from tunix_operator.policies.draft import DeleteJob, Draft

# Failure reasons where the operator (not the trainer) ends the run: the Job is deleted so that
# its pods stop. When the trainer fails, the Job controller (backoffLimit 0) stops the other pods
# and the Job is kept for `kubectl logs` until ttlSecondsAfterFinished.
OPERATOR_STOPPED = frozenset({"DeadlineExceeded", "InvalidSpec", "OperatorError", "CreateFailed"})


def fail(d: Draft, reason: str, message: str) -> None:
    """Fail the run. When the operator ends it (not the trainer), the Job is stopped too."""
    d.new.phase = Phase.FAILED
    d.new.completion_time = cond.format_time(d.now)
    d.new.message = d.text(message)
    d.condition(cond.FAILED, True, reason, message)
    d.condition(cond.RUNNING, False, reason)
    d.clear(cond.RESTARTING, reason)
    d.event("Warning", reason, message)
    history.ended(d, AttemptOutcome.SUPERSEDED, reason=reason)  # when the operator stops it
    if reason in OPERATOR_STOPPED:
        stop_job(d, "RunFailed")
    if d.run is not None:
        ttl.ttl_expired(d)


def complete(d: Draft, message: str) -> None:
    """Mark the run Succeeded."""
    d.new.phase = Phase.SUCCEEDED
    d.new.completion_time = cond.format_time(d.now)
    d.new.message = message
    d.condition(cond.SUCCEEDED, True, "Completed", message)
    d.condition(cond.RUNNING, False, "Completed")
    d.event("Normal", "Succeeded", message)
    ttl.ttl_expired(d)


def stop_job(d: Draft, reason: str) -> None:
    """Delete the observed Job while it may still have running pods."""
    job = d.observed.job
    if job is not None and job_active(job) and not d.job_deleting():
        d.actions.append(DeleteJob(job["metadata"]["name"], reason))


def finished(d: Draft) -> None:
    """Terminal runs never get new children; only clean-up happens."""
    if d.observed.job is None:
        return
    failed = cond.get_condition(d.old.conditions, cond.FAILED)
    if d.old.phase == Phase.FAILED and failed is not None and failed.reason in OPERATOR_STOPPED:
        stop_job(d, "RunFailed")  # again, in case the first delete did not happen
        if d.actions:
            return
    ttl.delete_when_expired(d)
