"""The batch/v1 Job controller's decisions as pure functions: which pods to create or delete, and the status.

Covered: completions/parallelism, NonIndexed and Indexed completion modes, backoffLimit, suspend,
activeDeadlineSeconds, and podFailurePolicy rules (FailJob, Ignore, Count on exit codes or pod
conditions). Not covered: pod replacement policy, success policy, backoffLimitPerIndex, pod finalizers.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


@dataclass
class JobPlan:
    """What the controller does for one job in one pass."""

    create_indexes: list[int | None] = field(default_factory=list)  # None: a NonIndexed pod
    delete_pods: list[str] = field(default_factory=list)
    status: Obj = field(default_factory=dict)


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def format_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_index(pod: Obj) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_KEY)
    return int(value) if value is not None else None


def owned_pods(job: Obj, pods: list[Obj]) -> list[Obj]:
    uid = job["metadata"]["uid"]
    return [
        pod
        for pod in pods
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in pod["metadata"].get("ownerReferences") or []
        )
    ]


def pod_manifest(job: Obj, index: int | None) -> Obj:
    """The pod the Job controller creates from the template (for a completion index in Indexed mode)."""
    meta, spec = job["metadata"], job["spec"]
    template = copy.deepcopy(spec.get("template") or {})
    pod_meta = template.get("metadata") or {}
    pod_spec = template.get("spec") or {}
    labels = dict(pod_meta.get("labels") or {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
        }
    )
    annotations = dict(pod_meta.get("annotations") or {})
    generate_name = f"{meta['name']}-"
    if index is not None:
        labels[INDEX_KEY] = str(index)
        annotations[INDEX_KEY] = str(index)
        generate_name = f"{meta['name']}-{index}-"
        pod_spec.setdefault("hostname", f"{meta['name']}-{index}")
        for container in pod_spec.get("containers") or []:
            env = [e for e in container.get("env") or [] if e.get("name") != "JOB_COMPLETION_INDEX"]
            env.insert(
                0,
                {
                    "name": "JOB_COMPLETION_INDEX",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{INDEX_KEY}']"}},
                },
            )
            container["env"] = env
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": pod_spec,
    }


def _exit_code(pod: Obj, container_name: str | None = None) -> int | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if container_name and status.get("name") != container_name:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            return int(terminated["exitCode"])
    return None


def failure_action(job: Obj, pod: Obj) -> str:
    """The podFailurePolicy action for a failed pod: FailJob, Ignore or Count (the default)."""
    for rule in ((job["spec"].get("podFailurePolicy") or {}).get("rules")) or []:
        on_codes = rule.get("onExitCodes")
        if on_codes:
            code = _exit_code(pod, on_codes.get("containerName"))
            values = set(on_codes.get("values") or [])
            if code is not None and code != 0 and (code in values) == (on_codes.get("operator") == "In"):
                return rule["action"]
        for pattern in rule.get("onPodConditions") or []:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == pattern.get("type") and condition.get("status") == pattern.get(
                    "status", "True"
                ):
                    return rule["action"]
    return "Count"


def _condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _compress(indexes: set[int]) -> str:
    """Like ``status.completedIndexes``: ``0-2,5``."""
    ranges, ordered = [], sorted(indexes)
    for i in ordered:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def plan_job(job: Obj, pods: list[Obj], now: datetime.datetime) -> JobPlan | None:
    """One reconciliation of a job against its pods; None when the job is finished (nothing to do)."""
    spec, status = job["spec"], dict(job.get("status") or {})
    conditions = list(status.get("conditions") or [])
    if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
        return None
    stamp = format_time(now)
    pods = owned_pods(job, pods)
    active = [
        p
        for p in pods
        if p["status"].get("phase") not in ("Succeeded", "Failed")
        and not p["metadata"].get("deletionTimestamp")
    ]
    succeeded = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    failed = [p for p in pods if p["status"].get("phase") == "Failed"]
    counted_failed = [p for p in failed if failure_action(job, p) != "Ignore"]
    plan = JobPlan()
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    succeeded_indexes = {i for i in (pod_index(p) for p in succeeded) if i is not None}

    finish: Obj | None = None
    fail_job = next((p for p in failed if failure_action(job, p) == "FailJob"), None)
    if fail_job is not None:
        finish = _condition(
            "Failed", "PodFailurePolicy", f"Pod {fail_job['metadata']['name']} matched a FailJob rule", stamp
        )
    elif len(counted_failed) > int(spec.get("backoffLimit", 6)):
        finish = _condition(
            "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", stamp
        )
    elif (
        spec.get("activeDeadlineSeconds") is not None
        and status.get("startTime")
        and (now - _parse_time(status["startTime"])).total_seconds() >= int(spec["activeDeadlineSeconds"])
    ):
        finish = _condition(
            "Failed", "DeadlineExceeded", "Job was active longer than specified deadline", stamp
        )
    elif completions is not None and (
        len(succeeded_indexes) >= completions if indexed else len(succeeded) >= completions
    ):
        finish = _condition("Complete", "", "", stamp)
        status["completionTime"] = stamp

    if finish is not None or spec.get("suspend"):
        plan.delete_pods = [p["metadata"]["name"] for p in active]
        active = []
    if finish is not None:
        conditions.append(finish)
    elif spec.get("suspend"):
        if not any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
            conditions = [c for c in conditions if c["type"] != "Suspended"]
            conditions.append(_condition("Suspended", "JobSuspended", "Job suspended", stamp))
        status.pop("startTime", None)
    else:
        conditions = [c for c in conditions if c["type"] != "Suspended"]
        status.setdefault("startTime", stamp)
        room = int(spec.get("parallelism", 1)) - len(active)
        if indexed:
            busy = succeeded_indexes | {pod_index(p) for p in active}
            plan.create_indexes = [i for i in range(int(completions or 0)) if i not in busy][: max(room, 0)]
        else:
            remaining = (completions - len(succeeded)) if completions is not None else room
            plan.create_indexes = [None] * max(min(room, remaining - len(active)), 0)

    status.update(
        active=len(active) + len(plan.create_indexes),
        succeeded=len(succeeded),
        failed=len(counted_failed),
        ready=sum(1 for p in active if p["status"].get("phase") == "Running"),
    )
    if indexed:
        status["completedIndexes"] = _compress(succeeded_indexes)
    status["conditions"] = conditions
    plan.status = status
    return plan
