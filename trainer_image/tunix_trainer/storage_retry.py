"""Retries with backoff for object-storage calls, bounded by a deadline.

Object storage can be unreachable for a while (connection refused, or connections that hang).
Every write the trainer cannot lose (metrics chunks, checkpoint uploads, the summary) goes through
:func:`retrying`: a transient failure is retried with exponential backoff until the operation has
failed for ``deadline`` seconds in a row, then :class:`StorageUnavailableError` (exit 1, retryable)
names the operation, the URI, how long it tried and the last error. Local disks are not retried.

Settings (environment, read when an operation starts; defaults in brackets):

- ``TUNIX_STORAGE_RETRY_SECONDS`` [300]: how long one operation may keep failing.
- ``TUNIX_STORAGE_RETRY_MAX_DELAY_SECONDS`` [10]: the longest pause between two tries (the first
  is 0.25 s, doubling).
- ``TUNIX_STORAGE_CONNECT_TIMEOUT_SECONDS`` [10] and ``TUNIX_STORAGE_READ_TIMEOUT_SECONDS`` [30]:
  botocore's timeouts for S3. botocore's read timeout does not cover an upload waiting for its
  answer, so every call on an asynchronous filesystem (s3fs, gcsfs) is also bounded as a whole
  (:func:`call_timeout`: connect + read timeout, plus one second per MiB sent); a black-holed
  connection then fails instead of hanging, and a failure is reported at most one try after the
  deadline.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tunix_trainer.errors import TrainerError

log = logging.getLogger(__name__)
T = TypeVar("T")

_PERMANENT = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,  # a JSON decode error, a bad argument: trying again gives the same
    TypeError,
    KeyError,
    AttributeError,
    NotImplementedError,
)


class StorageUnavailableError(TrainerError):
    """Object storage stayed unreachable past the retry deadline (exit 1: the run is retried)."""

    label = "storage unavailable"


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = 300.0
    first_delay: float = 0.25
    max_delay: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            deadline=env_seconds("TUNIX_STORAGE_RETRY_SECONDS", 300.0),
            max_delay=env_seconds("TUNIX_STORAGE_RETRY_MAX_DELAY_SECONDS", 10.0),
        )


def env_seconds(name: str, default: float) -> float:
    """A non-negative number of seconds from the environment variable ``name``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise TrainerError(f"{name}: expected a finite number of seconds >= 0, got {raw!r}")
    return value


def s3_config() -> dict[str, object]:
    """botocore ``Config`` arguments: bounded connect/read timeouts, no retries of its own."""
    return {
        "connect_timeout": env_seconds("TUNIX_STORAGE_CONNECT_TIMEOUT_SECONDS", 10.0),
        "read_timeout": env_seconds("TUNIX_STORAGE_READ_TIMEOUT_SECONDS", 30.0),
        "retries": {"total_max_attempts": 1, "mode": "standard"},
    }


def call_timeout(nbytes: int = 0) -> float:
    """Seconds one storage call may take: connect + read timeout, plus 1 s per MiB of payload."""
    base = env_seconds("TUNIX_STORAGE_CONNECT_TIMEOUT_SECONDS", 10.0) + env_seconds(
        "TUNIX_STORAGE_READ_TIMEOUT_SECONDS", 30.0
    )
    return base + nbytes / (1 << 20)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away by trying again (not a missing object, a denial, a bug)."""
    return isinstance(exc, Exception) and not isinstance(exc, (*_PERMANENT, TrainerError))


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried on transient errors until it has failed for ``policy.deadline`` s."""
    policy = policy or RetryPolicy.from_env()
    first_failure: float | None = None
    delay = policy.first_delay
    while True:
        attempt_started = clock()
        try:
            result = call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = clock()
            first_failure = attempt_started if first_failure is None else first_failure
            failing_for = now - first_failure
            if failing_for >= policy.deadline:
                raise StorageUnavailableError(
                    f"{what}: storage unreachable for {failing_for:.0f} s "
                    f"(limit TUNIX_STORAGE_RETRY_SECONDS={policy.deadline:g}): {_describe(exc)}"
                ) from exc
            pause = min(delay, policy.max_delay, policy.deadline - failing_for)
            log.warning("%s failed (%s); retrying in %.2f s", what, _describe(exc), pause)
            sleep(max(pause, 0.0))
            delay *= 2
        else:
            if first_failure is not None:
                log.warning("%s succeeded after %.1f s of failures", what, clock() - first_failure)
            return result


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__}: no answer in time"
