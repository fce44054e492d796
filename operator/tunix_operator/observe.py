"""Pure reading of a run's Job and pods: what happened to the current attempt."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tunix_api.exit_codes import ExitClass, classify_exit_code, exit_reason
from tunix_operator.conditions import parse_time
from tunix_operator.manifests import COMPLETION_INDEX_ANNOTATION, CONTAINER_NAME, LABEL_ATTEMPT

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# pod.status.reason values meaning "the pod was taken away", not "the trainer failed".
DISRUPTION_REASONS = frozenset(
    {
        "Evicted",
        "Preempting",
        "PreemptionByScheduler",
        "DeletionByTaintManager",
        "Shutdown",
        "NodeShutdown",
        "Terminated",
        "NodeLost",
        "EvictionByEvictionAPI",
        "TerminationByKubelet",
    }
)
_SEVERITY = {ExitClass.RETRYABLE: 0, ExitClass.PREEMPTED: 1, ExitClass.FATAL: 2}
DEFAULT_GRACE_SECONDS = 30  # a pod's terminationGracePeriodSeconds when unset
STOP_MARGIN_SECONDS = 10  # beyond the grace period: the kubelet's SIGKILL and status update
# Set by the operator on a run's pods: when its newest checkpoint became durable (RFC 3339), so a
# scheduler or descheduler can prefer preempting the pods that lose least.
CHECKPOINT_TIME_ANNOTATION = "tunix.dev/last-checkpoint-time"


@dataclass(frozen=True)
class PodView:
    """The facts of one pod that the state machine uses."""

    name: str
    attempt: int | None
    index: int | None
    phase: str
    deleting: bool
    reason: str | None = None  # pod.status.reason (e.g. Evicted)
    message: str | None = None
    disruption: str | None = None  # reason of a True DisruptionTarget condition
    unschedulable: str | None = None  # message of PodScheduled=False/Unschedulable
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    termination_message: str | None = None
    # When the pod was told to stop: its deletionTimestamp (already grace-period ahead), or the time of
    # its DisruptionTarget condition (kubelet evictions: SIGTERM without deleting the pod).
    deletion_time: str | None = None
    disruption_time: str | None = None
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    node: str | None = None  # spec.nodeName
    checkpoint_time: str | None = None  # the CHECKPOINT_TIME_ANNOTATION

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    disruption = conditions.get("DisruptionTarget")
    scheduled = conditions.get("PodScheduled")
    container = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER_NAME),
        (status.get("containerStatuses") or [None])[0] or {},
    )
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    index = annotations.get(COMPLETION_INDEX_ANNOTATION, labels.get(COMPLETION_INDEX_ANNOTATION))
    return PodView(
        name=meta.get("name", ""),
        attempt=_int(labels.get(LABEL_ATTEMPT)),
        index=_int(index),
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        reason=status.get("reason"),
        message=status.get("message"),
        disruption=(disruption.get("reason") or "Disrupted")
        if disruption and disruption.get("status") == "True"
        else None,
        unschedulable=(scheduled.get("message") or "pod cannot be scheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        else None,
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        exit_code=_int(terminated.get("exitCode")) if terminated else None,
        terminated_reason=terminated.get("reason"),
        termination_message=terminated.get("message"),
        deletion_time=meta.get("deletionTimestamp"),
        disruption_time=disruption.get("lastTransitionTime") if disruption else None,
        grace_seconds=_grace_seconds(meta, pod.get("spec") or {}),
        node=(pod.get("spec") or {}).get("nodeName"),
        checkpoint_time=annotations.get(CHECKPOINT_TIME_ANNOTATION),
    )


def _grace_seconds(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> int:
    for value in (meta.get("deletionGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")):
        if (seconds := _int(value)) is not None:
            return seconds
    return DEFAULT_GRACE_SECONDS


def stop_due(pod: PodView) -> datetime | None:
    """When a pod that was told to stop must have stopped (grace period plus a margin); None if it was
    not told to stop."""
    margin = timedelta(seconds=STOP_MARGIN_SECONDS)
    if (deleted := parse_time(pod.deletion_time)) is not None:
        return deleted + margin  # the deletionTimestamp already lies one grace period ahead
    if (disrupted := parse_time(pod.disruption_time)) is not None:
        return disrupted + timedelta(seconds=pod.grace_seconds) + margin
    return None


def job_condition(job: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The Job's condition of type ``kind`` when it is True."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def job_active(job: Mapping[str, Any] | None) -> bool:
    """True while the Job may still have running pods."""
    if job is None:
        return False
    return not (job_condition(job, "Complete") or job_condition(job, "Failed"))


class Outcome(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class AttemptState:
    """What the current attempt's Job and pods add up to."""

    outcome: Outcome
    reason: str | None = None
    message: str | None = None
    exit_class: ExitClass | None = None  # when FAILED
    exit_code: int | None = None
    termination_message: str | None = None  # index 0's, when SUCCEEDED or FAILED
    running: int = 0


