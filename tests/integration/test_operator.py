"""The operator (kopf + handlers + reconciler) on the real control plane: the real Job controller,
garbage collector and scheduler, and the process kubelet (simulated trainer containers)."""

from __future__ import annotations

import contextlib
import copy
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from tests.cluster.fixtures import TRAINER_IMAGE
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for

CRD_NAME = "tunixruns.tunix.dev"
SUMMARY = {
    "finalLoss": 1.5,
    "bestLoss": 1.4,
    "bestStep": 18,
    "totalSteps": 20,
    "totalTokens": 2560,
    "avgTokensPerSecond": 100.0,
    "wallTimeSeconds": 25.6,
    "provenance": {"jax": "0.10.2"},
}


def test_create_makes_job_with_gpu_volume_env_and_resume(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(
        run_manifest(
            "gpu",
            accelerator={"type": "nvidia.com/gpu", "countPerHost": 4},
            checkpoint={"volume": {"size": "10Gi", "reclaimPolicy": "Delete"}},
            env=[{"name": "EXTRA", "value": "1"}],
        )
    )
    wait_for(lambda: k8s.jobs("gpu") == ["gpu-0"], what="job gpu-0")
    job = k8s.job("gpu-0")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["command"][container["command"].index("--resume") + 1] == "latest"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EXTRA"] == "1" and env["TUNIX_ATTEMPT"] == "0"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"]["claimName"] == "gpu-checkpoints"
    assert k8s.core.read_namespaced_persistent_volume_claim("gpu-checkpoints", k8s.ns)
    config = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"]["tunix.dev/run-config"])
    assert config["spec"]["accelerator"] == k8s.run("gpu")["spec"]["accelerator"]
    assert volumes["config"]["downwardAPI"]["items"][0]["path"] == "run.yaml"
    assert not k8s.core.list_namespaced_config_map(k8s.ns, label_selector="tunix.dev/run=gpu").items
    assert job["metadata"]["ownerReferences"][0]["uid"] == k8s.run("gpu")["metadata"]["uid"]
    wait_for(phase_is(k8s, "gpu", "Running"), what="Running")
    status = k8s.status("gpu")
    assert status["attempt"] == 0 and status["metricsUri"].endswith(f"/{k8s.ns}/gpu/metrics.jsonl")


def test_progress_then_success_with_summary(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api, artifacts_dir: pathlib.Path
) -> None:
    k8s.create_run(run_manifest("prog"))
    pod = pod_of(kubelet, "prog", 0)
    run_dir = artifacts_dir / k8s.ns / "prog"
    run_dir.mkdir(parents=True)
    progress = {
        "step": 12,
        "totalSteps": 20,
        "loss": 2.25,
        "tokensPerSecond": 512.0,
        "etaSeconds": 8.0,
        "updatedAt": "2099-01-01T00:00:00Z",
    }
    (run_dir / "progress.json").write_text(json.dumps(progress))
    got = wait_for(lambda: k8s.status("prog").get("progress"), what="status.progress")
    assert got["stepOfTotal"] == "12/20" and got["loss"] == 2.25
    assert k8s.status("prog")["phase"] == "Running"
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "prog", "Succeeded"), what="Succeeded")
    status = k8s.status("prog")
    assert status["summary"]["finalLoss"] == 1.5 and status["summary"]["totalSteps"] == 20
    assert status["provenance"] == {"jax": "0.10.2"}
    assert status["progress"]["stepOfTotal"] == "20/20"
    assert status["completionTime"]
    assert ("Normal", "Succeeded") in wait_for(lambda: k8s.events("prog"), what="events")


