"""ttlSecondsAfterFinished: the Job (and its pods) of a finished run goes after the TTL; the run stays."""

from __future__ import annotations

from datetime import timedelta

from tunix_operator import conditions as cond
from tunix_operator.policies.draft import DeleteJob, Draft


def ttl_expired(d: Draft) -> bool:
    """True when the TTL after finishing has expired; otherwise a requeue is set for when it will."""
    ttl = d.spec.ttl_seconds_after_finished
    finished = cond.parse_time(d.new.completion_time)
    if ttl is None or finished is None:
        return False
    due = finished + timedelta(seconds=ttl)
    if d.now >= due:
        return True
    d.requeue_in((due - d.now).total_seconds())
    return False


def delete_when_expired(d: Draft) -> None:
    """Delete the finished run's Job once its TTL has expired."""
    job = d.observed.job
    if job is None or d.run is None or not ttl_expired(d):
        return
    name = job["metadata"]["name"]
    d.actions.append(DeleteJob(name, "TTLExpired"))
    d.event("Normal", "TTLExpired", f"deleted Job {name} (ttlSecondsAfterFinished)")
