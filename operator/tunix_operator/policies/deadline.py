"""activeDeadlineSeconds: the run fails once it has been active that long (not while suspended)."""

from __future__ import annotations

from datetime import timedelta

from tunix_operator import conditions as cond
from tunix_operator.policies import terminal
from tunix_operator.policies.draft import Draft


def deadline_exceeded(d: Draft) -> bool:
    """Fail the run when its deadline has passed (True); otherwise requeue for when it will."""
    deadline = d.spec.active_deadline_seconds
    started = cond.parse_time(d.new.start_time)
    if deadline is None or started is None or d.spec.suspend:
        return False
    due = started + timedelta(seconds=deadline)
    if d.now < due:
        d.requeue_in((due - d.now).total_seconds())
        return False
    terminal.fail(d, "DeadlineExceeded", f"the run was active longer than activeDeadlineSeconds={deadline}")
    return True
