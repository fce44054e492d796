"""Trainer exceptions, each carrying the exit code the entry point exits with."""

from __future__ import annotations

from tunix_api.exit_codes import ExitCode


class TrainerError(Exception):
    """An error the trainer reports with a specific exit code (see ``tunix_api.exit_codes``)."""

    exit_code: ExitCode = ExitCode.ERROR
    label: str = "error"  # short prefix for the one-line message on stderr


class ConfigError(TrainerError):
    """The run's spec is invalid; the message names each field as ``spec.training.batchSize: ...``."""

    exit_code = ExitCode.INVALID_CONFIG
    label = "invalid config"


class DivergedError(TrainerError):
    """The loss became NaN or infinite."""

    exit_code = ExitCode.DIVERGED
    label = "diverged"


class DeviceUnavailableError(TrainerError):
    """The requested device kind is not present on this node."""

    exit_code = ExitCode.DEVICE_UNAVAILABLE
    label = "device unavailable"


class PreemptedError(TrainerError):
    """Training stopped on SIGTERM after saving a checkpoint (none before the first step); the run
    resumes from it."""

    exit_code = ExitCode.PREEMPTED
    label = "preempted"

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step
