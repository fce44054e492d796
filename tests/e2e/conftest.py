"""Fixtures of the e2e tests: the operator as a process, and where the runs' artifacts go."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.controlplane import free_port
from tests.cluster.fixtures import OperatorIdentity

E2E_IMAGE = "tunix/trainer:e2e"  # the operator's default image; the process kubelet runs it as tunix-train


@pytest.fixture
def artifacts(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def operator_process(
    operator_identity: OperatorIdentity, namespace: str, artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[dict[str, Any]]:
    ports = {"metrics": free_port(), "liveness": free_port()}
    env = {
        **os.environ,
        "TUNIX_ARTIFACTS_BASE_URI": artifacts.as_uri(),
        "TUNIX_RESYNC_INTERVAL_SECONDS": "1",
        "TUNIX_PROGRESS_INTERVAL_SECONDS": "0.5",
        "TUNIX_MAX_PROGRESS_READS_PER_SECOND": "1000",
        "TUNIX_DEFAULT_IMAGE": E2E_IMAGE,
    }
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tunix_operator", "--kubeconfig", str(operator_identity.kubeconfig),
             "--namespace", namespace, "--standalone", "--metrics-port", str(ports["metrics"]),
             "--liveness", f"http://127.0.0.1:{ports['liveness']}/healthz"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield {"process": process, "ports": ports, "log": log_path}
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
