"""A multi-host run (``accelerator.hosts: 2``) on the real control plane, with the real trainer.

The operator creates the run's headless Service and an Indexed Job of two pods; the process kubelet
runs both as ``tunix-train`` processes of this venv, each with its own hostname and a hosts file that
names its peers as the cluster DNS would. The two processes meet at the coordinator address the
operator builds (``<job>-0.<service>:8476``), train data-parallel over JAX's CPU collectives (gloo)
and checkpoint to the run's shared volume. Their losses match a one-process run of the same global
batches within ``tests/trainer/data_parallel.py``'s tolerance. When one host is evicted, both stop
after the same step, and the operator's next attempt resumes the shared checkpoint.
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import kubectl
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.e2e.conftest import E2E_IMAGE
from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset
from tests.trainer.data_parallel import assert_losses_match, max_relative_difference
from tunix_api.exit_codes import ExitCode

pytestmark = pytest.mark.e2e
HOSTS = 2
STEPS = 100  # room for the stop: the hosts agree on a step some steps (0.3 s here) after the eviction
TOKENS = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]
COORDINATOR_PORT = 8476


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


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The dataset, and the JAX compilation cache the pods share (a later attempt compiles nothing)."""
    directory = tmp_path_factory.mktemp("multihost")
    write_dataset(directory / "data.jsonl")
    return directory


def run_manifest(name: str, shared: pathlib.Path) -> dict[str, Any]:
    """A small model on two CPU hosts, checkpoints on a provisioned volume both pods mount."""
    return {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": name},
        "spec": {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(shared / "data.jsonl")},
            "device": {"kind": "cpu"},
            "accelerator": {"hosts": HOSTS},
            "training": {**SMALL_TRAINING, "steps": STEPS},
            "checkpoint": {
                "saveIntervalSteps": 40,
                "volume": {"size": "1Gi", "reclaimPolicy": "Delete"},
            },
            "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
            "env": [
                {"name": "JAX_COMPILATION_CACHE_DIR", "value": str(shared / "jax-cache")},
                {"name": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "value": "0"},
            ],
        },
    }


@pytest.fixture(scope="module")
def reference(shared: pathlib.Path) -> list[dict[str, Any]]:
    """The same spec trained in this process (one process, the same global batches)."""
    from tunix_trainer.train import main

    config = shared / "one-process.yaml"
    config.write_text(yaml.safe_dump(run_manifest("one", shared)))
    out = shared / "one-process"
    argv = ["--config", str(config), "--artifacts-uri", str(out), "--resume", "none"]
    assert main(argv, stop_event=threading.Event()) == ExitCode.SUCCESS
    return read_jsonl(out / "metrics.jsonl")


def apply(kubeconfig: pathlib.Path, manifest: dict[str, Any], directory: pathlib.Path) -> None:
    path = directory / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kubectl(kubeconfig, "apply", "-f", str(path))


def run_pods(kubeconfig: pathlib.Path, name: str) -> list[dict[str, Any]]:
    """The run's pods, index order within each attempt."""
    pods = json.loads(kubectl(kubeconfig, "get", "pods", "-l", f"tunix.dev/run={name}", "-o", "json").stdout)
    return sorted(pods["items"], key=lambda p: p["spec"].get("hostname", ""))


def wait_succeeded(
    kubeconfig: pathlib.Path, name: str, kubelet: ProcessKubelet, operator_log: pathlib.Path
) -> dict[str, Any]:
    """The run's status once Succeeded; else fails with the run, the trainers' logs and the operator's."""
    waited = kubectl(kubeconfig, "wait", f"trun/{name}", "--for=jsonpath={.status.phase}=Succeeded",
                     "--timeout=420s", timeout=440, check=False)  # fmt: skip
    if waited.returncode != 0:
        pods = run_pods(kubeconfig, name)
        logs = {p["metadata"]["name"]: kubelet.logs(p["metadata"]["name"])[-3000:] for p in pods}
        run = kubectl(kubeconfig, "get", "trun", name, "-o", "yaml").stdout
        raise AssertionError(
            f"not Succeeded: {waited.stderr}\n{run}\ntrainer logs: {logs}"
            f"\noperator: {operator_log.read_text()[-3000:]}"
        )
    return json.loads(kubectl(kubeconfig, "get", "trun", name, "-o", "json").stdout)["status"]