def test_preemption_creates_new_attempt_without_spending_restarts(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(run_manifest("pre"))
    pod = pod_of(kubelet, "pre", 0)
    kubelet.evict(pod["metadata"]["name"])
    pod_of(kubelet, "pre", 1)
    wait_for(phase_is(k8s, "pre", "Running"), what="Running again")
    status = k8s.status("pre")
    assert (status["attempt"], status["preemptions"], status["restarts"]) == (1, 1, 0)
    wait_for(lambda: k8s.jobs("pre") == ["pre-1"], what="old Job deleted")
    assert ("Warning", "Preempted") in k8s.events("pre")


def test_fatal_exit_fails_without_new_job(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(run_manifest("fatal"))
    pod = pod_of(kubelet, "fatal", 0)
    kubelet.terminate(pod["metadata"]["name"], exit_code=3, message="loss became nan at step 7")
    wait_for(phase_is(k8s, "fatal", "Failed"), what="Failed")
    status = k8s.status("fatal")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "Diverged"
    assert "nan at step 7" in status["message"]
    assert k8s.jobs("fatal") == ["fatal-0"]
    assert status["restarts"] == 0


def test_retry_budget_spent_fails(operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api) -> None:
    k8s.create_run(run_manifest("retry"))  # maxRestarts 1, backoff 0
    kubelet.terminate(pod_of(kubelet, "retry", 0)["metadata"]["name"], exit_code=1, message="crash 1")
    kubelet.terminate(pod_of(kubelet, "retry", 1)["metadata"]["name"], exit_code=1, message="crash 2")
    wait_for(phase_is(k8s, "retry", "Failed"), what="Failed")
    status = k8s.status("retry")
    assert status["restarts"] == 1 and status["attempt"] == 1
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "BackoffLimitExceeded"
    assert "crash 2" in status["message"]
    assert k8s.jobs("retry") == ["retry-1"]


def test_suspend_and_resume(operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api) -> None:
    k8s.create_run(run_manifest("sus"))
    pod_of(kubelet, "sus", 0)
    k8s.patch_spec("sus", {"suspend": True})
    wait_for(phase_is(k8s, "sus", "Suspended"), what="Suspended")
    wait_for(lambda: k8s.jobs("sus") == [], what="Job deleted")
    k8s.patch_spec("sus", {"suspend": False})
    pod_of(kubelet, "sus", 1)
    wait_for(phase_is(k8s, "sus", "Running"), what="Running after resume")
    status = k8s.status("sus")
    assert (status["attempt"], status["restarts"], status["preemptions"]) == (1, 0, 0)
    reasons = [r for _, r in k8s.events("sus")]
    assert "Suspended" in reasons and "Resumed" in reasons


def test_operator_restart_mid_run_keeps_state(start_operator, kubelet: ProcessKubelet, k8s: Api) -> None:
    first = start_operator()
    k8s.create_run(run_manifest("restart"))
    pod_of(kubelet, "restart", 0)
    wait_for(phase_is(k8s, "restart", "Running"), what="Running")
    before = k8s.status("restart")
    first.stop()
    second = start_operator()
    samples = lambda: [s for m in second.metrics.duration.collect() for s in m.samples]  # noqa: E731
    wait_for(lambda: any(s.value for s in samples() if s.name.endswith("_count")), what="a reconcile")
    # Give the new operator a few reconcile rounds, then nothing must have been duplicated.
    pod = pod_of(kubelet, "restart", 0)
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "restart", "Succeeded"), what="Succeeded")
    after = k8s.status("restart")
    assert k8s.jobs("restart") == ["restart-0"]
    assert after["attempt"] == 0 and after["startTime"] == before["startTime"]
    pods = k8s.core.list_namespaced_pod(
        k8s.ns, label_selector="tunix.dev/run=restart", _preload_content=False
    )
    assert len(json.loads(pods.data)["items"]) == 1


def test_delete_removes_children(operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api) -> None:
    k8s.create_run(run_manifest("gone", checkpoint={"volume": {"size": "1Gi"}}))  # Retain: PVC kept
    pod_of(kubelet, "gone", 0)
    k8s.delete_run("gone")

    def run_gone() -> bool:
        try:
            k8s.run("gone")
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(run_gone, what="run deleted")
    wait_for(lambda: k8s.jobs("gone") == [], what="jobs deleted")
    assert k8s.core.read_namespaced_persistent_volume_claim("gone-checkpoints", k8s.ns)


@contextlib.contextmanager
def crd_without_training_rules(admin_api: kubernetes.client.ApiClient) -> Iterator[None]:
    """The TunixRun CRD as an older, looser version would have had it: no CEL rules on spec.training."""
    crds = kubernetes.client.ApiextensionsV1Api(admin_api)

    def training(crd: dict[str, Any]) -> dict[str, Any]:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return schema["properties"]["spec"]["properties"]["training"]

    def read() -> dict[str, Any]:
        crd = crds.read_custom_resource_definition(CRD_NAME)
        return admin_api.sanitize_for_serialization(crd)

    original = read()
    rules = training(original)["x-kubernetes-validations"]
    loose = copy.deepcopy(original)
    del training(loose)["x-kubernetes-validations"]
    crds.replace_custom_resource_definition(CRD_NAME, loose)
    try:
        yield
    finally:
        current = read()
        training(current)["x-kubernetes-validations"] = rules
        crds.replace_custom_resource_definition(CRD_NAME, current)


def test_malformed_run_fails_while_another_keeps_going(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api, admin_api: kubernetes.client.ApiClient
) -> None:
    """A run stored under a looser CRD (before an upgrade added a rule) that the models now reject."""
    bad = run_manifest("bad", training={"steps": 10, "warmupSteps": 50})
    with pytest.raises(kubernetes.client.ApiException, match="warmupSteps must not exceed steps"):
        k8s.create_run(bad)  # today's CRD refuses it
    with crd_without_training_rules(admin_api):
        wait_for(lambda: k8s.create_run(bad), timeout=15, what="the looser CRD in effect")
    k8s.create_run(run_manifest("good"))
    wait_for(phase_is(k8s, "bad", "Failed"), what="bad Failed")
    status = k8s.status("bad")
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "InvalidSpec"
    assert "warmupSteps" in status["message"]
    assert k8s.jobs("bad") == []
    wait_for(phase_is(k8s, "good", "Running"), what="good Running")


