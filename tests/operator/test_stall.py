"""policies.stall on its own (the scenario through decide is in test_attempts.py)."""

from __future__ import annotations

from tests.operator.drafting import draft
from tests.operator.factories import at, job, pod, run_body
from tunix_operator.policies import stall
from tunix_operator.state import DeleteJob, Observed

RECORD = {
    "index": 0,
    "startTime": "2026-01-01T12:00:00Z",
    "firstStep": 1,
    "firstStepTime": "2026-01-01T12:00:10Z",
    "lastStep": 9,
    "lastStepTime": "2026-01-01T12:00:20Z",
}
RUNNING = {"phase": "Running", "attempt": 0, "restarts": 0, "preemptions": 0, "attempts": [RECORD]}
PROGRESS = {"attempt": 0, "step": 9, "updatedAt": "2026-01-01T12:00:20Z"}


def body(**policy: int) -> dict:
    b = run_body(status=RUNNING)
    b["spec"]["retryPolicy"].update(policy)
    return b


def test_not_stalled_before_the_timeout_requeues_for_it() -> None:
    d = draft(body(stallTimeoutSeconds=60), Observed(job=job(), pods=[pod()], progress=PROGRESS), at(50))
    assert not stalled(d) and d.requeue == 30  # step 9 at 20 s, due at 80 s


def test_stalled_at_the_timeout() -> None:
    d = draft(body(stallTimeoutSeconds=60), Observed(job=job(), pods=[pod()], progress=PROGRESS), at(80))
    assert stalled(d)
    assert d.actions[0] == DeleteJob("r1-0", "Stalled")
    assert d.new.attempts[0].outcome == "Stalled" and d.new.restarts == 1


def test_off_without_a_timeout_or_without_readable_progress() -> None:
    assert not stalled(draft(body(), Observed(job=job(), pods=[pod()], progress=PROGRESS), at(10_000)))
    assert not stalled(draft(body(stallTimeoutSeconds=60), Observed(job=job(), pods=[pod()]), at(10_000)))


def stalled(d) -> bool:
    return stall.stalled(d)
