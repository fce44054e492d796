"""Pure builders of the child objects of a TunixRun: PVC, Service, Job.

Every function here takes the parsed run, its uid, the operator settings and (for
the Job) the attempt number, and returns a plain dict ready for the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunix_api import artifacts, manifest_yaml
from tunix_api.run import API_VERSION, KIND, AcceleratorType, Mode, TunixRun
from tunix_api.training import ReclaimPolicy
from tunix_operator.settings import OperatorSettings

MANAGED_BY = "tunix-operator"
APP_NAME = "tunix-trainer"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_RUN = "tunix.dev/run"
LABEL_ATTEMPT = "tunix.dev/attempt"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# The trainer's run.yaml travels in this annotation of the Job's pod template; a downwardAPI volume
# shows it to the container as /etc/tunix/run.yaml. Each attempt's Job so carries the spec it was
# created from, and no ConfigMap is written (one API request less per attempt). The API server
# limits a pod's annotations to 256 KiB together: a larger spec fails the run with CreateFailed.
CONFIG_ANNOTATION = "tunix.dev/run-config"
CONTAINER_NAME = "trainer"
COORDINATOR_PORT = 8476
# The Job fails on the first failed pod anyway (backoffLimit 0; the operator owns retries). These
# FailJob rules make the Job controller write *why* into the Job's Failed condition (the disruption,
# or the trainer's exit code), which outlives the pods: an evicted pod can be finalized and deleted
# before the operator looks at it (observe.job_failure reads it back).
POD_FAILURE_POLICY = {
    "rules": [
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "NotIn",
                                              "values": [0]}},
    ]
}  # fmt: skip


@dataclass(frozen=True)
class RunRef:
    """Identity of a TunixRun object."""

    name: str
    namespace: str
    uid: str


# ---- names -------------------------------------------------------------------------------------


def job_name(run_name: str, attempt: int) -> str:
    return f"{run_name}-{attempt}"


def pvc_name(run_name: str) -> str:
    return f"{run_name}-checkpoints"


def service_name(run_name: str) -> str:
    return run_name


def run_selector(run_name: str) -> str:
    """Label selector of every pod and Job of a run."""
    return f"{LABEL_RUN}={run_name}"


def artifacts_uri(run: TunixRun, settings: OperatorSettings) -> str:
    """Where the trainer writes metrics/progress/summary for this run."""
    if run.spec.storage.uri:
        return run.spec.storage.uri
    return artifacts.join_uri(settings.artifacts_base_uri, f"{run.metadata.namespace}/{run.metadata.name}")


def credentials_secret(run: TunixRun, settings: OperatorSettings) -> str | None:
    """The Secret whose keys give the trainer (and the operator's reads) object-storage credentials."""
    return run.spec.storage.credentials_secret or settings.default_storage_secret


def checkpoint_uri(run: TunixRun) -> str:
    """The trainer's ``--checkpoint-uri``: object storage if given, else the mounted volume."""
    return run.spec.checkpoint.uri or artifacts.CHECKPOINT_MOUNT_DIR


# ---- metadata ----------------------------------------------------------------------------------


def labels(ref: RunRef, attempt: int | None = None) -> dict[str, str]:
    out = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: APP_NAME, LABEL_RUN: ref.name}
    if attempt is not None:
        out[LABEL_ATTEMPT] = str(attempt)
    return out


def owner_reference(ref: RunRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ref: RunRef, name: str, *, attempt: int | None = None, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ref.namespace, "labels": labels(ref, attempt)}
    if owned:
        meta["ownerReferences"] = [owner_reference(ref)]
    return meta


# ---- children ----------------------------------------------------------------------------------


def run_document(run: TunixRun) -> dict[str, Any]:
    """The TunixRun as the trainer reads it from run.yaml (no status, minimal metadata)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": run.metadata.name, "namespace": run.metadata.namespace},
        "spec": run.spec.to_wire(),
    }


def config_volume() -> dict[str, Any]:
    """The downwardAPI volume that shows the pod's :data:`CONFIG_ANNOTATION` as ``run.yaml``."""
    field = {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"}
    return {"name": "config", "downwardAPI": {"items": [{"path": artifacts.CONFIG_FILE, "fieldRef": field}]}}


def build_pvc(run: TunixRun, ref: RunRef) -> dict[str, Any] | None:
    """The checkpoint PVC when ``spec.checkpoint.volume.size`` asks for one.

    Owned by the run (deleted with it) only when reclaimPolicy is Delete.
    """
    volume = run.spec.checkpoint.volume
    if volume is None or volume.size is None or run.spec.mode == Mode.BENCHMARK:
        return None
    spec: dict[str, Any] = {
        "accessModes": [volume.access_mode],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class_name:
        spec["storageClassName"] = volume.storage_class_name
    owned = volume.reclaim_policy == ReclaimPolicy.DELETE
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(ref, pvc_name(ref.name), owned=owned),
        "spec": spec,
    }


def build_service(run: TunixRun, ref: RunRef) -> dict[str, Any] | None:
    """Headless Service giving multi-host pods stable DNS names (JAX coordinator)."""
    if run.spec.accelerator.hosts <= 1:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, service_name(ref.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_RUN: ref.name},
            "ports": [{"name": "coordinator", "port": COORDINATOR_PORT, "targetPort": COORDINATOR_PORT}],
        },
    }


