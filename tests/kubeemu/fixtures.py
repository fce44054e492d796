"""pytest fixtures for the emulated cluster (register with ``pytest_plugins = ["tests.kubeemu.fixtures"]``).

With ``TUNIX_E2E_KUBECONFIG`` set, ``kubeconfig`` points at that real cluster instead, and tests that
need emulator-only features (``cluster``, ``kubelet``) are skipped.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from tests.kubeemu.cluster import EmulatedCluster
from tests.kubeemu.kubelet import SimulatedKubelet

KUBECTL = "/usr/bin/kubectl"
CRDS_DIR = pathlib.Path(__file__).resolve().parents[2] / "crds"
REAL_CLUSTER_ENV = "TUNIX_E2E_KUBECONFIG"


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    """A fresh, started emulated cluster with the project's CRDs (``crds/*.yaml``) installed."""
    if os.environ.get(REAL_CLUSTER_ENV):
        pytest.skip(f"emulator-only test: {REAL_CLUSTER_ENV} points at a real cluster")
    with EmulatedCluster() as emulated:
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            emulated.install_crd(path)
        yield emulated


@pytest.fixture
def kubeconfig(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> pathlib.Path:
    """A kubeconfig for the emulated cluster (or the real one); kubectl gets its own discovery cache."""
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
    real = os.environ.get(REAL_CLUSTER_ENV)
    if real:
        return pathlib.Path(real)
    emulated: EmulatedCluster = request.getfixturevalue("cluster")
    return emulated.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kubelet(cluster: EmulatedCluster) -> Iterator[SimulatedKubelet]:
    """A started Job controller + kubelet that starts pods automatically (no runner)."""
    with SimulatedKubelet(cluster) as simulated:
        yield simulated


def kubectl(
    kubeconfig: pathlib.Path, *args: str, check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run /usr/bin/kubectl against the kubeconfig (KUBECACHEDIR from the environment, see ``kubeconfig``)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.setdefault("KUBECACHEDIR", str(pathlib.Path(kubeconfig).parent / "kube-cache"))
    result = subprocess.run(
        [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result
