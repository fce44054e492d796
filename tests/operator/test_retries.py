"""policies.retries: budgets, backoff and the next attempt (pure)."""

from __future__ import annotations

from tests.operator.drafting import draft
from tests.operator.factories import at, run_body
from tunix_api.exit_codes import ExitClass
from tunix_api.run import RetryPolicy
from tunix_operator.observe import AttemptState, Outcome
from tunix_operator.policies import retries
from tunix_operator.state import CreateAttempt

RUNNING = {"phase": "Running", "attempt": 0, "restarts": 0, "preemptions": 0}


def failed(exit_class: ExitClass, reason: str, code: int | None) -> AttemptState:
    return AttemptState(Outcome.FAILED, reason=reason, exit_class=exit_class, exit_code=code)


def test_backoff_doubles_from_the_first_restart_and_is_capped() -> None:
    policy = RetryPolicy(backoff_seconds=3, max_backoff_seconds=10)
    assert [retries.backoff_seconds(policy, n) for n in range(6)] == [0, 3, 6, 10, 10, 10]


def test_a_retryable_failure_waits_for_its_backoff() -> None:
    d = draft(run_body(status=RUNNING), now=at(10))
    retries.failed_attempt(d, failed(ExitClass.RETRYABLE, "Failed", 1))
    assert (d.new.attempt, d.new.restarts, d.new.phase) == (1, 1, "Restarting")
    assert retries.restart_due(d) == (10.0, 10.0) and d.actions == []


def test_a_preemption_restarts_at_once_without_spending_restarts() -> None:
    d = draft(run_body(status=RUNNING), now=at(10))
    retries.failed_attempt(d, failed(ExitClass.PREEMPTED, "Evicted", None))
    assert (d.new.attempt, d.new.restarts, d.new.preemptions) == (1, 0, 1)
    assert CreateAttempt(1) in d.actions


def test_a_fatal_exit_fails_the_run_and_closes_the_attempt_record() -> None:
    status = RUNNING | {"attempts": [{"index": 0, "startTime": "2026-01-01T12:00:00Z"}]}
    d = draft(run_body(status=status), now=at(10))
    retries.failed_attempt(d, failed(ExitClass.FATAL, "Diverged", 3))
    assert d.new.phase == "Failed"
    record = d.new.attempts[0]
    assert (record.outcome, record.exit_code, record.reason) == ("Fatal", 3, "Diverged")
