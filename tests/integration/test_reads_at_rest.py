"""What the operator asks of the API server, counted exactly by the server's audit log.

The operator reconciles from kopf's watches (the daemon's live body, indices of Jobs and pods), so a
lifecycle costs only its writes and the operator makes no request at all at rest, however often it
reconciles; finished runs are not even reconciled. Request counts (never timings) are asserted.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OperatorIdentity
from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for

SUMMARY = {"finalLoss": 1.5, "totalSteps": 20, "provenance": {"jax": "0.10.2"}}
# The lifecycle's writes: the status at Pending, Running and Succeeded (3; the Pending status already
# says what the new Job's watch event would), the Job (1; run.yaml travels in its pod template), the
# events Created, Running and Succeeded (3): 7. No finalizer (kopf's would be 2 patches more), no GET,
# no LIST.
LIFECYCLE_MAX_REQUESTS = 12
AT_REST_SECONDS = 6.0  # with the tests' 0.3 s progress interval and 1 s resync: dozens of reconciles


def operator_user(identity: OperatorIdentity) -> str:
    return f"system:serviceaccount:{identity.namespace}:{identity.service_account}"


def requests_in(events: Iterable[dict[str, Any]], namespace: str) -> list[tuple[str, str, str]]:
    """(verb, resource[/subresource], name) of each request for an object in ``namespace``, watches and
    kopf's initial lists left out."""
    out = []
    for event in events:
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace or event["verb"] in ("watch", "list"):
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append((event["verb"], resource, ref.get("name", "")))
    return out


def audited(plane: ControlPlane, user: str, since: int, namespace: str) -> list[tuple[str, str, str]]:
    return requests_in(plane.audit_events(user=user, since=since), namespace)


def reconciles(op: OperatorThread) -> float:
    """Reconciles so far (the duration histogram's count)."""
    return sum(s.value for m in op.metrics.duration.collect() for s in m.samples if s.name.endswith("_count"))


def settle(check: Callable[[], Any], what: str) -> None:
    wait_for(check, timeout=60, what=what)


def test_a_lifecycle_costs_only_its_writes(
    operator: OperatorThread,
    kubelet: ProcessKubelet,
    k8s: Api,
    control_plane: ControlPlane,
    operator_identity: OperatorIdentity,
) -> None:
    user = operator_user(operator_identity)
    since = control_plane.audit_offset()
    k8s.create_run(run_manifest("life"))
    pod = pod_of(kubelet, "life", 0, timeout=60)
    settle(phase_is(k8s, "life", "Running"), "Running")
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
    settle(phase_is(k8s, "life", "Succeeded"), "Succeeded")
    settle(lambda: {"Created", "Running", "Succeeded"} <= {r for _, r in k8s.events("life")}, "events")
    k8s.delete_run("life")
    settle(lambda: k8s.run_gone("life"), "deleted")
    time.sleep(1.0)  # anything the operator would still send about the run
    requests = audited(control_plane, user, since, k8s.ns)
    counts = collections.Counter((verb, resource) for verb, resource, _ in requests)
    assert not [r for r in requests if r[0] == "get"], f"the operator read objects: {counts}"
    assert len(requests) <= LIFECYCLE_MAX_REQUESTS, f"{len(requests)} requests: {sorted(counts.items())}"
    assert counts[("create", "jobs")] == 1 and counts[("patch", "tunixruns/status")] >= 3
    assert counts[("patch", "tunixruns")] == 0, "kopf patched the run (a finalizer?)"


def test_no_requests_at_rest_and_no_reconciles_of_finished_runs(
    operator: OperatorThread,
    kubelet: ProcessKubelet,
    k8s: Api,
    control_plane: ControlPlane,
    operator_identity: OperatorIdentity,
) -> None:
    user = operator_user(operator_identity)
    for name in ("done-a", "done-b"):
        k8s.create_run(run_manifest(name))
    for name in ("done-a", "done-b"):
        pod = pod_of(kubelet, name, 0, timeout=60)
        kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps(SUMMARY))
        settle(phase_is(k8s, name, "Succeeded"), f"{name} Succeeded")
    time.sleep(1.5)  # the last events and patches land; the finished runs' daemons go idle
    before, since = reconciles(operator), control_plane.audit_offset()
    time.sleep(AT_REST_SECONDS)
    assert reconciles(operator) == before, "finished runs without a TTL were reconciled"
    assert audited(control_plane, user, since, k8s.ns) == []

    for name in ("busy-a", "busy-b", "busy-c"):
        k8s.create_run(run_manifest(name))
    for name in ("busy-a", "busy-b", "busy-c"):
        pod_of(kubelet, name, 0, timeout=60)
        settle(phase_is(k8s, name, "Running"), f"{name} Running")
    time.sleep(1.5)
    before, since = reconciles(operator), control_plane.audit_offset()
    time.sleep(AT_REST_SECONDS)
    done = reconciles(operator) - before
    # Each Running run is reconciled every 0.3 s (progress) from memory, and asks nothing.
    assert done >= 3 * AT_REST_SECONDS / operator.settings.resync_interval_seconds, done
    assert audited(control_plane, user, since, k8s.ns) == []