def _failure(pod: PodView) -> tuple[ExitClass, str, str | None] | None:
    """(class, reason, message) when ``pod`` failed, else None."""
    if pod.disruption or (pod.phase == "Failed" and pod.reason in DISRUPTION_REASONS):
        reason = pod.disruption or pod.reason or "Disrupted"
        return ExitClass.PREEMPTED, reason, pod.message or pod.termination_message
    if pod.exit_code is not None and pod.exit_code != 0:
        cls = classify_exit_code(pod.exit_code)
        reason = "OOMKilled" if pod.terminated_reason == "OOMKilled" else exit_reason(pod.exit_code)
        return cls, reason, pod.termination_message
    if pod.phase == "Failed":
        return ExitClass.RETRYABLE, pod.reason or "PodFailed", pod.message
    return None


_EXIT_CODE = re.compile(r"failed with exit code (\d+)")


def job_failure(failed: Mapping[str, Any]) -> tuple[ExitClass, str, int | None]:
    """(class, reason, exit code) of a Job's Failed condition, for when its pods are already gone: the
    pod failure policy's FailJob rules (manifests.POD_FAILURE_POLICY) name the disruption condition or
    the container's exit code in the message; anything else (a deadline, a deleted pod) is retryable."""
    message = failed.get("message") or ""
    if failed.get("reason") == "PodFailurePolicy":
        if "DisruptionTarget" in message:
            return ExitClass.PREEMPTED, "DisruptionTarget", None
        if match := _EXIT_CODE.search(message):
            code = int(match.group(1))
            return classify_exit_code(code), exit_reason(code), code
    return ExitClass.RETRYABLE, failed.get("reason") or "JobFailed", None


def _pending_issue(pods: Iterable[PodView]) -> tuple[str, str] | None:
    for pod in pods:
        if pod.waiting_reason in IMAGE_PULL_REASONS or pod.waiting_reason in CONFIG_ERROR_REASONS:
            return pod.waiting_reason, f"{pod.name}: {pod.waiting_message or pod.waiting_reason}"
    for pod in pods:
        if pod.unschedulable:
            return "Unschedulable", f"{pod.name}: {pod.unschedulable}"
    return None


def assess(job: Mapping[str, Any], pods: Sequence[PodView], attempt: int, hosts: int) -> AttemptState:
    """Fold the Job and the pods of ``attempt`` into one outcome."""
    mine = [p for p in pods if p.attempt == attempt]
    failures = [(p, f) for p in mine if (f := _failure(p)) is not None]
    if failures:
        pod, (cls, reason, message) = max(failures, key=lambda item: _SEVERITY[item[1][0]])
        return AttemptState(
            Outcome.FAILED,
            reason=reason,
            message=message,
            exit_class=cls,
            exit_code=pod.exit_code,
            termination_message=pod.termination_message,
        )
    succeeded = {p.index for p in mine if p.phase == "Succeeded"}
    if job_condition(job, "Complete") or len(succeeded) >= hosts:
        first = next((p for p in mine if p.phase == "Succeeded" and p.index in (0, None)), None)
        return AttemptState(
            Outcome.SUCCEEDED,
            reason="Completed",
            termination_message=first.termination_message if first else None,
        )
    failed = job_condition(job, "Failed")
    if failed:
        cls, reason, code = job_failure(failed)
        return AttemptState(
            Outcome.FAILED, reason=reason, message=failed.get("message"), exit_class=cls, exit_code=code
        )
    live = [p for p in mine if not p.deleting]
    running = sum(1 for p in live if p.phase == "Running")
    if running >= hosts:
        return AttemptState(Outcome.RUNNING, reason="PodsRunning", running=running)
    issue = _pending_issue(live)
    if issue:
        return AttemptState(Outcome.PENDING, reason=issue[0], message=issue[1], running=running)
    return AttemptState(
        Outcome.PENDING, reason="PodsPending", message=pods_running(running, hosts), running=running
    )


def pods_running(running: int, hosts: int) -> str:
    """The message of an attempt whose pods are not all running yet (no other issue)."""
    return f"{running}/{hosts} pods running"
