"""The pure parts of the emulator: selectors, patches, the Job controller's plan."""

import datetime

import pytest

from tests.kubeemu import jobs, patches
from tests.kubeemu.selectors import SelectorError, matches, parse_field_selector, parse_label_selector

POD = {
    "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a", "tier": "web"}},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=a", True),
        ("app==a", True),
        ("app!=a", False),
        ("app in (a,b)", True),
        ("app notin (a, b)", False),
        ("app", True),
        ("!app", False),
        ("missing!=x", True),
        ("missing", False),
        ("app=a,tier=db", False),
        ("", True),
    ],
)
def test_label_selectors(selector, expected):
    assert matches(POD, parse_label_selector(selector)) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=p", True),
        ("metadata.namespace!=ns", False),
        ("status.phase=Running", True),
        ("status.phase=Failed", False),
        ("metadata.name=p,status.phase!=Pending", True),
    ],
)
def test_field_selectors(selector, expected):
    assert matches(POD, fields=parse_field_selector(selector)) is expected


def test_bad_selectors_raise():
    with pytest.raises(SelectorError):
        parse_label_selector("a in b")
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name")


def test_merge_and_json_patches():
    obj = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert patches.merge_patch(obj, {"a": {"b": None, "c": [3]}}) == {"a": {"c": [3]}, "d": 1}
    assert (
        patches.apply_patch(obj, [{"op": "replace", "path": "/d", "value": 2}], patches.JSON_PATCH)["d"] == 2
    )
    with pytest.raises(patches.PatchTestFailed):
        patches.apply_patch(obj, [{"op": "test", "path": "/d", "value": 5}], patches.JSON_PATCH)
    with pytest.raises(patches.PatchError):
        patches.apply_patch(obj, {"op": "add"}, patches.JSON_PATCH)
    assert obj == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # inputs are not mutated


def _job(**spec):
    return {
        "metadata": {"name": "j", "namespace": "ns", "uid": "u1"},
        "spec": {
            "parallelism": 2,
            "completions": 2,
            "backoffLimit": 0,
            "completionMode": "Indexed",
            "template": {"spec": {"containers": [{"name": "c"}]}},
            **spec,
        },
        "status": {},
    }


def _pod(job, index, phase, **status):
    pod = jobs.pod_manifest(job, index)
    pod["metadata"]["name"] = f"j-{index}-x"
    pod["status"] = {"phase": phase, **status}
    return pod


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_indexed_job_plan_creates_missing_indexes_and_completes():
    job = _job()
    plan = jobs.plan_job(job, [], NOW)
    assert plan.create_indexes == [0, 1] and plan.status["active"] == 2
    pod = jobs.pod_manifest(job, 1)
    assert pod["metadata"]["generateName"] == "j-1-" and pod["spec"]["hostname"] == "j-1"
    assert pod["metadata"]["annotations"][jobs.INDEX_KEY] == "1"
    assert pod["spec"]["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
    done = jobs.plan_job(job, [_pod(job, 0, "Succeeded"), _pod(job, 1, "Succeeded")], NOW)
    assert [c["type"] for c in done.status["conditions"]] == ["Complete"]
    assert done.status["completedIndexes"] == "0-1"


def test_job_plan_failures_deadline_and_failure_policy():
    job = _job()
    failed = jobs.plan_job(job, [_pod(job, 0, "Failed"), _pod(job, 1, "Running")], NOW)
    assert failed.status["conditions"][0]["reason"] == "BackoffLimitExceeded"
    assert failed.delete_pods == ["j-1-x"]
    late = _job(activeDeadlineSeconds=10)
    late["status"] = {"startTime": "2025-12-31T23:59:00Z"}
    assert jobs.plan_job(late, [], NOW).status["conditions"][0]["reason"] == "DeadlineExceeded"
    ignoring = _job(
        podFailurePolicy={
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]
        }
    )
    evicted = _pod(ignoring, 0, "Failed", conditions=[{"type": "DisruptionTarget", "status": "True"}])
    plan = jobs.plan_job(ignoring, [evicted], NOW)
    assert plan.status["failed"] == 0 and plan.create_indexes == [0, 1]
    suspended = jobs.plan_job(_job(suspend=True), [_pod(job, 0, "Running")], NOW)
    assert suspended.delete_pods == ["j-0-x"] and suspended.create_indexes == []
