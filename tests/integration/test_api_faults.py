"""API faults between the operator and the real API server: 500s, 409 Conflicts and cut watches.

The operator talks to the API server only through :class:`FaultProxy`; each test arms faults on the
calls a lifecycle needs and checks the run still converges, with nothing created twice.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator

import pytest

from tests.cluster import controlplane
from tests.cluster.controlplane import ControlPlane
from tests.cluster.faultproxy import FaultProxy
from tests.cluster.fixtures import OperatorIdentity
from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import (
    Api,
    OperatorThread,
    fast_settings,
    phase_is,
    pod_of,
    run_manifest,
    wait_for,
)

SUMMARY = {"finalLoss": 1.5, "totalSteps": 20, "provenance": {"jax": "0.10.2"}}


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy(control_plane) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def start_proxied_operator(
    proxy: FaultProxy, operator_identity: OperatorIdentity, control_plane: ControlPlane, namespace: str,
    artifacts_dir: pathlib.Path, tmp_path: pathlib.Path,
) -> Iterator[Callable[[], OperatorThread]]:  # fmt: skip
    """The operator, as the chart's ServiceAccount, reaching the API server only through the proxy."""
    kubeconfig = controlplane.write_kubeconfig(
        tmp_path / "proxied.kubeconfig", proxy.url, control_plane.ca.cert_pem, user="proxied-operator",
        token=operator_identity.token,
    )  # fmt: skip
    identity = OperatorIdentity(operator_identity.service_account, operator_identity.namespace,
                                operator_identity.token, kubeconfig)  # fmt: skip
    started: list[OperatorThread] = []

    def start() -> OperatorThread:
        settings = fast_settings(artifacts_dir.as_uri(), watch_namespaces=(namespace,))
        started.append(OperatorThread(identity, settings).start())
        return started[-1]

    yield start
    for op in started:
        op.stop()


def _injected(proxy: FaultProxy, method: str, fragment: str, status: int) -> int:
    return sum(
        1 for m, path, code in proxy.log.requests if m == method and fragment in path and code == status
    )


def test_500s_on_job_creation_are_retried_and_nothing_is_duplicated(
    proxy: FaultProxy, start_proxied_operator, kubelet: ProcessKubelet, k8s: Api
) -> None:
    proxy.fail("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs$", status=500, count=2)
    start_proxied_operator()
    k8s.create_run(run_manifest("flaky"))
    pod_of(kubelet, "flaky", 0, timeout=60)
    wait_for(phase_is(k8s, "flaky", "Running"), timeout=30, what="Running")
    assert _injected(proxy, "POST", "/jobs", 500) == 2
    assert k8s.jobs("flaky") == ["flaky-0"]
    assert k8s.status("flaky")["attempt"] == 0


def test_conflicts_on_status_patches_are_retried(
    proxy: FaultProxy, start_proxied_operator, kubelet: ProcessKubelet, k8s: Api
) -> None:
    proxy.fail("PATCH", r"/tunixruns/conflict/status$", status=409, count=3)
    start_proxied_operator()
    k8s.create_run(run_manifest("conflict"))
    pod = pod_of(kubelet, "conflict", 0, timeout=60)
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "conflict", "Succeeded"), timeout=60, what="Succeeded")
    assert _injected(proxy, "PATCH", "/tunixruns/conflict/status", 409) == 3
    assert k8s.status("conflict")["summary"]["finalLoss"] == 1.5
    assert k8s.jobs("conflict") == ["conflict-0"]


def test_cut_watches_neither_stall_nor_duplicate(
    proxy: FaultProxy, start_proxied_operator, kubelet: ProcessKubelet, k8s: Api
) -> None:
    start_proxied_operator()
    k8s.create_run(run_manifest("cut"))
    pod = pod_of(kubelet, "cut", 0, timeout=60)
    wait_for(phase_is(k8s, "cut", "Running"), timeout=30, what="Running")
    assert proxy.cut_watches() >= 1  # kopf's watch of TunixRuns at least
    kubelet.evict(pod["metadata"]["name"])
    assert proxy.cut_watches() >= 0
    pod = pod_of(kubelet, "cut", 1, timeout=60)
    proxy.cut_watches()
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "cut", "Succeeded"), timeout=60, what="Succeeded after cut watches")
    status = k8s.status("cut")
    assert (status["attempt"], status["preemptions"], status["restarts"]) == (1, 1, 0)
    assert k8s.jobs("cut") == ["cut-1"]
    assert proxy.log.watches_cut >= 1
