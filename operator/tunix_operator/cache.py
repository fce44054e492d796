"""What the operator knows of each run without asking the API (pure, no I/O).

kopf's watches fill it: the run's body is the daemon's live ``body``; Jobs and pods come from
``@kopf.index`` handlers keyed by (namespace, ``tunix.dev/run``) (``handlers.py``). A watch lags
the operator's own writes by a few milliseconds, so two memories bridge the gap, as the Job
controller's "expectations" do: :class:`StatusWrites` (the run as the last status patch stored
it) and :class:`JobExpectations` (Jobs created or deleted but not yet seen by the watch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tunix_operator.manifests import COMPLETION_INDEX_ANNOTATION
from tunix_operator.observe import CHECKPOINT_TIME_ANNOTATION

RunKey = tuple[str, str]  # (namespace, run name)
Obj = Mapping[str, Any]

# Only these parts of a Job/pod are kept in memory: what observe.py and state.py read. A pod's and a
# Job's spec (the whole pod template), metadata.managedFields and the annotations (the pods carry the
# run's whole run.yaml, and the user's podAnnotations: up to 256 KiB a pod) are most of their size.
JOB_SPEC_KEPT = ("completions", "parallelism", "suspend", "backoffLimit")
POD_SPEC_KEPT = ("terminationGracePeriodSeconds", "nodeName")
POD_ANNOTATIONS_KEPT = (COMPLETION_INDEX_ANNOTATION, CHECKPOINT_TIME_ANNOTATION)
EXPECTATION_SECONDS = 60.0  # a created/deleted Job the watch never shows is forgotten after this


def slim(obj: Obj, spec_kept: Iterable[str], annotations_kept: Iterable[str] = ()) -> dict[str, Any]:
    """``obj`` without managedFields, with only ``spec_kept`` of its spec and ``annotations_kept`` of
    its annotations (shallow copies)."""
    metadata = obj.get("metadata") or {}
    meta = {k: v for k, v in metadata.items() if k not in ("managedFields", "annotations")}
    annotations = metadata.get("annotations") or {}
    if kept := {k: annotations[k] for k in annotations_kept if k in annotations}:
        meta["annotations"] = kept
    spec = obj.get("spec") or {}
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": meta,
        "spec": {k: spec[k] for k in spec_kept if k in spec},
    }
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def slim_job(job: Obj) -> dict[str, Any]:
    return slim(job, JOB_SPEC_KEPT)


def slim_pod(pod: Obj) -> dict[str, Any]:
    return slim(pod, POD_SPEC_KEPT, POD_ANNOTATIONS_KEPT)


def _name(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _uid(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


@dataclass(frozen=True)
class Children:
    """A run's Jobs and pods as the watches last showed them."""

    jobs: tuple[Obj, ...] = ()
    pods: tuple[Obj, ...] = ()


def _newer_or_same(live: str | None, written: str | None, before: str | None) -> bool:
    """Whether the live body already includes our write. resourceVersions are etcd revisions
    (integers, increasing) on every API server built on etcd; otherwise only "changed since"."""
    if live is None or written is None:
        return True
    if live.isdigit() and written.isdigit():
        return int(live) >= int(written)
    return live != before


class StatusWrites:
    """The run as the last status patch returned it, until the watch delivers that version."""

    def __init__(self) -> None:
        self._bodies: dict[RunKey, tuple[str | None, Obj]] = {}

    def written(self, key: RunKey, before: Obj, after: Obj) -> None:
        self._bodies[key] = (_resource_version(before), after)

    def current(self, key: RunKey, live: Obj) -> Obj:
        """``live``, or our last written body when the watch has not caught up with it."""
        entry = self._bodies.get(key)
        if entry is None:
            return live
        before, written = entry
        if _newer_or_same(_resource_version(live), _resource_version(written), before):
            del self._bodies[key]
            return live
        return written

    def forget(self, key: RunKey) -> None:
        self._bodies.pop(key, None)


def _resource_version(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class JobExpectations:
    """Jobs this operator created or deleted that the watch has not shown yet."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._created: dict[RunKey, dict[str, tuple[float, Obj]]] = {}
        self._deleted: dict[RunKey, dict[str, tuple[float, str | None]]] = {}

    def created(self, key: RunKey, job: Obj) -> None:
        self._created.setdefault(key, {})[_name(job)] = (self._clock(), slim_job(job))
        self._deleted.get(key, {}).pop(_name(job), None)

    def deleted(self, key: RunKey, job: Obj | None, name: str) -> None:
        uid = _uid(job) if job is not None else None
        self._deleted.setdefault(key, {})[name] = (self._clock(), uid)
        self._created.get(key, {}).pop(name, None)

    def shows_as_created(self, key: RunKey, job: Obj) -> bool:
        """Whether ``job`` (from a watch event) is a Job this operator created and the watch has not
        shown yet, unchanged since (the resourceVersion of the create's answer)."""
        entry = self._created.get(key, {}).get(_name(job))
        version = _resource_version(job)
        return entry is not None and version is not None and _resource_version(entry[1]) == version

    def jobs(self, key: RunKey, indexed: Iterable[Obj]) -> dict[str, Obj]:
        """The run's Jobs by name: the indexed ones, plus those created, minus those deleted."""
        now = self._clock()
        by_name = {_name(job): job for job in indexed}
        created = self._created.get(key, {})
        for name, (since, job) in list(created.items()):
            if name in by_name or now - since > EXPECTATION_SECONDS:
                del created[name]  # the watch caught up (or never will)
            else:
                by_name[name] = job
        deleted = self._deleted.get(key, {})
        for name, (since, uid) in list(deleted.items()):
            seen = by_name.get(name)
            gone = seen is None or (uid is not None and _uid(seen) != uid)
            if gone or now - since > EXPECTATION_SECONDS:
                del deleted[name]
            else:
                del by_name[name]
        for table in (self._created, self._deleted):
            if not table.get(key):
                table.pop(key, None)
        return by_name

    def forget(self, key: RunKey) -> None:
        self._created.pop(key, None)
        self._deleted.pop(key, None)
