"""The Helm chart's RBAC is exactly what the operator uses, proven by the real authorizer.

The chart's ServiceAccount, Roles and bindings (rendered by the real ``helm``) are applied to the real
API server, and the real operator (kopf + handlers + reconciler) runs a whole lifecycle, reaching
every code path that talks to the API, as that ServiceAccount: the RBAC authorizer refuses anything
the chart does not grant (a refused call fails the lifecycle). The API server's audit log then lists
every request the ServiceAccount made; every permission the chart grants must have been used, or be
listed in :data:`RARELY_USED` with the reason. Four installs (:data:`MODES`): cluster-wide (default
values), ``watchNamespaces: [<ns>]``, and each with ``replicas: 2`` (kopf peering on the chart's
peering objects); the operator gets the settings the rendered Deployment gives it. Removing one needed
rule makes the run fail with the server's 403, reported in its status.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OperatorIdentity, install_operator_identity, kubectl, render_chart
from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import Api, OperatorThread, fast_settings, phase_is, run_manifest, wait_for
from tunix_operator.__main__ import load_settings, parse_args
from tunix_operator.settings import ENV_PREFIX, OperatorSettings

SUMMARY = {"finalLoss": 1.5, "totalSteps": 20, "provenance": {"jax": "0.10.2"}}

Permission = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)

# Granted by the chart but never requested in the lifecycle below, each with why it must stay.
RARELY_USED: dict[Permission, str] = {
    ("tunix.dev", "tunixruns", "patch"): (
        "kopf's own: it removes the tunix.dev/finalizer that operators before 2026-11-26 added (the "
        "daemon no longer needs one), and writes its progress annotations if a handler fails"
    ),
    ("tunix.dev", "tunixruns/finalizers", "update"): (
        "not a request: the OwnerReferencesPermissionEnforcement admission plugin (not among the "
        "default plugins, but common in hardened clusters) checks it when the operator creates "
        "children whose ownerReference has blockOwnerDeletion"
    ),
}

# Calls only some paths make; the lifecycle must reach each of them, or the test proves too little.
MUST_OBSERVE: set[Permission] = {
    ("tunix.dev", "tunixruns", "watch"),
    ("tunix.dev", "tunixruns/status", "patch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),  # preemption, suspend and TTL
    ("", "pods", "list"),
    ("", "persistentvolumeclaims", "create"),
    ("", "services", "create"),
    ("", "secrets", "get"),
    ("", "events", "create"),
}


# Chart values of each mode (``--set``; <ns> is the test's namespace); the operator runs with the
# settings the chart's Deployment gives it.
MODES: dict[str, tuple[str, ...]] = {
    "cluster-wide": (),
    "namespaced": ("watchNamespaces={<ns>}",),
    "cluster-wide-peering": ("replicas=2",),
    "namespaced-peering": ("replicas=2", "watchNamespaces={<ns>}"),
}


# --------------------------------------------------------------------------- pure helpers


def permission(event: dict[str, Any]) -> Permission:
    """(apiGroup, resource[/subresource], verb) of one audit event."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return (ref.get("apiGroup", ""), resource, event["verb"])


