"""Builders of TunixRun bodies, Jobs and pods (as the API server returns them) for unit tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from tunix_operator.conditions import format_time
from tunix_operator.manifests import COMPLETION_INDEX_ANNOTATION, LABEL_ATTEMPT, LABEL_RUN

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset": {"uri": "data/golden.jsonl"},
        "training": {"steps": 100, "batchSize": 8, "seqLen": 64},
        "accelerator": {"type": "nvidia.com/gpu", "countPerHost": 2},
        "retryPolicy": {"maxRestarts": 2, "maxPreemptions": 2, "backoffSeconds": 10, "maxBackoffSeconds": 25},
    }
    base.update(overrides)
    return base


def run_body(status: dict[str, Any] | None = None, name: str = "r1", **spec_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "uid-1",
            "generation": 1,
            "creationTimestamp": format_time(T0),
        },
        "spec": spec(**spec_overrides),
    }
    if status is not None:
        body["status"] = copy.deepcopy(status)
    return body


def job(
    name: str = "r1-0", condition: str | None = None, deleting: bool = False, reason: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True", "reason": reason or condition}]
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if deleting:
        meta["deletionTimestamp"] = format_time(T0)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "status": status}


def pod(
    attempt: int = 0,
    index: int = 0,
    phase: str = "Running",
    exit_code: int | None = None,
    message: str | None = None,
    waiting: str | None = None,
    reason: str | None = None,
    disruption: str | None = None,
    unschedulable: str | None = None,
    deleting: bool = False,
    run: str = "r1",
    disrupted_at: datetime | None = None,
    grace_seconds: int | None = None,
    deleted_at: datetime | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}} if phase == "Running" else {}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}
        if message is not None:
            state["terminated"]["message"] = message
    if waiting:
        state = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    conditions = []
    if disruption:
        condition = {"type": "DisruptionTarget", "status": "True", "reason": disruption}
        if disrupted_at is not None:
            condition["lastTransitionTime"] = format_time(disrupted_at)
        conditions.append(condition)
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    meta: dict[str, Any] = {
        "name": f"{run}-{attempt}-{index}-x",
        "namespace": "ns",
        "labels": {LABEL_RUN: run, LABEL_ATTEMPT: str(attempt)},
        "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)},
    }
    if deleting or deleted_at is not None:
        # The API server sets deletionTimestamp one grace period after the delete request.
        meta["deletionTimestamp"] = format_time(deleted_at or T0)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": [{"name": "trainer", "state": state}],
    }
    if reason:
        status["reason"] = reason
    spec = {} if grace_seconds is None else {"terminationGracePeriodSeconds": grace_seconds}
    return {"metadata": meta, "spec": spec, "status": status}
