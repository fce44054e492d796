"""The whole flow through the real kubectl binary and the real operator entry point.

The operator runs as ``python -m tunix_operator --kubeconfig ...`` (a separate process that
knows only a kubeconfig); the simulated kubelet plays the trainer: it writes progress.json and
ends the pod with a JSON summary as termination message.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kubeemu import ContainerResult, EmulatedCluster, SimulatedKubelet
from tests.kubeemu.fixtures import kubectl

pytestmark = pytest.mark.e2e
SUMMARY = {"finalLoss": 1.75, "totalSteps": 20, "avgTokensPerSecond": 300.0, "provenance": {"image": "test"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def artifacts(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def operator_process(
    kubeconfig: pathlib.Path, artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[dict[str, Any]]:
    ports = {"metrics": free_port(), "liveness": free_port()}
    env = {
        **os.environ,
        "TUNIX_ARTIFACTS_BASE_URI": artifacts.as_uri(),
        "TUNIX_RESYNC_INTERVAL_SECONDS": "1",
        "TUNIX_PROGRESS_INTERVAL_SECONDS": "0.5",
        "TUNIX_DEFAULT_IMAGE": "tunix/trainer:e2e",
    }
    log = (tmp_path / "operator.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunix_operator",
            "--kubeconfig",
            str(kubeconfig),
            "--standalone",
            "--metrics-port",
            str(ports["metrics"]),
            "--liveness",
            f"http://127.0.0.1:{ports['liveness']}/healthz",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield {"process": process, "ports": ports, "log": tmp_path / "operator.log"}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def trainer(artifacts: pathlib.Path) -> Any:
    def run(pod: dict[str, Any]) -> ContainerResult:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        out = artifacts / env["TUNIX_NAMESPACE"] / env["TUNIX_RUN_NAME"]
        out.mkdir(parents=True, exist_ok=True)
        progress = {"step": 10, "totalSteps": 20, "loss": 2.0, "updatedAt": "2099-01-01T00:00:00Z"}
        (out / "progress.json").write_text(json.dumps(progress))
        time.sleep(1.5)
        return ContainerResult(exit_code=0, message=json.dumps(SUMMARY))

    return run


def test_apply_wait_describe_delete(
    cluster: EmulatedCluster,
    kubeconfig: pathlib.Path,
    artifacts: pathlib.Path,
    operator_process: dict[str, Any],
    tmp_path: pathlib.Path,
) -> None:
    manifest = yaml.safe_load(pathlib.Path("examples/run.yaml").read_text())
    manifest["metadata"]["name"] = "e2e"
    manifest["spec"]["accelerator"] = {"type": "nvidia.com/gpu", "countPerHost": 1}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(manifest))

    with SimulatedKubelet(cluster, runner=trainer(artifacts)):
        kubectl(kubeconfig, "apply", "-f", str(path))
        kubectl(
            kubeconfig,
            "wait",
            "trun/e2e",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=60s",
            timeout=70,
        )

    get = lambda expr: kubectl(kubeconfig, "get", "trun", "e2e", "-o", f"jsonpath={expr}").stdout  # noqa: E731
    assert get("{.status.summary.finalLoss}") == "1.75"
    assert get("{.status.progress.stepOfTotal}") == "20/20"
    assert get("{.status.attempt}") == "0"
    jobs = kubectl(
        kubeconfig, "get", "jobs", "-l", "tunix.dev/run=e2e", "-o", "jsonpath={.items[*].metadata.name}"
    )
    assert jobs.stdout == "e2e-0"
    gpu = kubectl(
        kubeconfig,
        "get",
        "job",
        "e2e-0",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].resources.limits.nvidia\\.com/gpu}",
    )
    assert gpu.stdout == "1"

    described = kubectl(kubeconfig, "describe", "trun", "e2e").stdout
    assert "Succeeded" in described and "Created" in described

    metrics = http_get(f"http://127.0.0.1:{operator_process['ports']['metrics']}/metrics")
    assert 'tunix_runs{phase="Succeeded"} 1.0' in metrics
    assert http_get(f"http://127.0.0.1:{operator_process['ports']['liveness']}/healthz")

    kubectl(kubeconfig, "delete", "trun", "e2e", "--wait=true", "--timeout=30s", timeout=40)
    left = kubectl(kubeconfig, "get", "jobs,configmaps", "-l", "tunix.dev/run=e2e", "-o", "name").stdout
    assert left.strip() == ""
    assert operator_process["process"].poll() is None, operator_process["log"].read_text()[-3000:]
