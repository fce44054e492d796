"""The Helm chart's RBAC is exactly what the operator uses.

The real operator (kopf + handlers + reconciler) runs on the emulated API server through a whole
lifecycle that reaches every code path talking to the API. Every request it made (User-Agent
``kopf/...`` or the harness's :data:`OPERATOR_USER_AGENT`) becomes an RBAC attribute (apiGroup,
resource[/subresource], verb, namespace) that the chart's rendered rules must allow: namespaced
calls by the Role in that namespace or the ClusterRole, cluster-wide calls by the ClusterRole only.
Conversely every permission the chart grants must have been used, or be listed in
:data:`RARELY_USED` with the reason. Four installs (:data:`MODES`): cluster-wide (default values),
``watchNamespaces: [<ns>]``, and each with ``replicas: 2`` (kopf peering on the chart's peering
objects); the operator gets the settings the rendered Deployment gives it.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from tests.chart.chart_render import allows, rbac_rules, render
from tests.integration.harness import (
    OPERATOR_USER_AGENT,
    Api,
    OperatorThread,
    fast_settings,
    phase_is,
    run_manifest,
    wait_for,
)
from tests.kubeemu import EmulatedCluster, SimulatedKubelet
from tests.kubeemu.server import RequestRecord
from tunix_operator.__main__ import load_settings, parse_args
from tunix_operator.settings import ENV_PREFIX, OperatorSettings

NS = "team-a"
TEST_USER_AGENT = "tunix-rbac-test/1"
KOPF_USER_AGENT_PREFIX = "kopf/"
# Everyone else that talks to the emulator; a request from anybody else fails the test, so a new
# client of the operator cannot slip past the filter unnoticed.
OTHER_USER_AGENTS = {TEST_USER_AGENT, "kubeemu-cluster/1", "kubeemu-kubelet/1"}
SUMMARY = {"finalLoss": 1.5, "totalSteps": 20, "provenance": {"jax": "0.10.2"}}

Permission = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)

# Granted by the chart but never requested in the lifecycle below, each with why it must stay.
RARELY_USED: dict[Permission, str] = {
    ("tunix.dev", "tunixruns/finalizers", "update"): (
        "not a request: the OwnerReferencesPermissionEnforcement admission plugin checks it when the "
        "operator creates children whose ownerReference has blockOwnerDeletion (no admission here)"
    ),
}

# Calls only some paths make; the lifecycle must reach each of them, or the test proves too little.
MUST_OBSERVE: set[Permission] = {
    ("tunix.dev", "tunixruns", "watch"),
    ("tunix.dev", "tunixruns", "patch"),  # kopf: finalizer and annotations
    ("tunix.dev", "tunixruns/status", "patch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),  # preemption, suspend and TTL
    ("", "pods", "list"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),  # the ConfigMap exists at the next attempt
    ("", "persistentvolumeclaims", "create"),
    ("", "services", "create"),
    ("", "secrets", "get"),
    ("", "events", "create"),
}


# Chart values of each mode; the operator runs with the settings the chart's Deployment gives it.
MODES: dict[str, dict[str, Any]] = {
    "cluster-wide": {},
    "namespaced": {"watchNamespaces": [NS]},
    "cluster-wide-peering": {"replicas": 2},
    "namespaced-peering": {"replicas": 2, "watchNamespaces": [NS]},
}


# --------------------------------------------------------------------------- pure helpers


def is_operator(record: RequestRecord) -> bool:
    return record.user_agent.startswith(KOPF_USER_AGENT_PREFIX) or record.user_agent == OPERATOR_USER_AGENT


def permission(record: RequestRecord) -> Permission:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    return (record.api_group, resource, record.verb)


def resource_requests(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Requests for API resources; discovery (``/api``, ``/apis/...``, ``/version``) is granted to every
    authenticated user by the built-in ``system:discovery`` ClusterRole, not by the chart."""
    return [r for r in records if r.resource]


def denied(records: Iterable[RequestRecord], objects: Sequence[dict[str, Any]]) -> set[tuple[str, ...]]:
    """(namespace or '<cluster>', group, resource, verb) of each request the rendered RBAC refuses."""
    out: set[tuple[str, ...]] = set()
    for record in records:
        rules = rbac_rules(objects, record.namespace or None)  # cluster-wide: ClusterRole rules only
        if not allows(rules, *permission(record)):
            out.add((record.namespace or "<cluster>", *permission(record)))
    return out


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


