"""The trainer's exit-code table: the operator classifies pod exits with it.

Documented in docs/EXIT_CODES.md; keep the two in step (a test checks it).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1  # unexpected error: retried, counts against maxRestarts
    INVALID_CONFIG = 2  # the TunixRun spec is invalid: never retried
    DIVERGED = 3  # NaN or infinite loss: never retried
    DATA_ERROR = 4  # dataset unreadable or malformed: never retried
    DEVICE_UNAVAILABLE = 5  # requested device kind absent: retried (node may be wrong)
    NO_USABLE_CHECKPOINT = 6  # every checkpoint is damaged: never retried (a retry finds the same)
    PREEMPTED = 75  # SIGTERM handled, checkpoint saved: resumed, not counted (EX_TEMPFAIL)


class ExitClass(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    FATAL = "Fatal"  # fail the run at once
    RETRYABLE = "Retryable"  # recreate, spend one of maxRestarts
    PREEMPTED = "Preempted"  # recreate, spend one of maxPreemptions


SIGKILL_EXIT = 128 + 9  # OOM kill or grace period exceeded
SIGTERM_EXIT = 128 + 15  # SIGTERM not handled by the trainer (e.g. during start-up)

_CLASSES: dict[int, ExitClass] = {
    ExitCode.SUCCESS: ExitClass.SUCCEEDED,
    ExitCode.INVALID_CONFIG: ExitClass.FATAL,
    ExitCode.DIVERGED: ExitClass.FATAL,
    ExitCode.DATA_ERROR: ExitClass.FATAL,
    ExitCode.NO_USABLE_CHECKPOINT: ExitClass.FATAL,
    ExitCode.PREEMPTED: ExitClass.PREEMPTED,
    SIGTERM_EXIT: ExitClass.PREEMPTED,
}

REASONS: dict[int, str] = {
    ExitCode.SUCCESS: "Completed",
    ExitCode.ERROR: "TrainerError",
    ExitCode.INVALID_CONFIG: "InvalidConfig",
    ExitCode.DIVERGED: "Diverged",
    ExitCode.DATA_ERROR: "DataError",
    ExitCode.DEVICE_UNAVAILABLE: "DeviceUnavailable",
    ExitCode.NO_USABLE_CHECKPOINT: "NoUsableCheckpoint",
    ExitCode.PREEMPTED: "Preempted",
    SIGKILL_EXIT: "Killed",
    SIGTERM_EXIT: "Terminated",
}


def classify_exit_code(code: int) -> ExitClass:
    """How the operator treats a trainer container that exited with ``code``."""
    return _CLASSES.get(int(code), ExitClass.RETRYABLE)


def exit_reason(code: int) -> str:
    """A CamelCase reason for conditions and events."""
    return REASONS.get(int(code), f"ExitCode{int(code)}")
