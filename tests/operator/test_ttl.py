"""policies.ttl: the TTL after a run finished (pure)."""

from __future__ import annotations

from tests.operator.drafting import draft
from tests.operator.factories import at, job, run_body
from tunix_operator.policies import ttl
from tunix_operator.state import DeleteJob, Observed

FINISHED = {"phase": "Succeeded", "attempt": 0, "completionTime": "2026-01-01T12:01:40Z"}  # at(100)


def test_ttl_expired_is_true_only_after_the_ttl_and_requeues_until_then() -> None:
    body = run_body(status=FINISHED, ttlSecondsAfterFinished=60)
    early = draft(body, now=at(130))
    assert not ttl.ttl_expired(early) and early.requeue == 30
    late = draft(body, now=at(160))
    assert ttl.ttl_expired(late) and late.requeue is None


def test_no_ttl_no_requeue() -> None:
    d = draft(run_body(status=FINISHED), now=at(10_000))
    assert not ttl.ttl_expired(d) and d.requeue is None


def test_the_job_goes_once_expired_with_an_event() -> None:
    d = draft(run_body(status=FINISHED, ttlSecondsAfterFinished=0), Observed(job=job()), at(101))
    ttl.delete_when_expired(d)
    assert d.actions == [DeleteJob("r1-0", "TTLExpired")]
    assert [e.reason for e in d.events] == ["TTLExpired"]
    gone = draft(run_body(status=FINISHED, ttlSecondsAfterFinished=0), Observed(), at(101))
    ttl.delete_when_expired(gone)
    assert gone.actions == [] and gone.events == []
