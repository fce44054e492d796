"""Fixtures: the emulated cluster (tests.kubeemu) and the operator running against it."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests.integration.harness import Api, OperatorThread, fast_settings
from tests.kubeemu import EmulatedCluster


@pytest.fixture
def artifacts_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def start_operator(
    cluster: EmulatedCluster,
    artifacts_dir: pathlib.Path,
) -> Iterator[Callable[..., OperatorThread]]:
    """Start (and at the end stop) operators; keyword arguments override the fast test settings."""
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        settings = fast_settings(artifacts_dir.as_uri(), **overrides)
        op = OperatorThread(cluster.url, cluster.api_client(), settings).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator(start_operator: Callable[..., OperatorThread]) -> OperatorThread:
    return start_operator()


@pytest.fixture
def api(cluster: EmulatedCluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def k8s(api: kubernetes.client.ApiClient) -> Api:
    return Api(api)
