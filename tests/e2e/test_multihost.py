"""A multi-host run (``accelerator.hosts: 2``) on the real control plane, with the real trainer.

The operator creates the run's headless Service and an Indexed Job of two pods; the process kubelet
runs both as ``tunix-train`` processes of this venv, each with its own hostname and a hosts file that
names its peers as the cluster DNS would. The two processes meet at the coordinator address the
operator builds (``<job>-0.<service>:8476``), train data-parallel over JAX's CPU collectives (gloo)
and checkpoint to the run's shared volume. Their losses match a one-process run of the same global
batches within ``tests/trainer/data_parallel.py``'s tolerance.
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import kubectl
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.e2e.test_kubectl_flow import E2E_IMAGE, artifacts, operator_process  # noqa: F401 (fixtures)
from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset
from tests.trainer.data_parallel import assert_losses_match, max_relative_difference
from tunix_api.exit_codes import ExitCode

pytestmark = pytest.mark.e2e
NAME = "mh"
HOSTS = 2
STEPS = 8
TOKENS = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]


@pytest.fixture
def host_kubelet(control_plane: ControlPlane, tmp_path: pathlib.Path) -> Iterator[ProcessKubelet]:
    """One CPU node per host; its kubelet runs the trainer image as local processes of this venv."""
    suffix = uuid.uuid4().hex[:8]
    nodes = tuple(Node(f"host-{index}-{suffix}") for index in range(HOSTS))
    with ProcessKubelet(
        control_plane.api_client(), tmp_path / "kubelet", nodes=nodes,
        images={E2E_IMAGE: "process"}, path_prefix=(str(pathlib.Path(sys.executable).parent),),
    ) as kubelet:  # fmt: skip
        yield kubelet
        assert not kubelet.errors, kubelet.errors


def run_manifest(tmp_path: pathlib.Path) -> dict[str, Any]:
    """A small model on two CPU hosts, checkpoints on a provisioned volume both pods mount."""
    return {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": NAME},
        "spec": {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(write_dataset(tmp_path / "data.jsonl"))},
            "device": {"kind": "cpu"},
            "accelerator": {"hosts": HOSTS},
            "training": {**SMALL_TRAINING, "steps": STEPS},
            "checkpoint": {
                "saveIntervalSteps": 4,
                "volume": {"size": "1Gi", "reclaimPolicy": "Delete"},
            },
            "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
        },
    }


def one_process_metrics(manifest: dict[str, Any], directory: pathlib.Path) -> list[dict[str, Any]]:
    """The same spec trained in this process (one process, the same global batches)."""
    from tunix_trainer.train import main

    config = directory / "one-process.yaml"
    config.write_text(yaml.safe_dump(manifest))
    out = directory / "one-process"
    argv = ["--config", str(config), "--artifacts-uri", str(out), "--resume", "none"]
    assert main(argv, stop_event=threading.Event()) == ExitCode.SUCCESS
    return read_jsonl(out / "metrics.jsonl")


@pytest.mark.timeout(600)  # two trainers compiling at once on a loaded 2-core machine
def test_two_hosts_rendezvous_by_name_and_train_like_one_process(
    kubeconfig: pathlib.Path,
    namespace: str,
    artifacts: pathlib.Path,  # noqa: F811
    operator_process: dict[str, Any],  # noqa: F811
    host_kubelet: ProcessKubelet,
    tmp_path: pathlib.Path,
) -> None:
    manifest = run_manifest(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kubectl(kubeconfig, "apply", "-f", str(path))
    waited = kubectl(kubeconfig, "wait", f"trun/{NAME}", "--for=jsonpath={.status.phase}=Succeeded",
                     "--timeout=420s", timeout=440, check=False)  # fmt: skip
    pods = json.loads(kubectl(kubeconfig, "get", "pods", "-l", f"tunix.dev/run={NAME}", "-o", "json").stdout)
    pods = sorted(pods["items"], key=lambda p: p["spec"].get("hostname", ""))
    if waited.returncode != 0:
        logs = {p["metadata"]["name"]: host_kubelet.logs(p["metadata"]["name"])[-3000:] for p in pods}
        run = kubectl(kubeconfig, "get", "trun", NAME, "-o", "yaml").stdout
        raise AssertionError(
            f"not Succeeded: {waited.stderr}\n{run}\ntrainer logs: {logs}"
            f"\noperator: {operator_process['log'].read_text()[-3000:]}"
        )

    # Two pods of one Indexed Job, named under the headless Service, both exited 0.
    service = json.loads(kubectl(kubeconfig, "get", "service", NAME, "-o", "json").stdout)
    assert service["spec"]["clusterIP"] == "None"
    assert len(pods) == HOSTS
    assert [p["spec"]["subdomain"] for p in pods] == [NAME] * HOSTS
    assert [p["spec"]["hostname"][-2:] for p in pods] == ["-0", "-1"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"] * HOSTS
    coordinator = f"{pods[0]['spec']['hostname']}.{NAME}:8476"
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["TUNIX_COORDINATOR_ADDRESS"] == coordinator
        assert env["TUNIX_NUM_PROCESSES"] == str(HOSTS)

    status = json.loads(kubectl(kubeconfig, "get", "trun", NAME, "-o", "json").stdout)["status"]
    assert status["summary"]["totalSteps"] == STEPS
    assert status["provenance"]["process_count"] == str(HOSTS), status["provenance"]
    assert status["provenance"]["device_count"] == str(HOSTS)

    records = read_jsonl(artifacts / namespace / NAME / "metrics.jsonl")
    reference = one_process_metrics(manifest, tmp_path)
    difference = max_relative_difference(records, reference)
    print(f"max relative loss difference, {HOSTS} hosts vs 1 process: {difference:.2e}")
    assert_losses_match(records, reference, TOKENS)
