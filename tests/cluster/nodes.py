"""The Nodes a process kubelet registers: their manifests and status (pure), registration, heartbeats
(Lease in kube-node-lease + the Ready condition's heartbeat) and removal.

The control plane here runs no node-lifecycle controller, so the kubelet also stands in for its one
duty that matters to scheduling: the TaintNodesByCondition admission plugin puts
``node.kubernetes.io/not-ready:NoSchedule`` on every new Node, and the kubelet removes it once it has
posted Ready=True (the node-lifecycle controller would, on seeing Ready).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.cluster.podnet import HOST_IP
from tests.cluster.podstatus import now, now_micro
from tests.cluster.rawapi import MERGE_PATCH, STRATEGIC_MERGE_PATCH, Api, ApiError, path_of

Obj = dict[str, Any]
KUBELET_VERSION = "v1.37.2"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40  # the real kubelet's default lease duration
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
_PRESSURE = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


@dataclass(frozen=True)
class Node:
    """One Node a process kubelet registers and runs pods for. ``extended`` resources (e.g.
    ``{"nvidia.com/gpu": "8"}``) join cpu, memory and pods in capacity and allocatable."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    extended: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()

    def resources(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods), **self.extended}


def node_manifest(node: Node) -> Obj:
    """The Node object the kubelet creates (the well-known labels the real kubelet sets, then ``labels``)."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        **node.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in node.taints]},
    }


def node_conditions(at: str, transition: str) -> list[Obj]:
    """Ready=True and no pressure, heartbeat ``at``."""
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": at,
            "lastTransitionTime": transition,
        }
        for kind, reason, message in _PRESSURE
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": at,
            "lastTransitionTime": transition,
        }
    )
    return conditions


def node_status(node: Node, at: str, transition: str) -> Obj:
    """The status the kubelet posts: capacity = allocatable, conditions, addresses, nodeInfo."""
    return {
        "status": {
            "capacity": node.resources(),
            "allocatable": node.resources(),
            "conditions": node_conditions(at, transition),
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "process-kubelet",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
    }


def lease_manifest(node_name: str, node_uid: str, renew: str) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}],
        },
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew},
    }


def without_taint(taints: Sequence[Obj], key: str) -> list[Obj]:
    return [t for t in taints if t.get("key") != key]


class NodeAgent:
    """Registers, heartbeats and removes one kubelet's Nodes."""

    def __init__(self, api: Api, nodes: Sequence[Node]) -> None:
        self._api = api
        self._nodes = list(nodes)
        self._uids: dict[str, str] = {}
        self._since = now()

    def register(self) -> None:
        """Create each Node (or take over one left behind), post its status, clear the not-ready taint."""
        for node in self._nodes:
            self._register(node)
        self.heartbeat()

    def _register(self, node: Node) -> None:
        path = path_of("api", "v1", "nodes", node.name)
        manifest = node_manifest(node)
        try:
            created = self._api.request("POST", "/api/v1/nodes", manifest)
        except ApiError as exc:
            if exc.code != 409:
                raise
            created = self._api.request(
                "PATCH",
                path,
                {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]},
                content_type=MERGE_PATCH,
            )
        self._uids[node.name] = created["metadata"]["uid"]
        self._api.request(
            "PATCH",
            path + "/status",
            node_status(node, now(), self._since),
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._clear_not_ready(path)

    def _clear_not_ready(self, path: str) -> None:
        """What the node-lifecycle controller does on Ready=True (it does not run here)."""
        for _ in range(10):
            current = self._api.request("GET", path)
            taints = (current.get("spec") or {}).get("taints") or []
            kept = without_taint(taints, NOT_READY_TAINT)
            if kept == taints:
                return
            body = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"taints": kept},
            }
            try:
                self._api.request("PATCH", path, body, content_type=MERGE_PATCH)
                return
            except ApiError as exc:
                if exc.code != 409:
                    raise
        raise RuntimeError(f"could not remove the {NOT_READY_TAINT} taint from {path}")

    def heartbeat(self) -> None:
        """Renew each Node's Lease and the Ready condition's heartbeat (re-creating a deleted Node)."""
        at, renew = now(), now_micro()
        for node in self._nodes:
            try:
                self._api.request(
                    "PATCH",
                    path_of("api", "v1", "nodes", node.name, "status"),
                    {"status": {"conditions": node_conditions(at, self._since)}},
                    content_type=STRATEGIC_MERGE_PATCH,
                )
            except ApiError as exc:  # deleted by someone else: register again, as a kubelet does
                if exc.code != 404:
                    raise
                self._register(node)
            lease = path_of(
                "apis", "coordination.k8s.io", "v1", "namespaces", LEASE_NAMESPACE, "leases", node.name
            )
            try:
                self._api.request(
                    "PATCH",
                    lease,
                    {"spec": {"renewTime": renew, "holderIdentity": node.name}},
                    content_type=MERGE_PATCH,
                )
            except ApiError as exc:
                if exc.code != 404:
                    raise
                try:
                    self._api.request("POST", LEASES, lease_manifest(node.name, self._uids[node.name], renew))
                except ApiError as missing:  # kube-node-lease is made by the API server soon after it starts
                    if missing.code != 404:
                        raise

    def remove(self) -> None:
        """Delete the Leases and Nodes (missing ones are fine)."""
        for node in self._nodes:
            for path in (
                path_of(
                    "apis", "coordination.k8s.io", "v1", "namespaces", LEASE_NAMESPACE, "leases", node.name
                ),
                path_of("api", "v1", "nodes", node.name),
            ):
                try:
                    self._api.request("DELETE", path)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
