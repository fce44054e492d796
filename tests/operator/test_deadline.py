"""policies.deadline: activeDeadlineSeconds (pure)."""

from __future__ import annotations

from tests.operator.drafting import draft
from tests.operator.factories import at, job, run_body
from tunix_operator.policies import deadline
from tunix_operator.state import DeleteJob, Observed

STARTED = {"phase": "Running", "attempt": 0, "startTime": "2026-01-01T12:00:00Z"}


def test_before_the_deadline_a_requeue_for_it() -> None:
    d = draft(run_body(status=STARTED, activeDeadlineSeconds=100), now=at(30))
    assert not deadline.deadline_exceeded(d) and d.requeue == 70


def test_at_the_deadline_the_run_fails_and_its_job_stops() -> None:
    d = draft(run_body(status=STARTED, activeDeadlineSeconds=100), Observed(job=job()), at(100))
    assert deadline.deadline_exceeded(d)
    assert d.new.phase == "Failed" and d.actions == [DeleteJob("r1-0", "RunFailed")]


def test_a_suspended_run_has_no_deadline() -> None:
    d = draft(run_body(status=STARTED, activeDeadlineSeconds=100, suspend=True), now=at(1000))
    assert not deadline.deadline_exceeded(d) and d.requeue is None
