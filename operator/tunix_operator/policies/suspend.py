"""spec.suspend: true stops the pods (they checkpoint) and keeps the run; false resumes it with the
next attempt (not counted as a restart), restarting the deadline as a Job's does."""

from __future__ import annotations

from tunix_api.run import AttemptOutcome, Phase
from tunix_operator import conditions as cond
from tunix_operator.manifests import job_name
from tunix_operator.policies import attempts, history
from tunix_operator.policies.draft import DeleteJob, Draft


def suspend(d: Draft) -> None:
    if d.observed.job is not None and not d.job_deleting():
        d.actions.append(DeleteJob(job_name(d.name, d.attempt), "Suspended"))
    history.ended(d, AttemptOutcome.SUPERSEDED, reason="Suspended")
    if d.old.phase != Phase.SUSPENDED:
        then = "resuming reruns the benchmark" if d.benchmark else "pods stop after saving a checkpoint"
        d.event("Normal", "Suspended", f"spec.suspend is true: {then}")
    d.new.phase = Phase.SUSPENDED
    d.new.message = "suspended"
    d.condition(cond.SUSPENDED, True, "Suspended", "spec.suspend is true")
    d.condition(cond.RUNNING, False, "Suspended")


def resume(d: Draft) -> None:
    attempt = d.attempt + 1 if d.old.attempt is not None else 0
    if d.new.restarts is None:
        d.new.restarts, d.new.preemptions = 0, 0
    if attempts.create(d, attempt, Phase.PENDING, "Resumed", waited_seconds=_suspended_seconds(d)):
        d.new.start_time = cond.format_time(d.now)  # the deadline restarts, as for a Job
        d.condition(cond.SUSPENDED, False, "Resumed", "resumed from the latest checkpoint")


def _suspended_seconds(d: Draft) -> float:
    """How long the run was suspended: since its last attempt ended (it was stopped by the suspend)."""
    records = d.new.attempts or []
    ended = cond.parse_time(records[-1].end_time) if records else None
    return max(0.0, (d.now - ended).total_seconds()) if ended is not None else 0.0
