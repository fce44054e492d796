"""Reading a failed Job's verdict when its pods are gone (pod failure policy messages)."""

from __future__ import annotations

import pytest

from tests.operator.factories import job
from tunix_api.exit_codes import ExitClass
from tunix_operator.manifests import POD_FAILURE_POLICY
from tunix_operator.observe import Outcome, assess, job_failure

DISRUPTED = "Pod ns/r1-0-0-x has condition DisruptionTarget matching FailJob rule at index 0"
EXITED = "Container trainer for pod ns/r1-0-0-x failed with exit code {} matching FailJob rule at index 1"


def failed(reason: str, message: str) -> dict:
    return {"type": "Failed", "status": "True", "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (failed("PodFailurePolicy", DISRUPTED),
         (ExitClass.PREEMPTED, "DisruptionTarget", None)),
        (failed("PodFailurePolicy", EXITED.format(3)),
         (ExitClass.FATAL, "Diverged", 3)),
        (failed("PodFailurePolicy", EXITED.format(75)),
         (ExitClass.PREEMPTED, "Preempted", 75)),
        (failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
         (ExitClass.RETRYABLE, "BackoffLimitExceeded", None)),
        (failed("DeadlineExceeded", "Job was active longer than specified deadline"),
         (ExitClass.RETRYABLE, "DeadlineExceeded", None)),
    ],
)  # fmt: skip
def test_job_failure_reads_the_policy_message(condition: dict, expected: tuple) -> None:
    assert job_failure(condition) == expected


def test_a_preempted_attempt_whose_pods_are_gone_is_still_a_preemption() -> None:
    gone = job(condition="Failed", reason="PodFailurePolicy")
    gone["status"]["conditions"][0]["message"] = (
        "Pod ns/r1-0-0-x has condition DisruptionTarget matching FailJob"
    )
    state = assess(gone, [], attempt=0, hosts=1)
    assert (state.outcome, state.exit_class) == (Outcome.FAILED, ExitClass.PREEMPTED)


def test_the_policy_names_the_trainer_container_and_fails_the_job_on_a_disruption() -> None:
    rules = POD_FAILURE_POLICY["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["onExitCodes"] == {"containerName": "trainer", "operator": "NotIn", "values": [0]}
