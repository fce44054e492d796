"""Creating attempts: one Job per attempt, never beside pods of an earlier attempt still stopping."""

from __future__ import annotations

from tunix_api.run import CheckpointStatus, Phase
from tunix_operator import conditions as cond
from tunix_operator.manifests import job_name, pvc_name
from tunix_operator.observe import pods_running, stop_due
from tunix_operator.policies import history
from tunix_operator.policies.draft import CreateAttempt, DeleteJob, Draft


def create(d: Draft, attempt: int, phase: Phase, reason: str, waited_seconds: float = 0.0) -> bool:
    """Create attempt ``attempt`` (deleting the previous one's Job); False while waiting for
    pods of an earlier attempt to stop. ``waited_seconds``: how long the run waited on purpose
    before it (backoff, suspension), for goodput."""
    if earlier_pods_still_stopping(d, attempt):
        return False
    if attempt > 0:
        d.actions.append(DeleteJob(job_name(d.name, attempt - 1), "Superseded"))
    d.actions.append(CreateAttempt(attempt))
    d.new.attempt = attempt
    d.new.phase = phase
    # What the Job's appearance will show (no pod running yet), so that it costs no status patch.
    d.new.message = pods_running(0, d.spec.accelerator.hosts)
    d.new.checkpoint = checkpoint_status(d, d.new.checkpoint)
    d.condition(cond.RUNNING, False, "PodsPending", d.new.message)
    d.clear(cond.RESTARTING, "AttemptCreated")
    d.event("Normal", reason, f"created Job {job_name(d.name, attempt)} (attempt {attempt})")
    history.begin(d, attempt, waited_seconds)
    return True


def earlier_pods_still_stopping(d: Draft, attempt: int) -> bool:
    """Whether to wait for pods of an earlier attempt: a trainer told to stop (deleted, or evicted by
    its kubelet without being deleted) may still be writing its final checkpoint and metrics to the
    same places the next attempt uses. Pods not told yet (a healthy member of a gang) are told by
    deleting their Job. The wait ends when all are terminal or gone, or at their grace period plus
    a margin."""
    lingering = [p for p in d.pods if p.attempt != attempt and not p.terminal]
    if not lingering:
        return False
    due = [stop_due(p) for p in lingering]
    job = d.observed.job
    deleting = d.job_deleting() or any(
        isinstance(a, DeleteJob) and job is not None and a.name == job["metadata"]["name"] for a in d.actions
    )
    if None in due and job is not None and not deleting:
        d.actions.append(DeleteJob(job["metadata"]["name"], "Superseded"))
    if all(when is not None and d.now >= when for when in due):
        names = ", ".join(p.name for p in lingering)
        d.event("Warning", "StopTimedOut", f"{names} still not stopped after the grace period")
        return False
    d.new.message = (
        f"waiting for {len(lingering)} pod(s) of an earlier attempt to stop "
        "(a final checkpoint may be saving)"
    )
    d.requeue_in(d.settings.restart_settle_seconds)
    return True


def checkpoint_status(d: Draft, current: CheckpointStatus | None) -> CheckpointStatus | None:
    """status.checkpoint for a new attempt: the location, the newest step kept; not resumed yet."""
    if d.benchmark:
        return current
    volume = d.spec.checkpoint.volume
    uri = d.spec.checkpoint.uri
    if uri is None and volume is not None:
        uri = f"pvc://{volume.claim_name or pvc_name(d.name)}"
    if uri is None and current is None:
        return None
    if current is None:
        return CheckpointStatus(uri=uri)
    return current.model_copy(update={"uri": uri, "restored_from": None})