def assert_matches_one_process(
    records: list[dict[str, Any]], reference: list[dict[str, Any]], status: dict[str, Any]
) -> None:
    assert status["summary"]["totalSteps"] == STEPS
    assert status["provenance"]["process_count"] == str(HOSTS), status["provenance"]
    assert status["provenance"]["device_count"] == str(HOSTS)
    difference = max_relative_difference(records, reference)
    print(f"max relative loss difference, {HOSTS} hosts vs 1 process, first 16 steps: {difference:.2e}")
    assert_losses_match(records, reference, TOKENS)


@pytest.mark.timeout(600)  # two trainers compiling at once on a loaded 2-core machine
def test_two_hosts_rendezvous_by_name_and_train_like_one_process(
    kubeconfig: pathlib.Path,
    namespace: str,
    artifacts: pathlib.Path,
    operator_process: dict[str, Any],
    host_kubelet: ProcessKubelet,
    shared: pathlib.Path,
    reference: list[dict[str, Any]],
    tmp_path: pathlib.Path,
) -> None:
    name = "mh"
    apply(kubeconfig, run_manifest(name, shared), tmp_path)
    status = wait_succeeded(kubeconfig, name, host_kubelet, operator_process["log"])

    # Two pods of one Indexed Job, named under the headless Service, met at index 0's name.
    service = json.loads(kubectl(kubeconfig, "get", "service", name, "-o", "json").stdout)
    assert service["spec"]["clusterIP"] == "None"
    pods = run_pods(kubeconfig, name)
    assert [p["spec"]["hostname"] for p in pods] == [f"{name}-0-{index}" for index in range(HOSTS)]
    assert [p["spec"]["subdomain"] for p in pods] == [name] * HOSTS
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"] * HOSTS
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["TUNIX_COORDINATOR_ADDRESS"] == f"{name}-0-0.{name}:{COORDINATOR_PORT}"
        assert env["TUNIX_NUM_PROCESSES"] == str(HOSTS)
    records = read_jsonl(artifacts / namespace / name / "metrics.jsonl")
    assert_matches_one_process(records, reference, status)


@pytest.mark.timeout(900)  # two attempts
def test_an_evicted_host_stops_both_and_the_next_attempt_resumes(
    kubeconfig: pathlib.Path,
    namespace: str,
    artifacts: pathlib.Path,
    operator_process: dict[str, Any],
    host_kubelet: ProcessKubelet,
    shared: pathlib.Path,
    reference: list[dict[str, Any]],
    tmp_path: pathlib.Path,
) -> None:
    name = "mh-evict"
    apply(kubeconfig, run_manifest(name, shared), tmp_path)
    progress = artifacts / namespace / name / "progress.json"
    deadline = time.monotonic() + 420
    while _progress_step(progress) < 2:  # both hosts trained two steps together
        assert time.monotonic() < deadline, operator_process["log"].read_text()[-3000:]
        time.sleep(0.05)
    evicted = next(p for p in run_pods(kubeconfig, name) if p["spec"]["hostname"] == f"{name}-0-1")
    host_kubelet.evict(evicted["metadata"]["name"], namespace=namespace)  # through the Eviction API
    status = wait_succeeded(kubeconfig, name, host_kubelet, operator_process["log"])

    assert status["preemptions"] == 1 and status["attempt"] == 1, status
    records = read_jsonl(artifacts / namespace / name / "metrics.jsonl")
    resumed = [r["restored_from"] for r in records if r.get("restored_from") is not None]
    assert len(resumed) == 1 and 2 <= resumed[0] < STEPS, resumed  # one checkpoint, both hosts' step
    assert_matches_one_process(records, reference, status)  # each step once, across the two attempts


def _progress_step(path: pathlib.Path) -> int:
    try:
        return int(json.loads(path.read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0
