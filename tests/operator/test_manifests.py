"""Child manifests: content, and validity against the Kubernetes 1.32 schemas (strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.operator.factories import spec
from tunix_api.run import ObjectMeta, TunixRun, TunixRunSpec
from tunix_operator.manifests import (
    CONFIG_ANNOTATION,
    RunRef,
    build_children,
    build_job,
    build_pvc,
    build_service,
)
from tunix_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(default_image="registry.example/trainer:1", artifacts_base_uri="s3://b/runs")
REF = RunRef("r1", "ns", "uid-1")


def make_run(**overrides: Any) -> TunixRun:
    return TunixRun(
        metadata=ObjectMeta(name="r1", namespace="ns"), spec=TunixRunSpec.model_validate(spec(**overrides))
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


VARIANTS = {
    "minimal": {},
    "pvc": {
        "checkpoint": {"volume": {"size": "50Gi", "storageClassName": "fast", "reclaimPolicy": "Delete"}}
    },
    "claim": {"checkpoint": {"volume": {"claimName": "shared"}}},
    "multihost": {
        "accelerator": {"type": "nvidia.com/gpu", "countPerHost": 8, "hosts": 4},
        "checkpoint": {"uri": "s3://b/ckpt"},
    },
    "everything": {
        "image": "my/trainer:2",
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"requests": {"cpu": 4, "memory": "32Gi"}, "limits": {"memory": "64Gi"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "high",
        "serviceAccountName": "trainer",
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "podLabels": {"kueue.x-k8s.io/queue-name": "team-a"},
        "podAnnotations": {"note": "x"},
        "storage": {"uri": "s3://b/art", "endpointUrl": "http://minio:9000", "credentialsSecret": "s3-creds"},
        "terminationGracePeriodSeconds": 300,
    },
    "benchmark": {"mode": "Benchmark", "dataset": None, "benchmark": {"measureSteps": 5}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_child_is_a_valid_kubernetes_object(variant: str) -> None:
    overrides = {k: v for k, v in VARIANTS[variant].items()}
    run = make_run(**overrides)
    for obj in build_children(run, REF, SETTINGS, attempt=3):
        kubernetes_validate.validate(obj, "1.32", strict=True)
        assert obj["metadata"]["labels"]["tunix.dev/run"] == "r1"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tunix-operator"


def test_job_runs_the_trainer_with_gpu_volume_env_and_resume_latest() -> None:
    job = build_job(make_run(), REF, SETTINGS, attempt=2)
    assert job["metadata"]["name"] == "r1-2"
    assert job["metadata"]["labels"]["tunix.dev/attempt"] == "2"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TunixRun", "uid-1", True)
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"], js["backoffLimit"]) == (
        "Indexed",
        1,
        1,
        0,
    )
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 120
    assert "subdomain" not in pod
    c = container(job)
    assert c["image"] == "registry.example/trainer:1"
    assert c["command"] == [
        "tunix-train",
        "--config",
        "/etc/tunix/run.yaml",
        "--resume",
        "latest",
        "--artifacts-uri",
        "s3://b/runs/ns/r1",
        "--checkpoint-uri",
        "/checkpoints",
    ]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "2"}}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "checkpoints", "emptyDir": {}} in pod["volumes"]
    config = {"path": "run.yaml", "fieldRef": {"fieldPath": "metadata.annotations['tunix.dev/run-config']"}}
    assert {"name": "config", "downwardAPI": {"items": [config]}} in pod["volumes"]
    assert {"name": "config", "mountPath": "/etc/tunix", "readOnly": True} in c["volumeMounts"]
    assert env(job)["TUNIX_ATTEMPT"] == "2"
    assert env(job)["TUNIX_RUN_NAME"] == "r1"
    assert "TUNIX_COORDINATOR_ADDRESS" not in env(job)
    assert js["template"]["metadata"]["labels"]["tunix.dev/attempt"] == "2"


def test_multi_host_job_gets_service_and_coordinator_env() -> None:
    run = make_run(**VARIANTS["multihost"])
    job = build_job(run, REF, SETTINGS, attempt=0)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 4)
    assert job["spec"]["template"]["spec"]["subdomain"] == "r1"
    values = env(job)
    assert values["TUNIX_COORDINATOR_ADDRESS"] == "r1-0-0.r1:8476"
    assert values["TUNIX_NUM_PROCESSES"] == "4"
    assert values["TUNIX_PROCESS_ID"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert container(job)["command"][-1] == "s3://b/ckpt"
    service = build_service(run, REF)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"tunix.dev/run": "r1"}
    assert build_service(make_run(), REF) is None


def test_user_settings_reach_job_and_pod() -> None:
    job = build_job(make_run(**VARIANTS["everything"]), REF, SETTINGS, attempt=0)
    pod = job["spec"]["template"]["spec"]
    c = container(job)
    assert c["image"] == "my/trainer:2" and c["imagePullPolicy"] == "Always"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert c["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["priorityClassName"] == "high" and pod["serviceAccountName"] == "trainer"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["affinity"]["nodeAffinity"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["note"] == "x" and set(annotations) == {"note", CONFIG_ANNOTATION}
    assert job["metadata"]["annotations"] == {"note": "x"}  # the config goes to the pods only
    assert env(job)["A"] == "1" and env(job)["B"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "--artifacts-uri" in c["command"] and "s3://b/art" in c["command"]


def test_pvc_owned_only_when_reclaim_policy_is_delete() -> None:
    deleted = build_pvc(make_run(**VARIANTS["pvc"]), REF)
    assert deleted is not None and deleted["metadata"]["name"] == "r1-checkpoints"
    assert deleted["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert deleted["spec"]["resources"]["requests"]["storage"] == "50Gi"
    kept = build_pvc(make_run(checkpoint={"volume": {"size": "1Gi"}}), REF)
    assert kept is not None and "ownerReferences" not in kept["metadata"]
    assert build_pvc(make_run(**VARIANTS["claim"]), REF) is None
    job = build_job(make_run(**VARIANTS["claim"]), REF, SETTINGS, 0)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "shared"}} in volumes


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_pod_template_carries_the_run_as_the_trainer_loads_it(variant: str) -> None:
    run = make_run(**VARIANTS[variant])
    job = build_job(run, REF, SETTINGS, attempt=1)
    doc = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    assert doc["kind"] == "TunixRun" and doc["metadata"] == {"name": "r1", "namespace": "ns"}
    assert "status" not in doc
    assert TunixRun.model_validate(doc).spec == run.spec


def test_a_pod_annotation_of_the_same_name_does_not_replace_the_config() -> None:
    job = build_job(make_run(podAnnotations={CONFIG_ANNOTATION: "steps: 1"}), REF, SETTINGS, 0)
    doc = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    assert doc["kind"] == "TunixRun"


def test_benchmark_mode_runs_tunix_bench_without_checkpoints() -> None:
    job = build_job(make_run(**VARIANTS["benchmark"]), REF, SETTINGS, 0)
    c = container(job)
    assert c["command"][:3] == ["tunix-bench", "--config", "/etc/tunix/run.yaml"]
    assert all(m["name"] != "checkpoints" for m in c["volumeMounts"])


def test_default_storage_secret_applies_only_when_the_run_names_none() -> None:
    settings = SETTINGS.model_copy(update={"default_storage_secret": "team-s3"})
    assert container(build_job(make_run(), REF, settings, attempt=0))["envFrom"] == [
        {"secretRef": {"name": "team-s3"}}
    ]
    own = build_job(make_run(**VARIANTS["everything"]), REF, settings, attempt=0)
    assert container(own)["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in container(build_job(make_run(), REF, SETTINGS, attempt=0))
