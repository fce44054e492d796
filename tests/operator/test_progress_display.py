"""status.progress rounded for the printer columns; full precision stays in status.summary."""

from __future__ import annotations

import json

from tests.operator.factories import at, job, pod, run_body
from tests.operator.test_state import step
from tunix_operator.state import Observed
from tunix_operator.trainer_output import parse_progress, significant


def test_progress_is_rounded_as_people_read_it() -> None:
    raw = {"step": 3, "loss": 2.2917981147766113, "tokensPerSecond": 18035.12779362621, "etaSeconds": 41.6,
           "mfu": 0.412345678}  # fmt: skip
    progress = parse_progress(raw)
    assert progress is not None
    assert (progress.loss, progress.tokens_per_second, progress.eta_seconds, progress.mfu) == (
        2.292,
        18035.0,
        42.0,
        0.4123,
    )
    slow = parse_progress({"step": 1, "tokensPerSecond": 12.3456, "loss": float("nan")})
    assert slow is not None and slow.tokens_per_second == 12.35


def test_significant_digits() -> None:
    assert [significant(v) for v in (1.9123456, 0.000123456, 123456.7, 0.0, None)] == [
        1.912,
        0.0001235,
        123500.0,
        0.0,
        None,
    ]


def test_the_summary_keeps_full_precision() -> None:
    body = run_body()
    step(body)
    loss = 1.2345678901234
    message = json.dumps({"finalLoss": loss, "totalSteps": 100, "avgTokensPerSecond": 18035.12779362621})
    step(
        body,
        Observed(job=job(condition="Complete"), pods=[pod(phase="Succeeded", exit_code=0, message=message)]),
        at(9),
    )
    assert body["status"]["summary"]["finalLoss"] == loss
    assert body["status"]["summary"]["avgTokensPerSecond"] == 18035.12779362621


def test_a_succeeded_run_shows_its_mean_throughput_not_the_last_step() -> None:
    body = run_body()
    step(body)
    last = {"step": 99, "totalSteps": 100, "tokensPerSecond": 8475836.7, "updatedAt": "2026-01-01T12:00:08Z"}
    step(body, Observed(job=job(), pods=[pod()], progress=last), at(8))
    message = json.dumps({"finalLoss": 1.25, "totalSteps": 100, "avgTokensPerSecond": 461537.529})
    step(
        body,
        Observed(job=job(condition="Complete"), pods=[pod(phase="Succeeded", exit_code=0, message=message)]),
        at(9),
    )
    assert body["status"]["progress"]["tokensPerSecond"] == 461538
    assert body["status"]["summary"]["avgTokensPerSecond"] == 461537.529
