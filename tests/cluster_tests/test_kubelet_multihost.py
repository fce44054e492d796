"""A multi-host run really rendezvouses on the process kubelet: the operator's children of a
``hosts: 2`` run (checkpoint claim, headless Service, Indexed Job carrying run.yaml, built by the operator's
own manifest code and applied as they are), the real Job controller and scheduler, and two
``tunix-train`` processes that meet through the coordinator address the operator builds
(``<run>-<attempt>-0.<service>:<port>``, resolved by each pod's hosts file) and train data-parallel
with JAX's CPU collectives (gloo). Their losses match a one-process run of the same global batches
within the float32 summation bound of tests/trainer/data_parallel.py (``2 * tokens * 2**-24``
relative per step, times the step number)."""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time
import uuid

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.cluster.rawapi import Api, ApiError, path_of
from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset
from tests.trainer.data_parallel import assert_losses_match
from tunix_api import artifacts
from tunix_api.exit_codes import ExitCode
from tunix_api.run import ObjectMeta, TunixRun, TunixRunSpec
from tunix_operator.manifests import CONFIG_ANNOTATION, RunRef, build_children
from tunix_operator.settings import OperatorSettings

pytestmark = pytest.mark.slow

IMAGE = "tunix/trainer:process"
STEPS = 8
TIMEOUT = 300.0  # two JAX processes compile and train on a loaded 2-core machine
PLURALS = {
    "PersistentVolumeClaim": ("api/v1", "persistentvolumeclaims"),
    "Service": ("api/v1", "services"),
    "Job": ("apis/batch/v1", "jobs"),
}


def _run(namespace: str, dataset: pathlib.Path, hosts: int) -> TunixRun:
    spec = {
        "model": SMALL_MODEL,
        "dataset": {"uri": str(dataset)},
        "device": {"kind": "cpu"},
        "training": {**SMALL_TRAINING, "steps": STEPS},
        "accelerator": {"hosts": hosts},
        "checkpoint": {"saveIntervalSteps": 4, "maxToKeep": 2, "volume": {"size": "1Gi"}},
        "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
        "env": [
            {"name": "JAX_PLATFORMS", "value": "cpu"},
            {"name": "XLA_FLAGS", "value": "--xla_force_host_platform_device_count=1"},
        ],
    }
    return TunixRun(
        metadata=ObjectMeta(name="mh", namespace=namespace), spec=TunixRunSpec.model_validate(spec)
    )


def _job_done(api: Api, namespace: str, name: str) -> str | None:
    try:
        job = api.request("GET", path_of("apis", "batch", "v1", "namespaces", namespace, "jobs", name))
    except ApiError:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition["type"]
    return None


def test_two_trainer_pods_rendezvous_by_name_and_train_like_one_process(
    control_plane: ControlPlane, namespace: str, tmp_path: pathlib.Path
) -> None:
    dataset = write_dataset(tmp_path / "data.jsonl")
    run = _run(namespace, dataset, hosts=2)
    settings = OperatorSettings(default_image=IMAGE, artifacts_base_uri=str(tmp_path / "artifacts"))
    children = build_children(run, RunRef("mh", namespace, str(uuid.uuid4())), settings, attempt=0)
    node = f"cpu-{uuid.uuid4().hex[:6]}"
    api = Api(control_plane.api_client(), user_agent="test-multihost/1", pool_size=2)
    kubelet = ProcessKubelet(
        control_plane.api_client(),
        tmp_path / "kubelet",
        nodes=(Node(node, cpu="16"),),
        images={IMAGE: "process"},
        path_prefix=(str(pathlib.Path(sys.executable).parent),),
    )
    with kubelet:
        for child in children:
            child["metadata"].pop("ownerReferences", None)  # no TunixRun here: the GC would delete them
            if child["kind"] == "Job":
                child["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            group, plural = PLURALS[child["kind"]]
            api.request("POST", f"/{group}/namespaces/{namespace}/{plural}", child)
        deadline = time.monotonic() + TIMEOUT
        while (outcome := _job_done(api, namespace, "mh-0")) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        pods = kubelet.wait_for_pods("batch.kubernetes.io/job-name=mh-0", 2, namespace=namespace)
        logs = "\n".join(
            f"--- {p['metadata']['name']}\n{kubelet.logs(p['metadata']['name'], namespace)[-3000:]}"
            for p in pods
        )
        assert outcome == "Complete", logs
    assert not kubelet.errors, kubelet.errors
    api.close()

    first = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert json.loads(first["message"])["totalSteps"] == STEPS  # the trainer's summary, from process 0
    out = tmp_path / "artifacts" / namespace / "mh"
    assert json.loads((out / artifacts.SUMMARY_FILE).read_text())["provenance"]["process_count"] == 2
    records = read_jsonl(out / artifacts.METRICS_FILE)

    # The same run in one process (this one), from the run.yaml the pods read.
    from tunix_trainer.train import main

    config = tmp_path / "run.yaml"
    document = yaml.safe_load(children[-1]["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    document["spec"].pop("accelerator", None)
    config.write_text(yaml.safe_dump(document))
    reference = tmp_path / "reference"
    argv = [
        "--config",
        str(config),
        "--artifacts-uri",
        str(reference),
        "--checkpoint-uri",
        str(tmp_path / "reference-checkpoints"),
        "--resume",
        "none",
        "--termination-log",
        str(tmp_path / "reference-termination"),
    ]
    assert main(argv, stop_event=threading.Event()) == ExitCode.SUCCESS
    tokens = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]  # target tokens of a global batch
    assert_losses_match(records, read_jsonl(reference / artifacts.METRICS_FILE), tokens)
