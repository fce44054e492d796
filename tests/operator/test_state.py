"""The state machine, scenario by scenario (pure: no API, no clock)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from tests.operator.factories import at, job, pod, run_body
from tunix_api.run import RetryPolicy
from tunix_operator.settings import OperatorSettings
from tunix_operator.state import (
    CreateAttempt,
    Decision,
    DeleteJob,
    Observed,
    backoff_seconds,
    decide,
    fail,
    merge_patch,
    reads_needed,
)

SETTINGS = OperatorSettings(artifacts_base_uri="s3://bucket/runs", progress_interval_seconds=7)
SUMMARY = {
    "finalLoss": 1.25,
    "bestLoss": 1.2,
    "bestStep": 90,
    "totalSteps": 100,
    "totalTokens": 51200,
    "avgTokensPerSecond": 900.0,
    "wallTimeSeconds": 60.0,
    "provenance": {"jax": "0.10.2"},
}


def step(body: dict[str, Any], observed: Observed | None = None, now: datetime | None = None) -> Decision:
    """Decide, then apply the status like the API server would (so steps chain)."""
    decision = decide(body, observed or Observed(), now or at(0), SETTINGS)
    body["status"] = decision.status
    return decision


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def started(**spec: Any) -> dict[str, Any]:
    body = run_body(**spec)
    step(body)
    return body


def test_new_run_creates_attempt_zero() -> None:
    body = run_body()
    decision = step(body)
    assert decision.actions == [CreateAttempt(0)]
    status = body["status"]
    assert status["phase"] == "Pending"
    assert (status["attempt"], status["restarts"], status["preemptions"]) == (0, 0, 0)
    assert status["startTime"] == "2026-01-01T12:00:00Z"
    assert status["metricsUri"] == "s3://bucket/runs/ns/r1/metrics.jsonl"
    assert status["observedGeneration"] == 1
    assert reasons(decision) == ["Created"]


def test_second_decision_on_same_observation_changes_nothing() -> None:
    body = started()
    observed = Observed(job=job(), pods=[pod(phase="Pending")])
    step(body, observed, at(5))
    again = step(body, observed, at(9))
    assert again.status_patch == {}
    assert again.actions == [] and again.events == []


@pytest.mark.parametrize(
    ("pod_kwargs", "reason"),
    [
        ({"phase": "Pending", "waiting": "ImagePullBackOff"}, "ImagePullBackOff"),
        ({"phase": "Pending", "waiting": "ErrImagePull"}, "ErrImagePull"),
        ({"phase": "Pending", "waiting": "InvalidImageName"}, "InvalidImageName"),
        ({"phase": "Pending", "unschedulable": "0/3 nodes have nvidia.com/gpu"}, "Unschedulable"),
    ],
)
def test_pending_problems_become_condition_and_one_warning(pod_kwargs: dict[str, Any], reason: str) -> None:
    body = started()
    observed = Observed(job=job(), pods=[pod(**pod_kwargs)])
    first = step(body, observed, at(5))
    assert body["status"]["phase"] == "Pending"
    cond = condition(body, "Running")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert body["status"]["message"]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", reason)]
    second = step(body, observed, at(30))
    assert second.events == []
    assert condition(body, "Running")["lastTransitionTime"] == cond["lastTransitionTime"]


def test_running_merges_progress_with_step_of_total() -> None:
    body = started()
    progress = {
        "step": 40,
        "totalSteps": 100,
        "loss": 2.5,
        "tokensPerSecond": 1000.0,
        "etaSeconds": 30.0,
        "updatedAt": "2026-01-01T12:01:00Z",
    }
    decision = step(body, Observed(job=job(), pods=[pod()], progress=progress), at(60))
    assert body["status"]["phase"] == "Running"
    assert body["status"]["progress"]["stepOfTotal"] == "40/100"
    assert body["status"]["progress"]["loss"] == 2.5
    assert condition(body, "Running")["status"] == "True"
    assert reasons(decision) == ["Running"]
    assert decision.requeue_after == 7
    same = step(body, Observed(job=job(), pods=[pod()], progress=progress), at(70))
    assert same.status_patch == {} and same.events == []


def test_the_step_an_attempt_resumed_from_reaches_status_checkpoint() -> None:
    body = started(checkpoint={"uri": "s3://b/ckpt"})
    progress = {"step": 41, "totalSteps": 100, "restoredFrom": 40, "updatedAt": "2026-01-01T12:01:00Z"}
    step(body, Observed(job=job(), pods=[pod()], progress=progress), at(60))
    assert body["status"]["checkpoint"] == {"uri": "s3://b/ckpt", "restoredFrom": 40}
    assert body["status"]["progress"]["restoredFrom"] == 40


def test_a_succeeded_train_run_points_at_its_exported_model() -> None:
    body = started()
    summary = json.dumps({"finalLoss": 1.0, "totalSteps": 20})
    step(body, Observed(job=job(), pods=[pod(phase="Succeeded", exit_code=0, message=summary)]), at(60))
    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["model"]["uri"].endswith("/ns/r1/model")


def test_progress_older_than_the_run_is_ignored() -> None:
    body = started()
    stale = {"step": 99, "totalSteps": 100, "updatedAt": "2025-12-31T00:00:00Z"}
    step(body, Observed(job=job(), pods=[pod()], progress=stale), at(60))
    assert "progress" not in body["status"]


def test_success_takes_summary_from_termination_message() -> None:
    body = started()
    pods = [pod(phase="Succeeded", exit_code=0, message=json.dumps(SUMMARY))]
    decision = step(body, Observed(job=job(condition="Complete"), pods=pods), at(100))
    status = body["status"]
    assert status["phase"] == "Succeeded"
    assert status["completionTime"] == "2026-01-01T12:01:40Z"
    assert status["summary"]["finalLoss"] == 1.25
    assert status["summary"]["totalSteps"] == 100
    assert status["provenance"] == {"jax": "0.10.2"}
    assert status["progress"]["stepOfTotal"] == "100/100"
    assert condition(body, "Succeeded")["status"] == "True"
    assert reasons(decision) == ["Succeeded"]
    assert decision.actions == []


def test_success_falls_back_to_summary_json() -> None:
    body = started()
    pods = [pod(phase="Succeeded", exit_code=0, message="last log line, not JSON")]
    step(body, Observed(job=job(condition="Complete"), pods=pods, summary=SUMMARY), at(100))
    assert body["status"]["summary"]["bestStep"] == 90


def test_success_of_every_index_without_job_condition_is_success() -> None:
    body = started(accelerator={"type": "nvidia.com/gpu", "hosts": 2})
    pods = [pod(index=i, phase="Succeeded", exit_code=0) for i in range(2)]
    step(body, Observed(job=job(), pods=pods), at(100))
    assert body["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize(("code", "reason"), [(2, "InvalidConfig"), (3, "Diverged"), (4, "DataError")])
def test_fatal_exit_fails_at_once_with_the_trainer_message(code: int, reason: str) -> None:
    body = started()
    pods = [pod(phase="Failed", exit_code=code, message="loss is nan at step 12")]
    decision = step(body, Observed(job=job(condition="Failed"), pods=pods), at(50))
    assert body["status"]["phase"] == "Failed"
    assert condition(body, "Failed")["reason"] == reason
    assert "loss is nan at step 12" in body["status"]["message"]
    assert not any(isinstance(a, CreateAttempt) for a in decision.actions)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", reason)]


def test_retryable_exit_backs_off_then_restarts() -> None:
    body = started()
    failed = Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=1, message="boom")])
    decision = step(body, failed, at(50))
    status = body["status"]
    assert (status["phase"], status["attempt"], status["restarts"], status["preemptions"]) == (
        "Restarting",
        1,
        1,
        0,
    )
    assert decision.actions == []
    assert decision.requeue_after == 10
    assert reasons(decision) == ["Restarting"]
    assert condition(body, "Restarting")["status"] == "True"
    # Before the backoff: still waiting, restarts not counted twice.
    waiting = step(body, Observed(pods=failed.pods), at(55))
    assert waiting.actions == [] and waiting.requeue_after == 5
    assert body["status"]["restarts"] == 1
    # After the backoff: the previous Job goes, attempt 1 is created.
    due = step(body, Observed(pods=failed.pods), at(60))
    assert due.actions == [DeleteJob("r1-0", "Superseded"), CreateAttempt(1)]
    assert body["status"]["phase"] == "Restarting"
    assert condition(body, "Restarting")["status"] == "False"
    running = step(body, Observed(job=job("r1-1"), pods=[pod(attempt=1)]), at(70))
    assert body["status"]["phase"] == "Running"
    assert reasons(running) == ["Running"]


def test_second_failure_waits_again_for_a_doubled_backoff() -> None:
    body = started()
    step(body, Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=1)]), at(10))
    step(body, Observed(), at(20))  # attempt 1 created
    decision = step(
        body,
        Observed(job=job("r1-1", condition="Failed"), pods=[pod(attempt=1, phase="Failed", exit_code=137)]),
        at(30),
    )
    assert body["status"]["restarts"] == 2
    assert decision.requeue_after == 20
    assert condition(body, "Restarting")["reason"] == "Killed"


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff_seconds=10, max_backoff_seconds=25)
    assert [backoff_seconds(policy, n) for n in range(5)] == [0, 10, 20, 25, 25]


def test_retry_budget_spent_fails_the_run() -> None:
    body = started()
    body["status"]["restarts"] = 2
    decision = step(
        body, Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=1)]), at(9)
    )
    assert body["status"]["phase"] == "Failed"
    assert condition(body, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "maxRestarts=2" in body["status"]["message"]
    assert not any(isinstance(a, CreateAttempt) for a in decision.actions)


@pytest.mark.parametrize(
    "pod_kwargs",
    [
        {"phase": "Failed", "reason": "Evicted"},
        {"phase": "Failed", "exit_code": 137, "disruption": "PreemptionByScheduler"},
        {"phase": "Failed", "exit_code": 75},
        {"phase": "Failed", "exit_code": 143},
    ],
)
def test_preemption_recreates_at_once_without_spending_restarts(pod_kwargs: dict[str, Any]) -> None:
    body = started()
    decision = step(body, Observed(job=job(), pods=[pod(**pod_kwargs)]), at(40))
    status = body["status"]
    assert (status["attempt"], status["restarts"], status["preemptions"]) == (1, 0, 1)
    assert decision.actions == [DeleteJob("r1-0", "Superseded"), CreateAttempt(1)]
    assert reasons(decision) == ["Preempted", "Restarted"]


def test_an_evicted_pod_still_stopping_holds_the_next_attempt_until_it_is_terminal() -> None:
    """A kubelet eviction (DisruptionTarget + SIGTERM, the pod not deleted): the trainer may still be
    writing its final checkpoint, so the next attempt waits; the old Job is deleted at once."""
    body = started()
    evicted = {"disruption": "TerminationByKubelet", "disrupted_at": at(39), "grace_seconds": 30}
    decision = step(body, Observed(job=job(), pods=[pod(phase="Running", **evicted)]), at(40))
    status = body["status"]
    assert (status["attempt"], status["restarts"], status["preemptions"]) == (1, 0, 1)
    assert status["phase"] == "Restarting"
    assert decision.actions == []  # the kubelet told it to stop; nothing is created while it saves
    assert "waiting for 1 pod(s) of an earlier attempt to stop" in status["message"]
    assert decision.requeue_after is not None
    decision = step(body, Observed(pods=[pod(phase="Running", **evicted)]), at(45))
    assert not any(isinstance(a, CreateAttempt) for a in decision.actions)
    decision = step(body, Observed(pods=[pod(phase="Failed", exit_code=75, **evicted)]), at(50))
    assert CreateAttempt(1) in decision.actions and reasons(decision) == ["Restarted"]
    assert body["status"]["preemptions"] == 1


def test_the_wait_for_a_stopping_pod_ends_at_its_grace_period_plus_a_margin() -> None:
    body = started()
    evicted = {"disruption": "TerminationByKubelet", "disrupted_at": at(40), "grace_seconds": 30}
    step(body, Observed(job=job(), pods=[pod(phase="Running", **evicted)]), at(40))
    held = step(body, Observed(pods=[pod(phase="Running", **evicted)]), at(40 + 30 + 9))
    assert not any(isinstance(a, CreateAttempt) for a in held.actions)
    decision = step(body, Observed(pods=[pod(phase="Running", **evicted)]), at(40 + 30 + 10))
    assert CreateAttempt(1) in decision.actions
    assert reasons(decision) == ["StopTimedOut", "Restarted"]


def test_a_healthy_gang_member_is_told_to_stop_by_deleting_its_job_and_waited_for() -> None:
    body = started(accelerator={"type": "nvidia.com/gpu", "hosts": 2})
    evicted = pod(index=1, phase="Failed", exit_code=75, disruption="PreemptionByScheduler")
    decision = step(body, Observed(job=job(), pods=[pod(index=0, phase="Running"), evicted]), at(40))
    assert decision.actions == [DeleteJob("r1-0", "Superseded")]
    stopping = pod(index=0, phase="Running", deleted_at=at(41 + 30))
    held = step(body, Observed(job=job(deleting=True), pods=[stopping, evicted]), at(42))
    assert held.actions == []
    done = step(body, Observed(pods=[pod(index=0, phase="Failed", exit_code=75), evicted]), at(50))
    assert done.actions == [DeleteJob("r1-0", "Superseded"), CreateAttempt(1)]


def test_a_deleted_pod_is_waited_for_until_its_deletion_timestamp_plus_a_margin() -> None:
    body = started()
    step(body, Observed(job=job(), pods=[pod(phase="Failed", exit_code=75)]), at(5))  # index 0 stopped
    stopping = pod(phase="Running", index=1, deleting=True)  # deletionTimestamp T0
    held = step(body, Observed(pods=[stopping]), at(9))
    assert not any(isinstance(a, CreateAttempt) for a in held.actions)
    decision = step(body, Observed(pods=[stopping]), at(10))
    assert CreateAttempt(1) in decision.actions


def test_preemption_budget_spent_fails_the_run() -> None:
    body = started()
    body["status"]["preemptions"] = 2
    step(body, Observed(job=job(), pods=[pod(phase="Failed", reason="Evicted")]), at(40))
    assert condition(body, "Failed")["reason"] == "PreemptionLimitExceeded"


def test_restart_waits_for_pods_of_the_old_attempt_to_terminate() -> None:
    body = started(accelerator={"type": "nvidia.com/gpu", "hosts": 2})
    stopping = pod(index=1, phase="Running", deleted_at=at(40 + 30))  # deleted at 40 s, 30 s grace
    pods = [pod(index=0, phase="Failed", reason="Evicted"), stopping]
    decision = step(body, Observed(job=job(), pods=pods), at(40))
    assert decision.actions == []
    assert decision.requeue_after == SETTINGS.restart_settle_seconds
    assert body["status"]["preemptions"] == 1
    later = step(body, Observed(pods=[pods[0]]), at(45))
    assert later.actions == [DeleteJob("r1-0", "Superseded"), CreateAttempt(1)]
    assert body["status"]["preemptions"] == 1


def test_multi_host_fatal_wins_over_preempted_and_retryable() -> None:
    body = started(accelerator={"type": "nvidia.com/gpu", "hosts": 3})
    pods = [
        pod(index=0, phase="Failed", exit_code=1),
        pod(index=1, phase="Failed", exit_code=3),
        pod(index=2, phase="Failed", reason="Evicted"),
    ]
    step(body, Observed(job=job(condition="Failed"), pods=pods), at(40))
    assert condition(body, "Failed")["reason"] == "Diverged"


def test_multi_host_partially_running_is_pending() -> None:
    body = started(accelerator={"type": "nvidia.com/gpu", "hosts": 2})
    step(body, Observed(job=job(), pods=[pod(index=0), pod(index=1, phase="Pending")]), at(5))
    assert body["status"]["phase"] == "Pending"
    assert condition(body, "Running")["message"] == "1/2 pods running"


def test_job_failed_without_pods_is_retryable() -> None:
    body = started()
    step(body, Observed(job=job(condition="Failed", reason="DeadlineExceeded")), at(5))
    assert body["status"]["restarts"] == 1
    assert condition(body, "Restarting")["reason"] == "DeadlineExceeded"


def test_missing_job_mid_run_is_recreated_under_the_same_attempt() -> None:
    body = started()
    step(body, Observed(job=job(), pods=[pod()]), at(5))
    decision = step(body, Observed(), at(10))
    assert decision.actions == [CreateAttempt(0)]
    assert body["status"]["phase"] == "Pending"


def test_suspend_deletes_the_job_and_resume_creates_the_next_attempt() -> None:
    body = started()
    step(body, Observed(job=job(), pods=[pod()]), at(5))
    body["spec"]["suspend"] = True
    decision = step(body, Observed(job=job(), pods=[pod()]), at(10))
    assert decision.actions == [DeleteJob("r1-0", "Suspended")]
    assert body["status"]["phase"] == "Suspended"
    assert condition(body, "Suspended")["status"] == "True"
    assert reasons(decision) == ["Suspended"]
    assert step(body, Observed(), at(20)).actions == []
    body["spec"]["suspend"] = False
    # Pods of attempt 0 still saving their checkpoint: wait.
    waiting = step(body, Observed(pods=[pod(deleted_at=at(10 + 30))]), at(30))
    assert waiting.actions == [] and body["status"]["phase"] == "Suspended"
    resumed = step(body, Observed(), at(40))
    assert resumed.actions == [DeleteJob("r1-0", "Superseded"), CreateAttempt(1)]
    status = body["status"]
    assert (status["phase"], status["attempt"], status["restarts"], status["preemptions"]) == (
        "Pending",
        1,
        0,
        0,
    )
    assert status["startTime"] == "2026-01-01T12:00:40Z"
    assert condition(body, "Suspended")["status"] == "False"
    assert reasons(resumed) == ["Resumed"]


def test_suspended_before_first_attempt_creates_nothing() -> None:
    body = run_body(suspend=True)
    decision = step(body)
    assert decision.actions == [] and body["status"]["phase"] == "Suspended"
    body["spec"]["suspend"] = False
    assert step(body, now=at(5)).actions == [CreateAttempt(0)]


def test_deadline_fails_the_run_and_stops_the_job() -> None:
    body = started(activeDeadlineSeconds=100)
    early = step(body, Observed(job=job(), pods=[pod()]), at(30))
    assert early.requeue_after == 7
    late = step(body, Observed(job=job(), pods=[pod()]), at(100))
    assert condition(body, "Failed")["reason"] == "DeadlineExceeded"
    assert late.actions == [DeleteJob("r1-0", "RunFailed")]


def test_ttl_deletes_the_job_after_finishing_and_keeps_the_run() -> None:
    body = started(ttlSecondsAfterFinished=60)
    done = Observed(job=job(condition="Complete"), pods=[pod(phase="Succeeded", exit_code=0)])
    finished = step(body, done, at(100))
    assert finished.requeue_after == 60
    assert step(body, done, at(130)).actions == []
    expired = step(body, done, at(161))
    assert expired.actions == [DeleteJob("r1-0", "TTLExpired")]
    assert reasons(expired) == ["TTLExpired"]
    assert step(body, Observed(), at(170)).actions == []
    assert body["status"]["phase"] == "Succeeded"


def test_terminal_runs_never_get_children() -> None:
    body = started()
    step(body, Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=2)]), at(5))
    for now in (at(10), at(1000)):
        decision = step(body, Observed(), now)
        assert decision.actions == [] and decision.status_patch == {}


def test_invalid_spec_fails_with_the_pydantic_message() -> None:
    body = run_body(training={"steps": 0})
    decision = step(body)
    assert body["status"]["phase"] == "Failed"
    assert condition(body, "Failed")["reason"] == "InvalidSpec"
    assert "spec.training.steps" in body["status"]["message"]
    assert decision.actions == []
    assert step(body, now=at(10)).events == []


def test_too_long_name_fails_as_invalid_spec() -> None:
    body = run_body(name="x" * 60)
    step(body)
    assert condition(body, "Failed")["reason"] == "InvalidSpec"


def test_fail_helper_marks_failed_once() -> None:
    body = started()
    decision = fail(body, "OperatorError", "bug", at(5), SETTINGS)
    assert decision.status["phase"] == "Failed"
    body["status"] = decision.status
    assert fail(body, "OperatorError", "bug", at(6), SETTINGS).status_patch == {}


def test_fail_helper_schedules_the_ttl_like_any_failure() -> None:
    body = started(ttlSecondsAfterFinished=30)
    decision = fail(body, "OperatorError", "bug", at(5), SETTINGS)
    assert decision.requeue_after == 30  # not left to the resync interval


def test_merge_patch_sets_changed_and_nulls_removed_keys() -> None:
    assert merge_patch({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5}) == {"b": 5, "c": None}


def test_reads_needed_only_when_useful() -> None:
    body = started()
    assert reads_needed(body, job(), [pod()]) == (True, False)
    assert reads_needed(body, job(), [pod(phase="Pending")]) == (False, False)
    done = [pod(phase="Succeeded", exit_code=0, message="not json")]
    assert reads_needed(body, job(condition="Complete"), done) == (False, True)
    done_json = [pod(phase="Succeeded", exit_code=0, message=json.dumps(SUMMARY))]
    assert reads_needed(body, job(condition="Complete"), done_json) == (False, False)