def test_a_spec_too_large_for_the_pods_annotations_fails_with_the_servers_message(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    """run.yaml travels in a pod annotation: the API server limits them to 256 KiB together. A
    200 kB pod annotation fits the Job's metadata but not the pod template's, where run.yaml (which
    holds it too) joins it."""
    k8s.create_run(run_manifest("big", podAnnotations={"example.com/note": "x" * 200_000}))
    wait_for(phase_is(k8s, "big", "Failed"), timeout=30, what="big Failed")
    status = k8s.status("big")
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "CreateFailed"
    assert "422" in status["message"] and "Too long" in status["message"], status["message"]
    assert k8s.jobs("big") == []


def test_image_pull_error_is_reported(operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api) -> None:
    """The kubelet cannot pull an image it does not have: ErrImagePull, then ImagePullBackOff."""
    k8s.create_run(run_manifest("img", image="nope/missing:1"))

    def running_reason() -> bool:
        conds = k8s.status("img").get("conditions") or []
        return next((c["reason"] for c in conds if c["type"] == "Running"), None) == "ImagePullBackOff"

    wait_for(running_reason, timeout=30, what="ImagePullBackOff condition")
    assert k8s.status("img")["phase"] == "Pending"
    assert "nope/missing:1" in k8s.status("img")["message"]
    assert ("Warning", "ImagePullBackOff") in k8s.events("img")


def test_no_node_with_the_accelerator_is_unschedulable(
    operator: OperatorThread, control_plane, tmp_path: pathlib.Path, k8s: Api
) -> None:
    """The real scheduler finds no node with 4 GPUs: the run says so, Pending."""
    cpu_only = Node("cpu-only-node")
    with ProcessKubelet(control_plane.api_client(), tmp_path / "kubelet", nodes=(cpu_only,),
                        images={TRAINER_IMAGE: "simulated"}):  # fmt: skip
        k8s.create_run(run_manifest("nogpu", accelerator={"type": "nvidia.com/gpu", "countPerHost": 4}))

        def unschedulable() -> bool:
            conds = k8s.status("nogpu").get("conditions") or []
            return any(c.get("reason") == "Unschedulable" for c in conds)

        wait_for(unschedulable, timeout=30, what="Unschedulable condition")
        status = k8s.status("nogpu")
        assert status["phase"] == "Pending"
        assert "nvidia.com/gpu" in status["message"]


def test_multi_host_gang_restarts_as_a_whole(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(
        run_manifest(
            "gang",
            accelerator={"type": "nvidia.com/gpu", "countPerHost": 8, "hosts": 2},
            checkpoint={"uri": "s3://bucket/ckpt"},
        )
    )
    pods = kubelet.wait_for_pods("tunix.dev/run=gang,tunix.dev/attempt=0", count=2, phase="Running")
    assert k8s.core.read_namespaced_service("gang", k8s.ns).spec.cluster_ip == "None"
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["TUNIX_COORDINATOR_ADDRESS"] == "gang-0-0.gang:8476" and env["TUNIX_NUM_PROCESSES"] == "2"
    kubelet.evict(pods[1]["metadata"]["name"])
    kubelet.wait_for_pods("tunix.dev/run=gang,tunix.dev/attempt=1", count=2, phase="Running")
    wait_for(phase_is(k8s, "gang", "Running"), what="Running again")
    status = k8s.status("gang")
    assert (status["attempt"], status["preemptions"], status["restarts"]) == (1, 1, 0)
    wait_for(lambda: k8s.jobs("gang") == ["gang-1"], what="only the new attempt's Job")


def test_deadline_fails_the_run_and_stops_its_pods(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(run_manifest("late", activeDeadlineSeconds=2))
    pod_of(kubelet, "late", 0)
    wait_for(phase_is(k8s, "late", "Failed"), timeout=30, what="Failed at the deadline")
    failed = next(c for c in k8s.status("late")["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    # The Job goes, and the garbage collector and the kubelet take its pod with it (SIGTERM, grace, gone).
    wait_for(lambda: k8s.jobs("late") == [], timeout=30, what="Job deleted")
    wait_for(lambda: not k8s.core.list_namespaced_pod(k8s.ns, label_selector="tunix.dev/run=late").items,
             timeout=60, what="pod gone")  # fmt: skip


def test_ttl_deletes_the_children_of_a_finished_run_and_keeps_the_run(
    operator: OperatorThread, kubelet: ProcessKubelet, k8s: Api
) -> None:
    k8s.create_run(run_manifest("brief", ttlSecondsAfterFinished=1))
    pod = pod_of(kubelet, "brief", 0)
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "brief", "Succeeded"), what="Succeeded")
    wait_for(lambda: k8s.jobs("brief") == [], timeout=30, what="Job deleted after the TTL")
    wait_for(lambda: not k8s.core.list_namespaced_pod(k8s.ns, label_selector="tunix.dev/run=brief").items,
             timeout=60, what="pods collected")  # fmt: skip
    assert k8s.status("brief")["phase"] == "Succeeded"
    # the event is posted after the Job's delete call returns: it may come after the pods are gone
    wait_for(lambda: ("Normal", "TTLExpired") in k8s.events("brief"), what="TTLExpired event")
