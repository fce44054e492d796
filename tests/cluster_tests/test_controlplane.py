"""The local control plane is a real one: ready, authorizing with RBAC, admitting with policies, auditing."""

from __future__ import annotations

import pathlib
import time

import kubernetes
import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import kubectl


def test_readyz_and_versions_through_kubectl(control_plane: ControlPlane) -> None:
    assert kubectl(control_plane.admin_kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"
    version = kubectl(control_plane.admin_kubeconfig, "version", "-o", "yaml").stdout
    assert "gitVersion: v1.37.2" in version  # client and server: one build


def test_rbac_is_enforced_for_service_accounts(
    control_plane: ControlPlane, namespace: str, tmp_path: pathlib.Path
) -> None:
    admin = control_plane.admin_kubeconfig
    kubectl(admin, "create", "serviceaccount", "nobody", "-n", namespace)
    token = kubectl(admin, "create", "token", "nobody", "-n", namespace).stdout.strip()
    kubeconfig = control_plane.kubeconfig_for(
        tmp_path / "nobody", token=token, user="nobody", namespace=namespace
    )
    denied = kubectl(kubeconfig, "get", "pods", check=False)
    assert denied.returncode != 0
    assert f'User "system:serviceaccount:{namespace}:nobody" cannot list resource "pods"' in denied.stderr
    kubectl(admin, "create", "role", "reader", "--verb=list", "--resource=pods", "-n", namespace)
    kubectl(admin, "create", "rolebinding", "reader", "--role=reader",
            f"--serviceaccount={namespace}:nobody", "-n", namespace)  # fmt: skip
    assert kubectl(kubeconfig, "get", "pods").returncode == 0


def test_validating_admission_policies_are_enforced(control_plane: ControlPlane, namespace: str) -> None:
    admin = control_plane.admin_kubeconfig
    name = f"no-forbidden-{namespace}"[:60]
    policy = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}
  validations:
  - {{expression: "!has(object.data) || !('forbidden' in object.data)", message: no forbidden keys}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}
"""
    kubectl(admin, "apply", "-f", "-", input=policy)
    core = kubernetes.client.CoreV1Api(control_plane.api_client())
    forbidden = {"metadata": {"generateName": "c-"}, "data": {"forbidden": "1"}}
    denial: kubernetes.client.ApiException | None = None
    deadline = time.monotonic() + 15  # the policy takes effect once the API server's informer has it
    try:
        while denial is None and time.monotonic() < deadline:
            try:
                core.create_namespaced_config_map(namespace, forbidden)
                time.sleep(0.2)
            except kubernetes.client.ApiException as exc:
                denial = exc
    finally:
        kubectl(
            admin, "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False
        )
    assert denial is not None, "the ValidatingAdmissionPolicy was never enforced"
    assert denial.status == 422 and "no forbidden keys" in denial.body, denial.body  # reason Invalid


def test_the_audit_log_records_who_did_what(control_plane: ControlPlane, namespace: str) -> None:
    since = control_plane.audit_offset()
    kubectl(control_plane.admin_kubeconfig, "create", "configmap", "audited", "-n", namespace)
    events = control_plane.audit_events(user="tunix-test-admin", since=since)
    creates = [
        e for e in events if e["verb"] == "create" and (e.get("objectRef") or {}).get("name") == "audited"
    ]
    assert creates and creates[0]["objectRef"]["namespace"] == namespace
    assert creates[0]["responseStatus"]["code"] == 201


@pytest.mark.parametrize("component", ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_every_component_runs_and_logs(control_plane: ControlPlane, component: str) -> None:
    control_plane.check_alive()
    assert (control_plane.logs_dir / f"{component}.log").exists()
