"""An emulated Kubernetes cluster for tests: an API server over kmock 0.8 plus a Job controller and kubelet.

- :class:`EmulatedCluster` serves an in-memory Kubernetes API over real HTTP (its own thread and loop);
- :class:`SimulatedKubelet` runs Jobs' pods through their phases, acting only through that HTTP API;
- ``tests.kubeemu.fixtures``: pytest fixtures (``cluster``, ``kubeconfig``, ``kubelet``) and ``kubectl``.

Fidelity and its known limits are listed in ``tests/kubeemu/README.md``.
"""

from tests.kubeemu.cluster import EmulatedCluster
from tests.kubeemu.kubelet import ContainerResult, SimulatedKubelet
from tests.kubeemu.server import RequestRecord

__all__ = ["ContainerResult", "EmulatedCluster", "RequestRecord", "SimulatedKubelet"]
