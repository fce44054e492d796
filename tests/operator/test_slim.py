"""What the indices keep of a Job or a pod: only what observe.py and state.py read."""

from __future__ import annotations

from tunix_operator.cache import slim_job, slim_pod
from tunix_operator.manifests import COMPLETION_INDEX_ANNOTATION, CONFIG_ANNOTATION
from tunix_operator.observe import CHECKPOINT_TIME_ANNOTATION, pod_view

RUN_YAML = "apiVersion: tunix.dev/v1alpha1\nkind: TunixRun\n" + "spec: {}\n" * 1000


def pod(**annotations: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "r1-0-0-abcde",
            "resourceVersion": "7",
            "labels": {"tunix.dev/run": "r1", "tunix.dev/attempt": "0"},
            "annotations": {CONFIG_ANNOTATION: RUN_YAML, "example.com/note": "x" * 10_000, **annotations},
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"nodeName": "gpu-0", "terminationGracePeriodSeconds": 30, "containers": [{"name": "t"}]},
        "status": {"phase": "Running"},
    }


def test_a_pod_keeps_only_the_annotations_the_operator_reads() -> None:
    full = pod(**{COMPLETION_INDEX_ANNOTATION: "1", CHECKPOINT_TIME_ANNOTATION: "2026-11-26T16:00:00Z"})
    kept = slim_pod(full)
    assert kept["metadata"]["annotations"] == {
        COMPLETION_INDEX_ANNOTATION: "1",
        CHECKPOINT_TIME_ANNOTATION: "2026-11-26T16:00:00Z",
    }
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["labels"] == full["metadata"]["labels"]
    assert kept["spec"] == {"terminationGracePeriodSeconds": 30, "nodeName": "gpu-0"}
    assert pod_view(kept) == pod_view(full)  # what the decisions see is unchanged
    assert len(repr(kept)) < 1_000 < len(repr(full))


def test_a_pod_without_those_annotations_keeps_none_and_a_job_none_at_all() -> None:
    assert "annotations" not in slim_pod(pod())["metadata"]
    job = {"metadata": {"name": "r1-0", "annotations": {"example.com/note": "x"}}, "spec": {"completions": 1}}
    assert slim_job(job) == {
        "apiVersion": None,
        "kind": None,
        "metadata": {"name": "r1-0"},
        "spec": {"completions": 1},
    }
