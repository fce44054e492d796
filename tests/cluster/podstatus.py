"""Pod status as the kubelet reports it (pure functions): container states, phase, conditions, and
termination messages.

Status goes to the API server as a strategic merge patch of ``pods/<name>/status``: ``conditions``
merge by type (so the scheduler's PodScheduled and a DisruptionTarget stay), ``containerStatuses`` are
replaced whole, as the real kubelet's status manager sends them.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
MAX_MESSAGE_BYTES = 4096  # the kubelet keeps the last 4 KiB of the termination-message file
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: at most the last 80 lines of the log...
FALLBACK_LOG_BYTES = 2048  # ...and at most their last 2 KiB
OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def now() -> str:
    """The current time as the API writes it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """The current time as a MicroTime (Leases' renewTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ContainerState:
    """One container's state: waiting (reason, message), running (started), or terminated."""

    name: str
    image: str
    waiting_reason: str | None = None  # set: waiting
    message: str = ""
    started_at: str | None = None  # set and exit_code None: running
    exit_code: int | None = None  # set: terminated
    reason: str = ""  # terminated: Completed / Error / ...
    finished_at: str | None = None
    container_id: str = ""

    @property
    def running(self) -> bool:
        return self.exit_code is None and self.waiting_reason is None and self.started_at is not None

    @property
    def terminated(self) -> bool:
        return self.exit_code is not None

    def to_wire(self) -> Obj:
        """The ``containerStatuses[]`` item."""
        state: Obj
        if self.exit_code is not None:
            terminated: Obj = {
                "exitCode": self.exit_code,
                "reason": self.reason or ("Completed" if self.exit_code == 0 else "Error"),
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
            }
            if self.message:
                terminated["message"] = self.message
            if self.container_id:
                terminated["containerID"] = self.container_id
            state = {"terminated": terminated}
        elif self.started_at is not None and self.waiting_reason is None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            waiting: Obj = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        status: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.running,
            "started": self.running,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def terminated_reason(exit_code: int) -> str:
    """What containerd reports: Completed for 0, Error otherwise (137 after a SIGKILL included; OOMKilled
    needs the kernel's OOM killer, which a process container here never meets)."""
    return "Completed" if exit_code == 0 else "Error"


def phase(states: Sequence[ContainerState], *, sandbox_ready: bool) -> str:
    """restartPolicy Never: Pending until every container has started, Running while any runs,
    Succeeded when all exited 0, Failed when all ended and one did not."""
    if states and all(s.terminated for s in states):
        return "Succeeded" if all(s.exit_code == 0 for s in states) else "Failed"
    if sandbox_ready and states and all(s.running or s.terminated for s in states):
        return "Running"
    return "Pending"


def conditions(
    states: Sequence[ContainerState], previous: Sequence[Obj], *, sandbox_ready: bool, at: str
) -> list[Obj]:
    """The conditions the kubelet owns; a condition keeps its lastTransitionTime while its status holds."""
    before = {c.get("type"): c for c in previous}
    done = bool(states) and all(s.terminated for s in states)
    unready = [s.name for s in states if not s.running]
    if done:
        ready = ("False", "PodCompleted", "")
    elif unready:
        ready = ("False", "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
    else:
        ready = ("True", "", "")
    wanted = {
        "PodReadyToStartContainers": ("True" if sandbox_ready and not done else "False", "", ""),
        "Initialized": ("True", "", ""),
        "ContainersReady": ready,
        "Ready": ready,
    }
    out = []
    for kind, (status, reason, message) in wanted.items():
        old = before.get(kind) or {}
        # reason and message as null when unset: the strategic merge patch then removes stale ones.
        condition: Obj = {
            "type": kind,
            "status": status,
            "reason": reason or None,
            "message": message or None,
            "lastProbeTime": None,
            "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == status else at,
        }
        out.append(condition)
    return out


def termination_message(
    file_bytes: bytes, *, exit_code: int, policy: str, log_text: str, cannot_run: bool = False
) -> str:
    """The kubelet's message for an exited container: the last 4 KiB of the termination-message file;
    with FallbackToLogsOnError, a non-zero exit and an empty file, the tail of its log (80 lines, 2 KiB)."""
    if file_bytes:
        return file_bytes[-MAX_MESSAGE_BYTES:].decode(errors="replace")
    if policy == "FallbackToLogsOnError" and exit_code != 0 and not cannot_run:
        return log_tail(log_text)
    return ""


def log_tail(text: str, lines: int = FALLBACK_LOG_LINES, limit: int = FALLBACK_LOG_BYTES) -> str:
    """The last ``lines`` lines of ``text``, then at most its last ``limit`` bytes."""
    tail = "".join(text.splitlines(keepends=True)[-lines:]).encode()
    return tail[-limit:].decode(errors="ignore")


def status_patch(
    pod: Obj,
    states: Sequence[ContainerState],
    *,
    pod_ip: str,
    host_ip: str,
    sandbox_ready: bool,
    started: str,
    extra_conditions: Sequence[Obj] = (),
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    """The strategic merge patch of ``pods/<name>/status`` for these container states."""
    at = now()
    previous = (pod.get("status") or {}).get("conditions") or []
    status: Obj = {
        "phase": phase(states, sandbox_ready=sandbox_ready),
        "conditions": conditions(states, previous, sandbox_ready=sandbox_ready, at=at)
        + list(extra_conditions),
        "containerStatuses": [s.to_wire() for s in states],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started,
    }
    if sandbox_ready:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    return {"status": status}


def disruption_condition(reason: str, message: str) -> Obj:
    """The DisruptionTarget condition the kubelet adds before it evicts a pod."""
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    }