def _command(run: TunixRun, settings: OperatorSettings) -> list[str]:
    config = f"{artifacts.CONFIG_MOUNT_DIR}/{artifacts.CONFIG_FILE}"
    uri = artifacts_uri(run, settings)
    if run.spec.mode == Mode.BENCHMARK:
        return ["tunix-bench", "--config", config, "--artifacts-uri", uri]
    return [
        "tunix-train",
        "--config",
        config,
        "--resume",
        "latest",
        "--artifacts-uri",
        uri,
        "--checkpoint-uri",
        checkpoint_uri(run),
    ]


def _env(run: TunixRun, ref: RunRef, attempt: int) -> list[dict[str, Any]]:
    env = [var.to_wire() for var in run.spec.env or []]
    env += [
        {"name": "TUNIX_RUN_NAME", "value": ref.name},
        {"name": "TUNIX_NAMESPACE", "value": ref.namespace},
        {"name": "TUNIX_ATTEMPT", "value": str(attempt)},
    ]
    hosts = run.spec.accelerator.hosts
    if hosts > 1:
        coordinator = f"{job_name(ref.name, attempt)}-0.{service_name(ref.name)}:{COORDINATOR_PORT}"
        env += [
            {"name": "TUNIX_COORDINATOR_ADDRESS", "value": coordinator},
            {"name": "TUNIX_NUM_PROCESSES", "value": str(hosts)},
            {
                "name": "TUNIX_PROCESS_ID",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
                },
            },
        ]
    return env


def _resources(run: TunixRun) -> dict[str, Any]:
    spec = run.spec
    requests = {k: str(v) for k, v in ((spec.resources.requests if spec.resources else None) or {}).items()}
    limits = {k: str(v) for k, v in ((spec.resources.limits if spec.resources else None) or {}).items()}
    if spec.accelerator.type != AcceleratorType.NONE:
        count = str(spec.accelerator.count_per_host)
        limits[spec.accelerator.type.value] = count
        requests[spec.accelerator.type.value] = count
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _checkpoint_volume(run: TunixRun, ref: RunRef) -> dict[str, Any]:
    volume = run.spec.checkpoint.volume
    if volume is not None and volume.claim_name:
        return {"name": "checkpoints", "persistentVolumeClaim": {"claimName": volume.claim_name}}
    if volume is not None and volume.size:
        return {"name": "checkpoints", "persistentVolumeClaim": {"claimName": pvc_name(ref.name)}}
    # No volume asked for: checkpoints survive container restarts only, not pod restarts,
    # unless spec.checkpoint.uri points at object storage.
    return {"name": "checkpoints", "emptyDir": {}}


def build_job(run: TunixRun, ref: RunRef, settings: OperatorSettings, attempt: int) -> dict[str, Any]:
    """The Indexed Job of one attempt: one pod per host, no Job-level retries."""
    spec = run.spec
    hosts = spec.accelerator.hosts
    benchmark = spec.mode == Mode.BENCHMARK

    mounts = [{"name": "config", "mountPath": artifacts.CONFIG_MOUNT_DIR, "readOnly": True}]
    volumes: list[dict[str, Any]] = [config_volume()]
    if not benchmark:
        mounts.append({"name": "checkpoints", "mountPath": artifacts.CHECKPOINT_MOUNT_DIR})
        volumes.append(_checkpoint_volume(run, ref))

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or settings.default_image,
        "command": _command(run, settings),
        "env": _env(run, ref, attempt),
        "volumeMounts": mounts,
        "terminationMessagePath": artifacts.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if secret := credentials_secret(run, settings):
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    resources = _resources(run)
    if resources:
        container["resources"] = resources
    if hosts > 1:
        container["ports"] = [{"name": "coordinator", "containerPort": COORDINATOR_PORT}]

    pod_labels = {**(spec.pod_labels or {}), **labels(ref, attempt)}
    config = manifest_yaml.dump_json(run_document(run))  # JSON is YAML; reads back the same
    pod_meta: dict[str, Any] = {
        "labels": pod_labels,
        "annotations": {**(spec.pod_annotations or {}), CONFIG_ANNOTATION: config},
    }

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if hosts > 1:
        pod_spec["subdomain"] = service_name(ref.name)
    optional = {
        "nodeSelector": spec.node_selector,
        "tolerations": [t.to_wire() for t in spec.tolerations] if spec.tolerations else None,
        "affinity": spec.affinity,
        "priorityClassName": spec.priority_class_name,
        "serviceAccountName": spec.service_account_name,
        "imagePullSecrets": [s.to_wire() for s in spec.image_pull_secrets]
        if spec.image_pull_secrets
        else None,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})

    metadata = _metadata(ref, job_name(ref.name, attempt), attempt=attempt)
    metadata["labels"] = {**(spec.pod_labels or {}), **metadata["labels"]}
    if spec.pod_annotations:
        metadata["annotations"] = dict(spec.pod_annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": hosts,
            "parallelism": hosts,
            "backoffLimit": 0,
            "podFailurePolicy": POD_FAILURE_POLICY,
            "template": {"metadata": pod_meta, "spec": pod_spec},
        },
    }


def build_children(
    run: TunixRun, ref: RunRef, settings: OperatorSettings, attempt: int
) -> list[dict[str, Any]]:
    """Every object attempt ``attempt`` needs, in creation order (the Job last)."""
    optional = [build_pvc(run, ref), build_service(run, ref)]
    return [*[o for o in optional if o], build_job(run, ref, settings, attempt)]
