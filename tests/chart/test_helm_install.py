"""The real ``helm`` binary installs, upgrades and uninstalls the chart on the real control plane.

Release records are Helm's own (Secrets, its default storage driver); the Deployment, ReplicaSets and
pods come from the real controllers and scheduler, so a values change is seen to reach the operator's
pod template and roll out (the chart's Recreate strategy: the old pod goes before the new one comes).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from tests.chart.chart_render import CHART_DIR
from tests.cluster.fixtures import helm_binary, kubectl
from tests.integration.harness import wait_for

pytestmark = pytest.mark.e2e
REPO = CHART_DIR.parents[1]


class Helm:
    """The helm CLI against one kubeconfig, with its caches in a private directory."""

    def __init__(self, kubeconfig: pathlib.Path, home: pathlib.Path) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([helm_binary(), *args], env=self.env, capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@pytest.fixture
def release(namespace: str) -> str:
    return f"t{uuid.uuid4().hex[:6]}"  # cluster-scoped RBAC names derive from it: one per test


@pytest.fixture
def helm(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Helm:
    return Helm(kubeconfig, tmp_path / "helm")


@pytest.fixture
def watched(admin_api: kubernetes.client.ApiClient, namespace: str) -> Iterator[list[str]]:
    """Two more namespaces for the operator to watch."""
    core = kubernetes.client.CoreV1Api(admin_api)
    names = [f"{namespace[:50]}-w{i}" for i in range(2)]
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
    yield names
    for name in names:
        core.delete_namespace(name)


def _values(helm: Helm, release: str, namespace: str) -> dict[str, Any]:
    return json.loads(helm("get", "values", release, "-n", namespace, "-o", "json").stdout) or {}


def _pod_env(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, str]:
    """The env of the operator pod that the Deployment's current ReplicaSet made (one pod)."""
    pods = (
        kubernetes.client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=tunix-operator")
        .items
    )
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    if len(live) != 1:
        return {}
    return {e.name: e.value for e in live[0].spec.containers[0].env or [] if e.value is not None}


def test_install_upgrade_uninstall_namespaced(
    helm: Helm, release: str, namespace: str, watched: list[str], admin_api: kubernetes.client.ApiClient,
    kubeconfig: pathlib.Path,
) -> None:  # fmt: skip
    ns_list = "{" + ",".join(watched) + "}"
    installed = helm(
        "install", release, str(CHART_DIR), "-n", namespace, "--set", f"watchNamespaces={ns_list}",
        "--set", "replicas=2", "--set", "trainer.image=trainer:one", "-o", "json",
    )  # fmt: skip
    info = json.loads(installed.stdout)
    assert info["info"]["status"] == "deployed"
    assert "kubectl get trun -w" in info["info"]["notes"]

    apps = kubernetes.client.AppsV1Api(admin_api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin_api)
    (deployment,) = apps.list_namespaced_deployment(namespace).items
    assert deployment.spec.replicas == 2
    assert deployment.spec.template.spec.containers[0].args == ["--peering"]
    full = f"{release}-tunix-operator"
    assert {(r.metadata.namespace, r.metadata.name) for r in rbac.list_role_for_all_namespaces().items
            if r.metadata.name == full} == {(ns, full) for ns in watched}  # fmt: skip
    custom = kubernetes.client.CustomObjectsApi(admin_api)
    for ns in watched:
        assert custom.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", "tunix-operator")
    # The real controllers made the operator's pods from the Deployment.
    wait_for(lambda: _pod_env(admin_api, namespace) == {} and apps.read_namespaced_deployment(
        full, namespace).status.replicas == 2, timeout=30, what="2 operator pods")  # fmt: skip

    # The installed CRD serves TunixRuns, validated by the server.
    run = yaml.safe_load((REPO / "examples" / "cpu-cluster.yaml").read_text())
    custom.create_namespaced_custom_object("tunix.dev", "v1alpha1", watched[0], "tunixruns", run)

    # upgrade: a values change reaches the operator's pods (Recreate: old pods go, new ones come).
    helm("upgrade", release, str(CHART_DIR), "-n", namespace, "--reuse-values", "--set", "replicas=1",
         "--set", "trainer.image=trainer:two")  # fmt: skip
    assert _values(helm, release, namespace)["trainer"]["image"] == "trainer:two"
    env = wait_for(lambda: _pod_env(admin_api, namespace).get("TUNIX_DEFAULT_IMAGE") == "trainer:two"
                   and _pod_env(admin_api, namespace), timeout=60, what="the new operator pod")  # fmt: skip
    assert env["TUNIX_WATCH_NAMESPACES"] == ",".join(watched)
    history = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s")
    assert apps.list_namespaced_deployment(namespace).items == []
    assert not [r for r in rbac.list_role_for_all_namespaces().items if r.metadata.name == full]
    assert full not in {r.metadata.name for r in rbac.list_cluster_role().items}
    # Helm never deletes CRDs from crds/: runs survive an uninstall (docs/INSTALL.md says how to remove them).
    assert kubectl(kubeconfig, "get", "trun", "cpu-tiny", "-n", watched[0], "-o", "name").stdout.strip()


def test_install_cluster_wide(helm: Helm, release: str, namespace: str,
                              admin_api: kubernetes.client.ApiClient) -> None:  # fmt: skip
    helm("install", release, str(CHART_DIR), "-n", namespace)
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin_api)
    full = f"{release}-tunix-operator"
    rules = rbac.read_cluster_role(full).rules
    assert any("tunixruns" in r.resources and "watch" in r.verbs for r in rules)
    assert not [r for r in rbac.list_role_for_all_namespaces().items if r.metadata.name == full]
    (deployment,) = kubernetes.client.AppsV1Api(admin_api).list_namespaced_deployment(namespace).items
    assert deployment.spec.template.spec.containers[0].args == ["--standalone"]
    helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s")
    assert full not in {r.metadata.name for r in rbac.list_cluster_role().items}
