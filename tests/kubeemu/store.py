"""The object store of the emulated API server: API-server semantics over plain dicts, no I/O.

Every write goes through here and is recorded as a watch event with a cluster-wide, monotonic
resourceVersion, so that watches can replay history from any resourceVersion.
"""

from __future__ import annotations

import copy
import datetime
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kubeemu import patches
from tests.kubeemu.resources import Registry, ResourceType, crd_types
from tests.kubeemu.selectors import Requirement, matches

Obj = dict[str, Any]
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName suffixes


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(rtype: ResourceType, name: str) -> ApiError:
    details = {"name": name, "group": rtype.group, "kind": rtype.plural}
    return ApiError(404, "NotFound", f'{_qualified(rtype)} "{name}" not found', details)


def conflict(rtype: ResourceType, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {_qualified(rtype)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, {"name": name, "group": rtype.group, "kind": rtype.plural})


def _qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``obj`` is the new state (the last state for DELETED), ``prev`` the state before."""

    resource_version: int
    storage_key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    prev: Obj | None


def _spec_part(obj: Obj) -> Obj:
    """What ``metadata.generation`` tracks: everything except metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class ObjectStore:
    """In-memory objects with API-server write semantics (see the module docstring)."""

    def __init__(self, registry: Registry, on_event: Callable[[WatchEvent], None] | None = None) -> None:
        self.registry = registry
        self.on_event = on_event
        self.resource_version = 0
        self.history: list[WatchEvent] = []
        self._objects: dict[tuple[str, str], dict[tuple[str | None, str], Obj]] = {}

    # -- reads -----------------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(rtype).get((self._ns(rtype, namespace), name))
        if obj is None:
            raise not_found(rtype, name)
        return copy.deepcopy(obj)

    def find(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self._bucket(rtype).get((self._ns(rtype, namespace), name))

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[Requirement, ...] = (),
    ) -> list[Obj]:
        """Matching objects (all namespaces when ``namespace`` is None), sorted by namespace and name."""
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._bucket(rtype).items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if (namespace is None or ns == namespace) and matches(obj, labels, fields)
        ]
        return items

    # -- writes ----------------------------------------------------------------------------------
    def create(self, rtype: ResourceType, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        namespace = self._ns(rtype, namespace or meta.get("namespace"))
        if rtype.namespaced:
            if namespace is None:
                raise ApiError(400, "BadRequest", "the namespace of the object is not set")
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            if self.find(self.registry.find("", "v1", "namespaces"), None, namespace) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = self._generate_name(rtype, namespace, meta["generateName"])
        name = meta["name"]
        if (namespace, name) in self._bucket(rtype):
            details = {"name": name, "group": rtype.group, "kind": rtype.plural}
            raise ApiError(409, "AlreadyExists", f'{_qualified(rtype)} "{name}" already exists', details)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(server_field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        if rtype.has_status:
            obj.pop("status", None)
        _apply_defaults(rtype, obj)
        self._bucket(rtype)[namespace, name] = obj
        self._record(rtype, "ADDED", obj, None)
        if rtype.storage_key == CRD_KEY:
            self._register_crd(obj)
        return copy.deepcopy(obj)

    def replace(
        self, rtype: ResourceType, namespace: str | None, name: str, body: Obj, subresource: str | None
    ) -> Obj:
        """PUT: replace the object (or only its status through the status subresource)."""
        current = self._current(rtype, namespace, name)
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise conflict(rtype, name)
        return self._write(rtype, current, copy.deepcopy(body), subresource)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str | None,
    ) -> Obj:
        """PATCH in any of the patch formats; an apply patch creates a missing object."""
        current = self.find(rtype, namespace, name)
        if current is None:
            if content_type == patches.APPLY_PATCH and subresource is None:
                body = copy.deepcopy(patch)
                body.setdefault("metadata", {})["name"] = name
                return self.create(rtype, namespace, body)
            raise not_found(rtype, name)
        patched = patches.apply_patch(current, patch, content_type)
        if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise conflict(rtype, name)
        return self._write(rtype, current, patched, subresource)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        options: Obj | None = None,
    ) -> Obj:
        """DELETE: mark for deletion while finalizers remain, otherwise remove and collect dependents."""
        options = options or {}
        current = self._current(rtype, namespace, name)
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != current["metadata"].get(key):
                raise conflict(rtype, name)
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            return copy.deepcopy(current)
        if meta.get("finalizers"):
            prev = copy.deepcopy(current)
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            self._record(rtype, "MODIFIED", current, prev)
            return copy.deepcopy(current)
        return self._remove(rtype, current, orphan=options.get("propagationPolicy") == "Orphan")

    # -- internals -------------------------------------------------------------------------------
    def _bucket(self, rtype: ResourceType) -> dict[tuple[str | None, str], Obj]:
        return self._objects.setdefault(rtype.storage_key, {})

    @staticmethod
    def _ns(rtype: ResourceType, namespace: str | None) -> str | None:
        return namespace if rtype.namespaced else None

    def _current(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        current = self.find(rtype, namespace, name)
        if current is None:
            raise not_found(rtype, name)
        return current

    def _generate_name(self, rtype: ResourceType, namespace: str | None, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            if (namespace, name) not in self._bucket(rtype):
                return name
        raise ApiError(409, "AlreadyExists", f"cannot generate a unique name from {prefix!r}")

    def _write(self, rtype: ResourceType, current: Obj, new: Obj, subresource: str | None) -> Obj:
        """Store ``new`` over ``current`` with the status-subresource and metadata rules."""
        if subresource == "status":
            merged = copy.deepcopy(current)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif subresource is not None:
            raise ApiError(405, "MethodNotAllowed", f"subresource {subresource!r} cannot be written here")
        elif rtype.has_status:
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        for immutable in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
            else:
                meta.pop(immutable, None)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        if new == current:
            return copy.deepcopy(current)  # a no-op write changes nothing, not even resourceVersion
        if _spec_part(new) != _spec_part(current):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        prev = copy.deepcopy(current)
        current.clear()
        current.update(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, current, orphan=False)
        self._record(rtype, "MODIFIED", current, prev)
        if rtype.storage_key == CRD_KEY:
            self._register_crd(current)
        return copy.deepcopy(current)

    def _remove(self, rtype: ResourceType, obj: Obj, *, orphan: bool) -> Obj:
        meta = obj["metadata"]
        del self._bucket(rtype)[self._ns(rtype, meta.get("namespace")), meta["name"]]
        self._record(rtype, "DELETED", obj, copy.deepcopy(obj))
        if rtype.storage_key == CRD_KEY:
            self._unregister_crd(obj)
        if rtype.storage_key == NAMESPACE_KEY:
            self._delete_namespace_contents(meta["name"])
        self._collect_dependents(meta["uid"], orphan=orphan)
        return copy.deepcopy(obj)

    def _owners_alive(self, refs: list[Obj]) -> bool:
        uids = {ref.get("uid") for ref in refs}
        return any(
            obj["metadata"].get("uid") in uids for bucket in self._objects.values() for obj in bucket.values()
        )

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """Background garbage collection: dependents whose owners are all gone are deleted (recursively)."""
        for (group, plural), bucket in list(self._objects.items()):
            rtype = self.registry.any_version(group, plural)
            if rtype is None:
                continue
            for obj in list(bucket.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                if orphan:
                    kept = [ref for ref in refs if ref.get("uid") != owner_uid]
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = kept
                    if not kept:
                        del new["metadata"]["ownerReferences"]
                    self._write(rtype, obj, new, None)
                elif (
                    not self._owners_alive(refs)
                    and self.find(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"]) is obj
                ):
                    self.delete(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _delete_namespace_contents(self, namespace: str) -> None:
        for (group, plural), bucket in list(self._objects.items()):
            rtype = self.registry.any_version(group, plural)
            if rtype is None or not rtype.namespaced:
                continue
            for (ns, name), obj in list(bucket.items()):
                if ns == namespace and bucket.get((ns, name)) is obj:
                    self._remove(rtype, obj, orphan=False)

    def _register_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        self.registry.remove_crd(name)
        for rtype in crd_types(crd):
            self.registry.add(rtype)

    def _unregister_crd(self, crd: Obj) -> None:
        types = crd_types(crd)
        for rtype in types[:1]:
            for obj in list(self._bucket(rtype).values()):
                self._remove(rtype, obj, orphan=False)
            self._objects.pop(rtype.storage_key, None)
        self.registry.remove_crd(crd["metadata"]["name"])

    def _record(self, rtype: ResourceType, event_type: str, obj: Obj, prev: Obj | None) -> None:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        event = WatchEvent(self.resource_version, rtype.storage_key, event_type, copy.deepcopy(obj), prev)
        self.history.append(event)
        if self.on_event is not None:
            self.on_event(event)


def _apply_defaults(rtype: ResourceType, obj: Obj) -> None:
    """The few defaults and server-set fields that clients of this project rely on."""
    spec = obj.setdefault("spec", {}) if rtype.kind in ("Pod", "Job", "CustomResourceDefinition") else None
    uid = obj["metadata"]["uid"]
    if (rtype.group, rtype.kind) == ("", "Pod"):
        spec.setdefault("restartPolicy", "Always")
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif (rtype.group, rtype.kind) == ("", "Namespace"):
        obj["status"] = {"phase": "Active"}
    elif (rtype.group, rtype.kind) == ("batch", "Job"):
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
            "batch.kubernetes.io/job-name": obj["metadata"]["name"],
            "job-name": obj["metadata"]["name"],
        }
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
        obj["status"] = {}
    elif rtype.storage_key == CRD_KEY:
        names = spec.get("names") or {}
        accepted = {**names, "singular": names.get("singular") or str(names.get("kind", "")).lower()}
        accepted.setdefault("listKind", f"{names.get('kind')}List")
        now = now_rfc3339()
        obj["status"] = {
            "acceptedNames": accepted,
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": "", "lastTransitionTime": now}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ],
        }
