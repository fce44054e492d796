"""Fixtures of the emulated cluster (tests.kubeemu), for kubectl-driven tests."""

from tests.kubeemu.fixtures import cluster, kubeconfig, kubelet  # noqa: F401  (fixtures)
