"""Children that change while the operator is down: a restarted operator, whose indices refill from
kopf's initial listing, converges on what happened (nothing is read by name, nothing is missed)."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for

SUMMARY = {"finalLoss": 1.25, "totalSteps": 20, "provenance": {"jax": "0.10.2"}}


def job_finished(k8s: Api, name: str) -> Callable[[], bool]:
    def done() -> bool:
        conditions = (k8s.job(name).get("status") or {}).get("conditions") or []
        return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)

    return done


def test_runs_whose_jobs_changed_while_the_operator_was_down_converge(
    start_operator: Callable[..., OperatorThread], kubelet: ProcessKubelet, k8s: Api
) -> None:
    first = start_operator()
    for name in ("done", "lost", "evicted"):
        k8s.create_run(run_manifest(name))
    pods = {
        name: pod_of(kubelet, name, 0, timeout=60)["metadata"]["name"] for name in ("done", "lost", "evicted")
    }
    for name in pods:
        wait_for(phase_is(k8s, name, "Running"), timeout=60, what=f"{name} Running")
    first.stop()

    # While nobody watches: one trainer succeeds, one Job is deleted, one pod is evicted.
    kubelet.terminate(pods["done"], exit_code=0, message=json.dumps(SUMMARY))
    wait_for(job_finished(k8s, "done-0"), timeout=60, what="done-0 Complete")
    k8s.batch.delete_namespaced_job("lost-0", k8s.ns, propagation_policy="Background")
    wait_for(lambda: k8s.jobs("lost") == [], timeout=60, what="lost-0 gone")
    kubelet.evict(pods["evicted"])
    wait_for(job_finished(k8s, "evicted-0"), timeout=60, what="evicted-0 Failed")
    assert {k8s.status(n)["phase"] for n in pods} == {"Running"}  # nobody noticed yet

    start_operator()
    wait_for(phase_is(k8s, "done", "Succeeded"), timeout=60, what="done Succeeded after the restart")
    assert k8s.status("done")["summary"]["finalLoss"] == 1.25
    pod_of(kubelet, "lost", 0, timeout=60)  # the missing Job of the current attempt is made again
    wait_for(lambda: k8s.jobs("lost") == ["lost-0"], timeout=60, what="lost-0 recreated")
    wait_for(phase_is(k8s, "lost", "Running", attempt=0), timeout=60, what="lost Running again")
    pod_of(kubelet, "evicted", 1, timeout=60)
    wait_for(phase_is(k8s, "evicted", "Running", attempt=1), timeout=60, what="evicted at attempt 1")
    status = k8s.status("evicted")
    assert (status["preemptions"], status["restarts"]) == (1, 0)
    assert k8s.jobs("evicted") == ["evicted-1"]