def resource_requests(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests for API resources; discovery (``/api``, ``/apis/...``, ``/version``) is granted to every
    authenticated user by the built-in ``system:discovery`` ClusterRole, not by the chart."""
    return [e for e in events if (e.get("objectRef") or {}).get("resource")]


def operator_container(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = (o for o in objects if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def granted(objects: Iterable[dict[str, Any]]) -> set[Permission]:
    """Every (group, resource, verb) any Role or ClusterRole of the chart grants."""
    return {
        (group, resource, verb)
        for obj in objects
        if obj["kind"] in ("Role", "ClusterRole")
        for rule in obj.get("rules", [])
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


# --------------------------------------------------------------------------- the lifecycle


def event_reasons(k8s: Api, run: str) -> set[str]:
    return {reason for _, reason in k8s.events(run)}


def running_pods(kubelet: ProcessKubelet, run: str, attempt: int, count: int = 1) -> list[dict[str, Any]]:
    selector = f"tunix.dev/run={run},tunix.dev/attempt={attempt}"
    return kubelet.wait_for_pods(selector, count=count, phase="Running")


def full_lifecycle(k8s: Api, kubelet: ProcessKubelet, artifacts_dir: pathlib.Path) -> None:
    """Every operator path that talks to the API, on two runs in the test's namespace."""
    k8s.core.create_namespaced_secret(
        k8s.ns, {"metadata": {"name": "s3-creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "test"}}
    )
    # "life": PVC, Service (2 hosts), Secret read, progress, preemption, success, TTL.
    k8s.create_run(
        run_manifest(
            "life",
            accelerator={"type": "nvidia.com/gpu", "countPerHost": 1, "hosts": 2},
            checkpoint={"volume": {"size": "1Gi", "reclaimPolicy": "Delete"}},
            storage={"credentialsSecret": "s3-creds"},
            ttlSecondsAfterFinished=0,
        )
    )
    # "pause": suspend and resume.
    k8s.create_run(run_manifest("pause"))

    running_pods(kubelet, "life", 0, count=2)
    wait_for(phase_is(k8s, "life", "Running"), what="life Running")
    run_dir = artifacts_dir / k8s.ns / "life"
    run_dir.mkdir(parents=True)
    progress = {"step": 5, "totalSteps": 20, "loss": 2.0, "updatedAt": "2099-01-01T00:00:00Z",
                "checkpointStep": 5, "checkpointTime": "2099-01-01T00:00:00Z"}  # fmt: skip
    (run_dir / "progress.json").write_text(json.dumps(progress))
    wait_for(lambda: k8s.status("life").get("progress"), what="life progress")

    kubelet.evict(running_pods(kubelet, "life", 0, count=2)[1]["metadata"]["name"])
    pods = running_pods(kubelet, "life", 1, count=2)
    wait_for(phase_is(k8s, "life", "Running", attempt=1), what="life Running at attempt 1")
    for pod in pods:
        kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(phase_is(k8s, "life", "Succeeded"), what="life Succeeded")
    wait_for(lambda: k8s.jobs("life") == [], what="life's Job deleted after its TTL")

    running_pods(kubelet, "pause", 0)
    k8s.patch_spec("pause", {"suspend": True})
    wait_for(phase_is(k8s, "pause", "Suspended"), what="pause Suspended")
    wait_for(lambda: k8s.jobs("pause") == [], what="pause's Job deleted")
    k8s.patch_spec("pause", {"suspend": False})
    running_pods(kubelet, "pause", 1)
    wait_for(phase_is(k8s, "pause", "Running", attempt=1), what="pause Running again")

    wait_for(lambda: {"Preempted", "Succeeded", "TTLExpired"} <= event_reasons(k8s, "life"), what="events")
    wait_for(lambda: {"Suspended", "Resumed"} <= event_reasons(k8s, "pause"), what="events")
    for name in ("life", "pause"):
        k8s.delete_run(name)
    for name in ("life", "pause"):
        wait_for(lambda name=name: k8s.run_gone(name), what=f"{name} deleted")


# --------------------------------------------------------------------------- the test


def chart_settings(objects: Sequence[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """What ``tunix-operator`` reads from the rendered Deployment's args and literal env values."""
    container = operator_container(objects)
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for env in container.get("env", []):
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    return load_settings(parse_args(container.get("args", [])))


def install(
    plane: ControlPlane, workdir: pathlib.Path, mode: str, namespace: str, *, drop: Permission | None = None
) -> tuple[list[dict[str, Any]], OperatorIdentity]:
    """The chart's RBAC (and peering objects) for ``mode``, installed under a release of its own;
    ``drop`` removes one verb from the rendered rules first."""
    release = f"rbac-{mode}" if drop is None else "rbac-dropped"
    values = tuple(v.replace("<ns>", namespace) for v in MODES[mode])
    objects = [d for d in yaml.safe_load_all(render_chart(release=release, values=values)) if d]
    if drop is not None:
        group, resource, verb = drop
        for obj in objects:
            for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
                if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    identity = install_operator_identity(plane, workdir, release=release, objects=objects)
    peerings = [o for o in objects if o["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    if peerings:
        manifests = yaml.safe_dump_all(peerings)
        kubectl(plane.admin_kubeconfig, "apply", "--server-side", "-f", "-", input=manifests)
    return objects, identity


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def test_chart_rbac_is_exactly_what_the_operator_uses(
    mode: str,
    control_plane: ControlPlane,
    namespace: str,
    kubelet: ProcessKubelet,
    k8s: Api,
    artifacts_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects, identity = install(control_plane, tmp_path, mode, namespace)
    chart = chart_settings(objects, monkeypatch)
    settings = fast_settings(
        artifacts_dir.as_uri(),
        # cluster-wide installs still watch everything; other tests' namespaces hold no runs now
        watch_namespaces=chart.watch_namespaces,
        standalone=chart.standalone,
        peering_name=chart.peering_name,
    )
    since = control_plane.audit_offset()
    with OperatorThread(identity, settings):
        full_lifecycle(k8s, kubelet, artifacts_dir)
    user = f"system:serviceaccount:{identity.namespace}:{identity.service_account}"
    # A cluster-wide operator also sees other tests' leftovers (runs in namespaces being deleted):
    # count the calls in this test's namespace and the cluster-scoped ones.
    events = [
        e
        for e in resource_requests(control_plane.audit_events(user=user, since=since))
        if e["objectRef"].get("namespace", "") in ("", namespace)
    ]
    refused = sorted({permission(e) for e in events if e["responseStatus"]["code"] == 403})
    assert not refused, f"the API server refused: {refused}"
    observed = {permission(e) for e in events}
    assert observed >= MUST_OBSERVE, f"the lifecycle missed {sorted(MUST_OBSERVE - observed)}"
    # Every permission is used, or explained (least privilege).
    unused = granted(objects) - observed - RARELY_USED.keys()
    assert not unused, f"granted but never used: {sorted(unused)}"
    stale = (RARELY_USED.keys() & observed) | (RARELY_USED.keys() - granted(objects))
    assert not stale, f"used after all, or not granted: remove from RARELY_USED: {sorted(stale)}"


def test_a_missing_rule_fails_the_run_with_the_servers_403(
    control_plane: ControlPlane,
    namespace: str,
    kubelet: ProcessKubelet,
    k8s: Api,
    artifacts_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    _, identity = install(control_plane, tmp_path, "namespaced", namespace, drop=("batch", "jobs", "create"))
    settings = fast_settings(artifacts_dir.as_uri(), watch_namespaces=(namespace,))
    with OperatorThread(identity, settings):
        k8s.create_run(run_manifest("denied"))
        wait_for(phase_is(k8s, "denied", "Failed"), timeout=30, what="Failed")
    status = k8s.status("denied")
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "CreateFailed"
    assert "403" in status["message"] and 'cannot create resource \\"jobs\\"' in status["message"], status
    assert k8s.jobs("denied") == []
