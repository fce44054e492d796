"""Polls that find nothing new are not decided again (pure, no I/O).

A running run is polled every few seconds (its progress.json), and almost every poll finds what the
last one found. ``decide`` is a pure function of the run, its Jobs and pods, the files read, the
time and the settings; the time matters only through time-based checks (active deadline, stall and
startup timeouts, restart backoff, TTL, settling pods), and those say when they come due
(``Decision.due_after``). So a decision that changed nothing (:attr:`Decision.quiet`) stands while
the run, its children (by resourceVersion) and the files read (by value) stay the same, until its
next time-based check, and never longer than the resync interval (:meth:`Reconciler._until`).
A watch event of the run, its Job or pods changes a resourceVersion and so is decided on at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tunix_operator.policies.draft import Decision, RunView

RunKey = tuple[str, str]  # (namespace, run name)
Version = tuple[str, str]  # (name or uid, resourceVersion)
Versions = tuple[str, tuple[Version, ...], tuple[Version, ...]]


@dataclass(frozen=True)
class Files:
    """The trainer's files as read for one decision (None: not read, missing or unreadable)."""

    progress: Mapping[str, Any] | None = None
    summary: Mapping[str, Any] | None = None
    benchmark: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Quiet:
    """A decision that changed nothing, and what it was made of."""

    seen: Versions
    view: RunView  # the run as parsed (reused while its version is the same)
    wants: tuple[bool, bool]  # (progress read?, result file read?)
    files: Files
    until: datetime  # its next time-based check, or the resync bound
    decision: Decision

    @property
    def poll_after(self) -> float | None:
        """Seconds until the files are to be read again, when that comes before ``until``'s check."""
        poll, due = self.decision.requeue_after, self.decision.due_after
        return poll if poll is not None and (due is None or poll < due) else None


def _version(obj: Mapping[str, Any]) -> Version | None:
    meta = obj.get("metadata") or {}
    version = meta.get("resourceVersion")
    return None if version is None else (meta.get("uid") or meta.get("name") or "", version)


def versions(
    run: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> Versions | None:
    """The resourceVersions of a run and its children; None when one has none (not comparable)."""
    run_version = (run.get("metadata") or {}).get("resourceVersion")
    job_versions = [_version(j) for j in jobs]
    pod_versions = [_version(p) for p in pods]
    if run_version is None or None in job_versions or None in pod_versions:
        return None
    return (
        run_version,
        tuple(sorted(v for v in job_versions if v is not None)),
        tuple(sorted(v for v in pod_versions if v is not None)),
    )


class QuietDecisions:
    """The last quiet decision of each run. Thread-safe (reconciles run in a worker pool)."""

    def __init__(self) -> None:
        self._entries: dict[RunKey, Quiet] = {}
        self._lock = threading.Lock()

    def valid(self, key: RunKey, seen: Versions | None, now: datetime) -> Quiet | None:
        """The run's quiet decision if it was made on ``seen`` and is not due yet."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or seen is None or entry.seen != seen or now >= entry.until:
            return None
        return entry

    def get(self, key: RunKey) -> Quiet | None:
        with self._lock:
            return self._entries.get(key)

    def remember(self, key: RunKey, entry: Quiet) -> None:
        with self._lock:
            self._entries[key] = entry

    def forget(self, key: RunKey) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
