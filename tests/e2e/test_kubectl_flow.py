"""The whole flow on the real control plane, through the real kubectl, with the real trainer.

The operator runs as ``python -m tunix_operator --kubeconfig <the chart's ServiceAccount>`` (a
separate process that knows only a kubeconfig and holds only the chart's RBAC); the process kubelet
runs the trainer image's command (``tunix-train``) as a local process of this venv, with the run's
run.yaml at /etc/tunix (a downwardAPI volume of the pod's annotation) and its checkpoint volume (a
provisioned PV) at /checkpoints.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import kubectl, kubectl_binary
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.e2e.conftest import E2E_IMAGE

pytestmark = pytest.mark.e2e
REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 30


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
def trainer_kubelet(control_plane: ControlPlane, tmp_path: pathlib.Path) -> Iterator[ProcessKubelet]:
    """One CPU node whose kubelet runs the trainer image as local processes of this venv."""
    with ProcessKubelet(
        control_plane.api_client(), tmp_path / "kubelet", nodes=(Node(f"cpu-{uuid.uuid4().hex[:8]}"),),
        images={E2E_IMAGE: "process"}, path_prefix=(str(pathlib.Path(sys.executable).parent),),
    ) as kubelet:  # fmt: skip
        yield kubelet
        assert not kubelet.errors, kubelet.errors


def golden_dataset(directory: pathlib.Path) -> pathlib.Path:
    path = directory / "golden.jsonl"
    subprocess.run([sys.executable, str(REPO / "tools" / "seed_golden_dataset.py"), "--output", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return path


def run_yaml(tmp_path: pathlib.Path) -> pathlib.Path:
    """examples/run.yaml, shortened, on a checkpoint volume, with the dataset at an absolute path."""
    manifest = yaml.safe_load((REPO / "examples" / "run.yaml").read_text())
    manifest["metadata"]["name"] = "e2e"
    spec = manifest["spec"]
    spec["dataset"]["uri"] = str(golden_dataset(tmp_path))
    spec["training"].update({"steps": STEPS, "warmupSteps": 5})
    spec["checkpoint"].update({"saveIntervalSteps": 10, "volume": {"size": "1Gi", "reclaimPolicy": "Delete"}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_apply_watch_wait_describe_delete_with_the_real_trainer(
    kubeconfig: pathlib.Path,
    namespace: str,
    artifacts: pathlib.Path,
    operator_process: dict[str, Any],
    trainer_kubelet: ProcessKubelet,
    tmp_path: pathlib.Path,
) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    watch = subprocess.Popen([kubectl_binary(), "get", "trun", "-w"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    watched_lines: list[str] = []

    def read_watch() -> None:
        for line in watch.stdout:
            watched_lines.append(line)

    reader = threading.Thread(target=read_watch, daemon=True)
    reader.start()
    try:
        kubectl(kubeconfig, "apply", "-f", str(run_yaml(tmp_path)))
        waited = kubectl(kubeconfig, "wait", "trun/e2e", "--for=jsonpath={.status.phase}=Succeeded",
                         "--timeout=180s", timeout=200, check=False)  # fmt: skip
        if waited.returncode != 0:
            pods = kubectl(kubeconfig, "get", "pods", "-o", "yaml", check=False).stdout
            logs = [trainer_kubelet.logs(p["metadata"]["name"]) for p in yaml.safe_load(pods)["items"]]
            run = kubectl(kubeconfig, "get", "trun", "e2e", "-o", "yaml").stdout
            raise AssertionError(
                f"not Succeeded: {waited.stderr}\n{run}"
                f"\ntrainer logs: {logs}\noperator: {operator_process['log'].read_text()[-3000:]}"
            )
        # `kubectl wait` and `kubectl get -w` are two watches: the second may print Succeeded later.
        deadline = time.monotonic() + 30
        while not any(" Succeeded " in line for line in watched_lines) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=10)
        reader.join(timeout=10)
    watched = "".join(watched_lines)

    # `kubectl get -w` streamed the server-printed columns through the phases.
    rows = [line.split() for line in watched.splitlines()]
    assert rows[0][:6] == ["NAME", "PHASE", "STEP", "LOSS", "TOKENS/S", "RESTARTS"], watched
    assert {row[1] for row in rows[1:]} >= {"Running", "Succeeded"}, watched
    final = kubectl(kubeconfig, "get", "trun", "e2e").stdout.splitlines()[1].split()
    assert final[:3] == ["e2e", "Succeeded", f"{STEPS}/{STEPS}"]

    status = json.loads(kubectl(kubeconfig, "get", "trun", "e2e", "-o", "json").stdout)["status"]
    summary = status["summary"]
    assert summary["totalSteps"] == STEPS and summary["finalLoss"] < 5.0
    records = [json.loads(line) for line in (artifacts / namespace / "e2e" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert status["metricsUri"].endswith(f"/{namespace}/e2e/metrics.jsonl")
    # the real trainer's progress.json (its attempt, durable checkpoints) fed the history and goodput
    (attempt,) = status["attempts"]
    assert (attempt["outcome"], attempt["exitCode"], attempt["lastStep"]) == ("Succeeded", 0, STEPS)
    assert attempt["firstStep"] >= 1 and status["checkpoint"]["latestStep"] == STEPS
    assert status["goodput"]["productiveSeconds"] > 0 and status["goodput"]["stepsLost"] == 0

    described = kubectl(kubeconfig, "describe", "trun", "e2e").stdout
    assert "Succeeded" in described and "Created" in described

    metrics = http_get(f"http://127.0.0.1:{operator_process['ports']['metrics']}/metrics")
    assert 'tunix_runs{phase="Succeeded"} 1.0' in metrics
    assert http_get(f"http://127.0.0.1:{operator_process['ports']['liveness']}/healthz")

    kubectl(kubeconfig, "delete", "trun", "e2e", "--wait=true", "--timeout=60s", timeout=70)
    left = kubectl(kubeconfig, "get", "jobs,configmaps,pvc", "-l", "tunix.dev/run=e2e", "-o", "name").stdout
    assert left.strip() == ""
    assert operator_process["process"].poll() is None, operator_process["log"].read_text()[-3000:]


def test_explain_documents_every_field(kubeconfig: pathlib.Path) -> None:
    """``kubectl explain`` reads the server's OpenAPI v3: every spec and status field has a description."""
    explained = kubectl(kubeconfig, "explain", "tunixrun.spec.training.steps").stdout
    assert "DESCRIPTION" in explained and "<empty>" not in explained
    recursive = kubectl(kubeconfig, "explain", "tunixrun.spec", "--recursive").stdout
    assert "training" in recursive and "checkpoint" in recursive
    document = json.loads(kubectl(kubeconfig, "get", "--raw", "/openapi/v3/apis/tunix.dev/v1alpha1").stdout)
    schema = document["components"]["schemas"]["dev.tunix.v1alpha1.TunixRun"]
    missing = [path for path in _undocumented(schema["properties"]["spec"], "spec")]
    missing += [path for path in _undocumented(schema["properties"]["status"], "status")]
    assert not missing, f"{len(missing)} fields without a description: {missing}"


def _undocumented(node: dict[str, Any], path: str) -> Iterator[str]:
    if not node.get("description"):
        yield path
    for name, child in (node.get("properties") or {}).items():
        yield from _undocumented(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict) and node["items"].get("properties"):
        for name, child in node["items"]["properties"].items():
            yield from _undocumented(child, f"{path}[].{name}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("properties"):
        for name, child in extra["properties"].items():
            yield from _undocumented(child, f"{path}{{}}.{name}")
