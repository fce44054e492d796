"""The simulated Job controller and kubelet."""

import time

import pytest

from tests.kubeemu import ContainerResult, SimulatedKubelet
from tests.kubeemu.jobs import INDEX_KEY

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def _job(name, **spec):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"a": "b"}},
                "spec": {
                    "restartPolicy": "Never",
                    "subdomain": "svc",
                    "containers": [{"name": "main", "image": "trainer"}],
                },
            },
            **spec,
        },
    }


def _wait_condition(cluster, name, kind, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cluster.rest.request("GET", f"{JOBS}/{name}")
        for condition in job["status"].get("conditions") or []:
            if condition["type"] == kind and condition["status"] == "True":
                return job, condition
        time.sleep(0.05)
    raise AssertionError(f"job {name} has no {kind} condition: {job['status']}")


def test_indexed_job_runs_to_completion(cluster, kubelet):
    job = cluster.rest.request(
        "POST", JOBS, _job("train", completions=2, parallelism=2, completionMode="Indexed", backoffLimit=0)
    )
    pods = kubelet.wait_for_pods("app=train", 2, phase="Running")
    assert sorted(p["metadata"]["labels"][INDEX_KEY] for p in pods) == ["0", "1"]
    for pod in pods:
        index = pod["metadata"]["annotations"][INDEX_KEY]
        meta, spec = pod["metadata"], pod["spec"]
        assert meta["generateName"] == f"train-{index}-" and meta["annotations"]["a"] == "b"
        assert spec["hostname"] == f"train-{index}" and spec["subdomain"] == "svc"
        assert (
            meta["labels"]["job-name"] == "train"
            and meta["labels"]["controller-uid"] == job["metadata"]["uid"]
        )
        assert meta["ownerReferences"][0]["controller"] is True
        assert spec["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        assert pod["status"]["podIP"]
    for pod in pods:
        kubelet.terminate(pod["metadata"]["name"], exit_code=0, message='{"ok": true}')
    done, _ = _wait_condition(cluster, "train", "Complete")
    assert done["status"]["succeeded"] == 2 and done["status"]["completionTime"]
    finished = kubelet.wait_for_pods("app=train", 2, phase="Succeeded")
    terminated = finished[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed" and terminated["message"]
    cluster.rest.request("DELETE", f"{JOBS}/train")  # owner references: the pods go with the job
    assert (
        cluster.rest.request("GET", "/api/v1/namespaces/default/pods", params={"labelSelector": "app=train"})[
            "items"
        ]
        == []
    )


def test_failed_pod_fails_job_with_backoff_limit_zero(cluster, kubelet):
    cluster.rest.request("POST", JOBS, _job("bad", backoffLimit=0))
    (pod,) = kubelet.wait_for_pods("app=bad", 1, phase="Running")
    kubelet.terminate(pod["metadata"]["name"], exit_code=3, message="boom")
    job, condition = _wait_condition(cluster, "bad", "Failed")
    assert condition["reason"] == "BackoffLimitExceeded" and job["status"]["failed"] == 1
    (failed,) = kubelet.wait_for_pods("app=bad", 1, phase="Failed")
    state = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"], state["message"]) == (3, "Error", "boom")


def test_evict_sets_disruption_target(cluster, kubelet):
    cluster.rest.request("POST", JOBS, _job("pre", backoffLimit=1))
    (pod,) = kubelet.wait_for_pods("app=pre", 1, phase="Running")
    kubelet.evict(pod["metadata"]["name"])
    failed = kubelet.wait_for_pods("app=pre", 1, phase="Failed")[0]
    condition = next(c for c in failed["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert condition["reason"] == "PreemptionByScheduler"
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    kubelet.wait_for_pods("app=pre", 1, phase="Running")  # backoffLimit 1: a replacement pod runs


def test_runner_pending_states_and_suspend(cluster):
    def runner(pod):
        return ContainerResult(exit_code=0, message="done", logs="step 1\n")

    with SimulatedKubelet(cluster, auto_start_pods=False, runner=runner) as kubelet:
        cluster.rest.request("POST", JOBS, _job("held"))
        (pod,) = kubelet.wait_for_pods("app=held", 1)
        name = pod["metadata"]["name"]
        kubelet.set_unschedulable(name, message="0/1 nodes are available")
        (pod,) = kubelet.wait_for_pods("app=held", 1, phase="Pending")
        assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
        kubelet.set_waiting(name, reason="ImagePullBackOff", message="no image")
        waiting = kubelet.wait_for_pods("app=held", 1)[0]["status"]["containerStatuses"][0]["state"][
            "waiting"
        ]
        assert waiting["reason"] == "ImagePullBackOff"
        kubelet.start_pod(name)
        _wait_condition(cluster, "held", "Complete")
        assert cluster.pod_log("default", name) == "step 1\n"
        cluster.rest.request("POST", JOBS, _job("paused", suspend=True))
        _wait_condition(cluster, "paused", "Suspended")
        with pytest.raises(TimeoutError):
            kubelet.wait_for_pods("app=paused", 1, timeout=0.5)
        assert not kubelet.errors
