"""status.attempts, status.checkpoint (live) and status.goodput through the state machine (pure).

The long test drives ``decide`` through the timeline of tests/operator/test_goodput.py: a 200-step run
preempted twice and stalled once, every figure checkable by hand there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator.factories import at, job, pod, run_body
from tests.operator.test_goodput import TIMELINE
from tests.operator.test_state import condition, reasons, step
from tunix_api.run import AttemptRecord
from tunix_operator.conditions import format_time
from tunix_operator.observe import CHECKPOINT_TIME_ANNOTATION
from tunix_operator.policies.history import MAX_ATTEMPTS
from tunix_operator.state import AnnotatePods, CreateAttempt, DeleteJob, Observed, reads_needed


def progress(attempt: int, step: int, when: float, **extra: Any) -> dict[str, Any]:
    doc = {"attempt": attempt, "step": step, "totalSteps": 200, "updatedAt": format_time(at(when))}
    return doc | extra


def ckpt(step: int, when: float) -> dict[str, Any]:
    return {"checkpointStep": step, "checkpointTime": format_time(at(when))}


def running(attempt: int, doc: dict[str, Any] | None, node: str = "n1") -> Observed:
    p = pod(attempt=attempt)
    p["spec"]["nodeName"] = node
    return Observed(job=job(f"r1-{attempt}"), pods=[p], progress=doc)


def test_preempted_twice_and_stalled_once_in_a_200_step_run() -> None:
    body = run_body(training={"steps": 200, "batchSize": 8, "seqLen": 64}, checkpoint={"uri": "s3://b/ck"})
    body["spec"]["retryPolicy"]["stallTimeoutSeconds"] = 60
    step(body, now=at(0))
    # attempt 0: steps 1..80, preempted at 100 after saving 80
    step(body, running(0, None), at(5))
    step(body, running(0, progress(0, 1, 20)), at(21))
    step(body, running(0, progress(0, 50, 69) | ckpt(50, 70)), at(70))
    step(body, running(0, progress(0, 80, 99) | ckpt(50, 70)), at(99))
    final0 = progress(0, 80, 100) | ckpt(80, 100)
    preempted = Observed(job=job("r1-0"), pods=[pod(phase="Failed", exit_code=75)], progress=final0)
    decision = step(body, preempted, at(100))
    assert CreateAttempt(1) in decision.actions
    assert body["status"]["checkpoint"]["latestStep"] == 80
    # attempt 1: resumes from 80, steps 81..120, preempted at 170 after saving 120
    step(body, running(1, final0, node="n2"), at(105))  # attempt 0's file: not attributed to attempt 1
    assert "firstStep" not in body["status"]["attempts"][1]
    step(body, running(1, progress(1, 81, 130, restoredFrom=80) | ckpt(80, 100), node="n2"), at(130))
    assert body["status"]["checkpoint"]["restoredFrom"] == 80
    step(body, running(1, progress(1, 120, 169, restoredFrom=80) | ckpt(100, 150), node="n2"), at(169))
    final1 = progress(1, 120, 170, restoredFrom=80) | ckpt(120, 170)
    failed = Observed(job=job("r1-1"), pods=[pod(attempt=1, phase="Failed", exit_code=75)], progress=final1)
    assert CreateAttempt(2) in step(body, failed, at(170)).actions
    # attempt 2: resumes from 120, steps 121..160 (saved 150), then hangs
    step(body, running(2, progress(2, 121, 190, restoredFrom=120) | ckpt(120, 170)), at(190))
    hung = progress(2, 160, 229, restoredFrom=120) | ckpt(150, 201)
    step(body, running(2, hung), at(229))
    waiting = step(body, running(2, hung), at(250))
    assert waiting.requeue_after == 7  # the progress interval comes before the stall deadline (289)
    stalled = step(body, running(2, hung), at(289))
    assert reasons(stalled) == ["Stalled", "Restarting"]
    assert DeleteJob("r1-2", "Stalled") in stalled.actions
    assert condition(body, "Stalled")["status"] == "True"
    assert condition(body, "Stalled")["reason"] == "StepStalled"
    assert (body["status"]["phase"], body["status"]["restarts"], body["status"]["preemptions"]) == (
        "Restarting",
        1,
        2,
    )
    assert stalled.requeue_after == 10  # the backoff
    # attempt 3: resumes from 150 after the 10 s backoff, steps 151..200, succeeds at 375
    assert CreateAttempt(3) in step(body, Observed(), at(299)).actions
    step(body, running(3, progress(3, 151, 320, restoredFrom=150) | ckpt(150, 201)), at(320))
    assert condition(body, "Stalled")["status"] == "False"
    step(body, running(3, progress(3, 200, 369, restoredFrom=150) | ckpt(150, 201)), at(369))
    summary = json.dumps({"finalLoss": 1.5, "totalSteps": 200})
    done = Observed(
        job=job("r1-3", condition="Complete"),
        pods=[pod(attempt=3, phase="Succeeded", exit_code=0, message=summary)],
    )
    step(body, done, at(375))

    status = body["status"]
    assert status["phase"] == "Succeeded"
    kept = ("index", "start_time", "end_time", "outcome", "restored_from", "first_step", "last_step")
    got = [AttemptRecord.model_validate(r) for r in status["attempts"]]
    assert [r.model_dump(include=set(kept)) for r in got] == [
        r.model_dump(include=set(kept)) for r in TIMELINE
    ]
    assert [r.waited_seconds for r in got] == [None, None, None, 10]
    assert [r.exit_code for r in got] == [75, 75, None, 0]
    assert [r.nodes for r in got] == [["n1"], ["n2"], ["n1"], ["n1"]]
    assert [r.reason for r in got] == ["Preempted", "Preempted", "StepStalled", "Completed"]
    # the figures worked out by hand in test_goodput.py
    goodput = status["goodput"]
    assert goodput["wallSeconds"] == 375
    assert goodput["productiveSeconds"] == pytest.approx(79 + 39 + 39 + 55 * 40 / 49, abs=0.05)
    assert goodput["lostSeconds"] == {
        "rework": pytest.approx(55 * 9 / 49, abs=0.05),
        "restart": 153.0,
        "idle": 10.0,
    }
    assert goodput["stepsLost"] == 10
    assert goodput["goodputPercent"] == 53.8
    assert status["checkpoint"] == {"uri": "s3://b/ck", "latestStep": 200, "latestTime": format_time(at(201)),
                                    "restoredFrom": 150}  # fmt: skip


def test_the_checkpoint_time_reaches_the_pods_of_the_attempt_as_an_annotation() -> None:
    body = run_body()
    step(body)
    decision = step(body, running(0, progress(0, 10, 30) | ckpt(10, 29)), at(30))
    when = format_time(at(29))
    assert body["status"]["checkpoint"] == {"latestStep": 10, "latestTime": when}
    assert decision.actions == [AnnotatePods(("r1-0-0-x",), ((CHECKPOINT_TIME_ANNOTATION, when),))]
    annotated = running(0, progress(0, 11, 31) | ckpt(10, 29))
    annotated.pods[0]["metadata"]["annotations"][CHECKPOINT_TIME_ANNOTATION] = when
    assert step(body, annotated, at(31)).actions == []


def test_the_startup_timeout_counts_from_the_pods_running_to_the_first_step() -> None:
    body = run_body()
    body["spec"]["retryPolicy"]["startupTimeoutSeconds"] = 30
    step(body)
    step(body, Observed(job=job(), pods=[pod(phase="Pending")]), at(100))  # scheduling does not count
    first = step(body, running(0, None), at(200))
    assert first.requeue_after == 7
    quiet = step(body, running(0, None), at(229))
    assert quiet.requeue_after == 1
    stalled = step(body, running(0, None), at(230))
    assert condition(body, "Stalled")["reason"] == "StartupTimeout"
    assert body["status"]["restarts"] == 1 and body["status"]["attempts"][0]["outcome"] == "Stalled"
    assert DeleteJob("r1-0", "Stalled") in stalled.actions


def test_unreadable_progress_is_no_evidence_of_a_stall() -> None:
    body = run_body()
    body["spec"]["retryPolicy"]["stallTimeoutSeconds"] = 60
    step(body)
    step(body, running(0, progress(0, 5, 10)), at(10))
    outage = step(body, running(0, None), at(500))
    assert body["status"]["phase"] == "Running" and outage.events == []


def test_a_stall_spends_max_restarts() -> None:
    body = run_body()
    body["spec"]["retryPolicy"]["stallTimeoutSeconds"] = 60
    step(body)
    body["status"]["restarts"] = 2  # maxRestarts of the factory spec
    step(body, running(0, progress(0, 5, 10)), at(10))
    step(body, running(0, progress(0, 5, 10)), at(70))
    assert condition(body, "Failed")["reason"] == "BackoffLimitExceeded"
    assert body["status"]["attempts"][0]["outcome"] == "Stalled"


def test_stall_detection_is_off_by_default() -> None:
    body = run_body()
    step(body)
    step(body, running(0, progress(0, 5, 10)), at(10))
    quiet = step(body, running(0, progress(0, 5, 10)), at(10_000))
    assert body["status"]["phase"] == "Running" and quiet.events == []


def test_the_history_keeps_the_newest_attempts_and_folds_the_rest() -> None:
    body = run_body(retryPolicy={"maxPreemptions": 100, "maxRestarts": 0})
    step(body)
    for attempt in range(MAX_ATTEMPTS + 3):
        t = 100 * attempt
        step(body, running(attempt, progress(attempt, 10 * attempt + 1, t + 10)), at(t + 10))
        evicted = Observed(
            job=job(f"r1-{attempt}"), pods=[pod(attempt=attempt, phase="Failed", reason="Evicted")]
        )
        step(body, evicted, at(t + 100))
    status = body["status"]
    assert len(status["attempts"]) == MAX_ATTEMPTS
    assert status["attempts"][0]["index"] == 4 and status["attempts"][-1]["index"] == MAX_ATTEMPTS + 3
    assert status["earlierAttempts"]["count"] == 4
    assert status["goodput"]["wallSeconds"] == 100 * (MAX_ATTEMPTS + 3)


def test_a_suspension_is_idle_time() -> None:
    body = run_body()
    step(body)
    step(body, running(0, progress(0, 5, 10)), at(10))
    body["spec"]["suspend"] = True
    step(body, running(0, progress(0, 5, 10)), at(20))
    assert body["status"]["attempts"][0]["outcome"] == "Superseded"
    body["spec"]["suspend"] = False
    step(body, Observed(), at(80))
    assert body["status"]["attempts"][1]["waitedSeconds"] == 60
    assert body["status"]["goodput"]["lostSeconds"]["idle"] == 60


def test_an_attempt_preempted_before_its_trainer_exited_gets_the_exit_code_later() -> None:
    body = run_body()
    step(body)
    evicted = {"disruption": "TerminationByKubelet", "disrupted_at": at(39), "grace_seconds": 30}
    step(body, Observed(job=job(), pods=[pod(phase="Running", **evicted)]), at(40))
    record = body["status"]["attempts"][0]
    assert (record["outcome"], record.get("exitCode"), record["reason"]) == (
        "Preempted",
        None,
        "TerminationByKubelet",
    )
    step(body, Observed(pods=[pod(phase="Failed", exit_code=75, **evicted)]), at(50))
    assert body["status"]["attempts"][0]["exitCode"] == 75
    assert [r["index"] for r in body["status"]["attempts"]] == [0, 1]


def test_a_benchmark_has_attempts_but_no_goodput() -> None:
    """A benchmark reports no steps while it runs: a goodput of 0% would only mislead."""
    body = run_body(mode="Benchmark", dataset=None)
    del body["spec"]["dataset"]
    step(body)
    step(body, Observed(job=job(), pods=[pod()]), at(10))
    assert [r["index"] for r in body["status"]["attempts"]] == [0]
    assert "goodput" not in body["status"]


def test_the_final_checkpoint_of_an_evicted_attempt_reaches_its_record() -> None:
    """The kubelet evicts the pod (DisruptionTarget, SIGTERM): the attempt ends at once, while its trainer
    still trains to the step it stops at, saves it and reports it; that report is read until its pod goes."""
    body = run_body()
    step(body)
    step(body, running(0, progress(0, 30, 35)), at(35))
    evicted = {"disruption": "TerminationByKubelet", "disrupted_at": at(39), "grace_seconds": 30}
    stopping = [pod(phase="Running", **evicted)]
    step(body, Observed(job=job(), pods=stopping, progress=progress(0, 30, 35)), at(40))
    assert body["status"]["attempts"][0]["lastStep"] == 30
    assert reads_needed(body, None, stopping) == (True, False)
    final = progress(0, 33, 42) | ckpt(33, 42)
    step(body, Observed(pods=stopping, progress=final), at(43))
    record = body["status"]["attempts"][0]
    assert (record["lastStep"], record["lastStepTime"]) == (33, format_time(at(42)))
    assert body["status"]["checkpoint"]["latestStep"] == 33
    done = step(body, Observed(pods=[pod(phase="Failed", exit_code=75, **evicted)], progress=final), at(45))
    assert CreateAttempt(1) in done.actions and body["status"]["attempts"][0]["exitCode"] == 75
    assert reads_needed(body, None, []) == (False, False)  # its pods gone: nothing more to read