def running_pods(kubelet: SimulatedKubelet, run: str, attempt: int, count: int = 1) -> list[dict[str, Any]]:
    selector = f"tunix.dev/run={run},tunix.dev/attempt={attempt}"
    return kubelet.wait_for_pods(selector, count=count, phase="Running")


def full_lifecycle(k8s: Api, kubelet: SimulatedKubelet, artifacts_dir: pathlib.Path) -> None:
    """Every operator path that talks to the API, on two runs in namespace :data:`NS`."""
    k8s.core.create_namespaced_secret(
        NS, {"metadata": {"name": "s3-creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "test"}}
    )
    # "life": PVC, Service (2 hosts), Secret read, progress, preemption, success, TTL.
    k8s.create_run(
        run_manifest(
            "life",
            NS,
            accelerator={"type": "nvidia.com/gpu", "countPerHost": 1, "hosts": 2},
            checkpoint={"volume": {"size": "1Gi", "reclaimPolicy": "Delete"}},
            storage={"credentialsSecret": "s3-creds"},
            ttlSecondsAfterFinished=0,
        )
    )
    # "pause": suspend and resume.
    k8s.create_run(run_manifest("pause", NS))

    running_pods(kubelet, "life", 0, count=2)
    wait_for(phase_is(k8s, "life", "Running"), what="life Running")
    run_dir = artifacts_dir / NS / "life"
    run_dir.mkdir(parents=True)
    progress = {"step": 5, "totalSteps": 20, "loss": 2.0, "updatedAt": "2099-01-01T00:00:00Z"}
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


@pytest.fixture(params=sorted(MODES))
def values(request: pytest.FixtureRequest) -> dict[str, Any]:
    return MODES[request.param]


@pytest.fixture
def operator_records(
    values: dict[str, Any],
    cluster: EmulatedCluster,
    kubelet: SimulatedKubelet,
    artifacts_dir: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> list[RequestRecord]:
    """The operator's resource requests over a full lifecycle, installed as the chart installs it."""
    objects = render(values)
    chart = chart_settings(objects, monkeypatch)
    cluster.rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    for peering in objects:  # the chart's kopf peering objects (replicas > 1)
        if peering["kind"] in ("KopfPeering", "ClusterKopfPeering"):
            namespace = peering["metadata"].get("namespace")
            scope = f"/namespaces/{namespace}" if namespace else ""
            plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
            cluster.rest.request("POST", f"/apis/kopf.dev/v1{scope}/{plural}", peering)
    settings = fast_settings(
        artifacts_dir.as_uri(),
        watch_namespaces=chart.watch_namespaces,
        standalone=chart.standalone,
        peering_name=chart.peering_name,
    )
    with OperatorThread(cluster.url, cluster.api_client(), settings):
        test_client = cluster.api_client()
        test_client.user_agent = TEST_USER_AGENT  # never counted as the operator
        full_lifecycle(Api(test_client, namespace=NS), kubelet, artifacts_dir)
    records = cluster.request_log
    strangers = {r.user_agent for r in records if not is_operator(r)} - OTHER_USER_AGENTS
    assert not strangers, f"requests from unknown clients: {strangers}"
    return resource_requests(r for r in records if is_operator(r))


def test_chart_rbac_is_exactly_what_the_operator_uses(
    values: dict[str, Any], operator_records: list[RequestRecord]
) -> None:
    objects = render(values)
    observed = {permission(r) for r in operator_records}
    assert observed >= MUST_OBSERVE, f"the lifecycle missed {sorted(MUST_OBSERVE - observed)}"
    if values.get("watchNamespaces"):  # nothing namespaced outside the watched namespaces
        assert {r.namespace for r in operator_records} <= {"", *values["watchNamespaces"]}
    # Every call is allowed (cluster-wide ones by the ClusterRole alone)...
    refused = denied(operator_records, objects)
    assert not refused, f"calls the chart does not allow: {sorted(refused)}"
    # ...and every permission is used, or explained (least privilege).
    unused = granted(objects) - observed - RARELY_USED.keys()
    assert not unused, f"granted but never used: {sorted(unused)}"
    stale = (RARELY_USED.keys() & observed) | (RARELY_USED.keys() - granted(objects))
    assert not stale, f"used after all, or not granted: remove from RARELY_USED: {sorted(stale)}"
