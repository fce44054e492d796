"""Fixtures: the real control plane (tests.cluster) and the operator running against it."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests.cluster.fixtures import OperatorIdentity
from tests.integration.harness import Api, OperatorThread, fast_settings


@pytest.fixture
def artifacts_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def start_operator(
    operator_identity: OperatorIdentity, namespace: str, artifacts_dir: pathlib.Path
) -> Iterator[Callable[..., OperatorThread]]:
    """Start (and at the end stop) operators watching the test's namespace; keyword arguments override
    the fast test settings."""
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        overrides.setdefault("watch_namespaces", (namespace,))
        settings = fast_settings(artifacts_dir.as_uri(), **overrides)
        op = OperatorThread(operator_identity, settings).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator(start_operator: Callable[..., OperatorThread]) -> OperatorThread:
    return start_operator()


@pytest.fixture
def k8s(admin_api: kubernetes.client.ApiClient, namespace: str) -> Api:
    """The test's (admin) view of its namespace."""
    return Api(admin_api, namespace)
