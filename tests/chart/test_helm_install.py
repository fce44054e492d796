"""``helm install`` of the chart into the emulated cluster, through a kubeconfig, and ``helm uninstall``.

Helm keeps release records in Secrets written as protobuf, which the emulator does not speak: the
release storage is Helm's in-memory driver here (the objects themselves go to the emulator).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import helm_python
import kubernetes
import pytest
import yaml

from tests.chart.chart_render import CHART_DIR, NAMESPACE, RELEASE
from tests.kubeemu import EmulatedCluster

pytestmark = pytest.mark.e2e
REPO = CHART_DIR.parents[1]
WATCHED = ("team-a", "team-b")


@pytest.fixture
def emulated() -> Iterator[EmulatedCluster]:
    with EmulatedCluster(namespaces=("default", NAMESPACE, *WATCHED)) as cluster:
        yield cluster


@pytest.fixture
def helm(emulated: EmulatedCluster, tmp_path: Path) -> helm_python.Config:
    kubeconfig = emulated.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    return helm_python.Config(kubeconfig_path=str(kubeconfig), namespace=NAMESPACE, storage_driver="memory")


def _names(items) -> set[tuple[str | None, str]]:
    return {(i.metadata.namespace, i.metadata.name) for i in items}


def test_install_namespaced_with_peering_then_uninstall(emulated: EmulatedCluster, helm) -> None:
    values = {"watchNamespaces": list(WATCHED), "replicas": 2}
    release = helm.install(CHART_DIR, RELEASE, values, namespace=NAMESPACE, timeout=60)
    assert release["status"] == "deployed"
    assert "kubectl get trun -w" in release["notes"]

    api = emulated.api_client()
    crds = kubernetes.client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    assert {c.metadata.name for c in crds} >= {"tunixruns.tunix.dev", "kopfpeerings.kopf.dev"}

    apps, rbac, core = (kubernetes.client.AppsV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api),
                        kubernetes.client.CoreV1Api(api))  # fmt: skip
    (deployment,) = apps.list_namespaced_deployment(NAMESPACE).items
    assert deployment.spec.replicas == 2
    assert deployment.spec.template.spec.containers[0].args == ["--peering"]
    assert _names(rbac.list_role_for_all_namespaces().items) == {
        (ns, "tunix-tunix-operator") for ns in WATCHED
    }
    assert _names(rbac.list_role_binding_for_all_namespaces().items) == {
        (ns, "tunix-tunix-operator") for ns in WATCHED
    }
    assert (NAMESPACE, "tunix-tunix-operator") in _names(
        core.list_namespaced_service_account(NAMESPACE).items
    )
    custom = kubernetes.client.CustomObjectsApi(api)
    for ns in WATCHED:
        peering = custom.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", "tunix-operator")
        assert peering["metadata"]["name"] == "tunix-operator"

    # The installed CRD serves TunixRuns.
    run = yaml.safe_load((REPO / "examples/cpu-cluster.yaml").read_text())
    custom.create_namespaced_custom_object("tunix.dev", "v1alpha1", WATCHED[0], "tunixruns", run)
    assert custom.get_namespaced_custom_object("tunix.dev", "v1alpha1", WATCHED[0], "tunixruns", "cpu-tiny")

    helm.uninstall(RELEASE)
    assert apps.list_namespaced_deployment(NAMESPACE).items == []
    assert rbac.list_role_for_all_namespaces().items == []
    # Helm never deletes CRDs from crds/: runs survive an uninstall (docs/INSTALL.md says how to remove them).
    crds = kubernetes.client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    assert "tunixruns.tunix.dev" in {c.metadata.name for c in crds}
    assert emulated.internal_errors == []


def test_install_cluster_wide(emulated: EmulatedCluster, helm) -> None:
    helm.install(CHART_DIR, RELEASE, {}, namespace=NAMESPACE, timeout=60)
    api = emulated.api_client()
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    roles = {r.metadata.name: r for r in rbac.list_cluster_role().items}
    rules = roles["tunix-tunix-operator"].rules
    assert any("tunixruns" in r.resources and "watch" in r.verbs for r in rules)
    assert rbac.list_role_for_all_namespaces().items == []
    (deployment,) = kubernetes.client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items
    assert deployment.spec.template.spec.containers[0].args == ["--standalone"]
    assert emulated.internal_errors == []
