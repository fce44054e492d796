"""The HTTP face of the emulated API server: an aiohttp low-level handler over :class:`ObjectStore`.

It serves discovery, OpenAPI stubs, CRUD with all patch formats, the ``/status`` and ``/log``
subresources, and watches with history replay. Relation to kmock 0.8: its ``KubernetesEmulator`` and
request parser were tried and found short (see ``tests/kubeemu/README.md``; e.g. its parser fails on
``/api/v1/namespaces``), so only kmock's bundled table of built-in resources is used, through its public
API (``resources.load_bundled()``, in :mod:`tests.kubeemu.resources`). Its aiohttp server wrapper is not
used either: its DNS interceptor patches aiohttp process-wide.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web

from tests.kubeemu import patches
from tests.kubeemu.resources import Registry, ResourceType, builtin_types
from tests.kubeemu.selectors import (
    Requirement,
    SelectorError,
    matches,
    parse_field_selector,
    parse_label_selector,
)
from tests.kubeemu.store import ApiError, ObjectStore, WatchEvent

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubeemu",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_STATUS_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, as RBAC would authorize it (``resource`` is "" for non-resource URLs)."""

    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user_agent: str
    path: str = ""


@dataclass(frozen=True)
class ApiPath:
    """A parsed resource URL."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """``/api/v1/...`` or ``/apis/<group>/<version>/...`` down to a resource; None for other URLs."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None, "/".join(rest[2:]) or None
    )


def authorization_verb(method: str, path: ApiPath | None, params: Mapping[str, str]) -> str:
    """The RBAC verb of a request (non-resource URLs use the lowercase HTTP method)."""
    if path is None:
        return method.lower()
    if method == "GET":
        if params.get("watch", "").lower() in ("true", "1"):
            return "watch"
        return "get" if path.name else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
    if method == "DELETE":
        return "delete" if path.name else "deletecollection"
    return verbs.get(method, method.lower())


def _json(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _bare_content_type(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "application/json").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the handlers use."""

    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    raw: aiohttp.web.BaseRequest


class ApiServer:
    """An in-memory Kubernetes API server (see the module docstring); an aiohttp low-level handler."""

    def __init__(self) -> None:
        self.registry = Registry(builtin_types())
        self.store = ObjectStore(self.registry, on_event=self._on_event)
        self.request_log: list[RequestRecord] = []
        self.pod_logs: dict[tuple[str, str], str] = {}
        self.stopping = False
        self.internal_errors: list[Exception] = []
        self._tick: asyncio.Event | None = None

    # -- wake-ups for watches (always on the server's own loop) ---------------------------------
    def _current_tick(self) -> asyncio.Event:
        if self._tick is None:
            self._tick = asyncio.Event()
        return self._tick

    def _on_event(self, event: WatchEvent) -> None:
        self.wake_watchers()

    def wake_watchers(self) -> None:
        tick, self._tick = self._tick, None
        if tick is not None:
            tick.set()

    # -- request entry point ---------------------------------------------------------------------
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        request = Request(raw.method.upper(), raw.path, dict(raw.query), raw.headers, await raw.read(), raw)
        path = parse_api_path(request.path)
        params = request.params
        verb = authorization_verb(request.method, path, params)
        self.request_log.append(
            RequestRecord(
                verb=verb,
                api_group=path.group if path else "",
                resource=path.plural if path else "",
                subresource=(path.subresource or "") if path else "",
                namespace=(path.namespace or "") if path else "",
                name=(path.name or "") if path else "",
                user_agent=request.headers.get("User-Agent", ""),
                path=request.path,
            )
        )
        try:
            if path is None:
                return self._serve_non_resource(request.path)
            rtype = self.registry.find(path.group, path.version, path.plural)
            if rtype is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if verb == "watch":
                return await self._watch(raw, rtype, path, params)
            return self._serve_resource(request, verb, rtype, path, params)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        except SelectorError as exc:
            return _json(ApiError(400, "BadRequest", str(exc)).status(), 400)
        except patches.PatchError as exc:
            return _json(ApiError(400, "BadRequest", str(exc)).status(), 400)
        except patches.PatchTestFailed as exc:
            return _json(ApiError(422, "Invalid", str(exc)).status(), 422)
        except Exception as exc:  # a bug in the emulator: answer like a server does, and keep it for tests
            self.internal_errors.append(exc)
            return _json(ApiError(500, "InternalError", f"{type(exc).__name__}: {exc}").status(), 500)

    # -- resources -------------------------------------------------------------------------------
    def _serve_resource(
        self, request: Request, verb: str, rtype: ResourceType, path: ApiPath, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        if params.get("dryRun"):
            raise ApiError(400, "BadRequest", "dryRun is not supported by the emulator")
        namespace = path.namespace if rtype.namespaced else None
        sub = path.subresource
        if sub not in (None, "status", "log") or (sub and sub not in rtype.subresources):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if verb == "get":
            obj = self.store.get(rtype, namespace, path.name)
            if sub == "log":
                text = self.pod_logs.get((obj["metadata"]["namespace"], path.name), "")
                return aiohttp.web.Response(text=text, content_type="text/plain")
            return _json(obj)
        if verb == "list":
            labels = parse_label_selector(params.get("labelSelector"))
            fields = parse_field_selector(params.get("fieldSelector"))
            return _json(self._list_body(rtype, self.store.list(rtype, namespace, labels, fields)))
        if verb == "create":
            if path.name:
                raise ApiError(405, "MethodNotAllowed", f"POST is not supported on {request.path}")
            return _json(self.store.create(rtype, namespace, self._body(request)), 201)
        if verb == "update":
            return _json(self.store.replace(rtype, namespace, path.name, self._body(request), sub))
        if verb == "patch":
            content_type = _bare_content_type(request.headers)
            if content_type not in patches.PATCH_TYPES:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
                )
            patch = patches.decode_body(request.body, content_type)
            return _json(self.store.patch(rtype, namespace, path.name, patch, content_type, sub))
        if verb == "delete":
            options = self._delete_options(request, params)
            return _json(self.store.delete(rtype, namespace, path.name, options))
        if verb == "deletecollection":
            labels = parse_label_selector(params.get("labelSelector"))
            fields = parse_field_selector(params.get("fieldSelector"))
            options = self._delete_options(request, params)
            deleted = [
                self.store.delete(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)
                for obj in self.store.list(rtype, namespace, labels, fields)
            ]
            return _json(self._list_body(rtype, deleted))
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported")

    def _list_body(self, rtype: ResourceType, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": items,
        }

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if "protobuf" in _bare_content_type(request.headers):
            raise ApiError(415, "UnsupportedMediaType", "protobuf bodies are not supported by the emulator")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        return body

    def _delete_options(self, request: Request, params: Mapping[str, str]) -> dict[str, Any]:
        options = self._body(request) if request.body.strip() else {}
        if params.get("propagationPolicy"):
            options["propagationPolicy"] = params["propagationPolicy"]
        return options

    # -- watch -----------------------------------------------------------------------------------
    async def _watch(
        self, raw: aiohttp.web.BaseRequest, rtype: ResourceType, path: ApiPath, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        namespace = path.namespace if rtype.namespaced else None
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"))
        if path.name:  # a watch on a named object is a watch with a name field selector
            fields = (*fields, *parse_field_selector(f"metadata.name={path.name}"))
        since = params.get("resourceVersion") or ""
        initial = params.get("sendInitialEvents", "").lower() == "true" or since in ("", "0")
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = None if timeout is None else time.monotonic() + timeout

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(raw)
        try:
            if initial:
                position = len(self.store.history)
                for obj in self.store.list(rtype, namespace, labels, fields):
                    await self._send(response, "ADDED", obj)
                if params.get("sendInitialEvents") == "true":
                    await self._send(response, "BOOKMARK", self._bookmark(rtype, initial_end=True))
            else:
                try:
                    position = min(int(since), len(self.store.history))
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
            await self._stream_history(response, rtype, namespace, labels, fields, position, deadline)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except ApiError as exc:
            await self._send(response, "ERROR", exc.status())
        return response

    async def _stream_history(
        self,
        response: aiohttp.web.StreamResponse,
        rtype: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...],
        fields: tuple[Requirement, ...],
        position: int,
        deadline: float | None,
    ) -> None:
        """Send the events after ``position`` in the history, then wait for more until the deadline."""
        while not self.stopping:
            tick = self._current_tick()
            while position < len(self.store.history):
                event = self.store.history[position]
                position += 1
                translated = _translate(event, rtype, namespace, labels, fields)
                if translated is not None:
                    await self._send(response, *translated)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            try:
                await asyncio.wait_for(tick.wait(), remaining)
            except TimeoutError:
                return

    def _bookmark(self, rtype: ResourceType, *, initial_end: bool) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, event_type: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    # -- discovery and other non-resource URLs ---------------------------------------------------
    def _serve_non_resource(self, url_path: str) -> aiohttp.web.StreamResponse:
        parts = [p for p in url_path.strip("/").split("/") if p]
        if not parts:
            paths = ["/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version", "/healthz"]
            paths += [f"/apis/{g}/{v}" for g, vs in self.registry.group_versions().items() if g for v in vs]
            return _json({"paths": sorted(paths)})
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return aiohttp.web.Response(text="ok", content_type="text/plain")
        if parts == ["version"]:
            return _json(SERVER_VERSION)
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts == ["apis"]:
            groups = [self._api_group(g, vs) for g, vs in sorted(self.registry.group_versions().items()) if g]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if parts == ["api", "v1"]:
            return _json(self._resource_list("", "v1"))
        if parts[0] == "apis" and len(parts) == 2:
            versions = self.registry.group_versions().get(parts[1])
            if versions:
                return _json({"kind": "APIGroup", "apiVersion": "v1", **self._api_group(parts[1], versions)})
        if parts[0] == "apis" and len(parts) == 3 and self.registry.in_group_version(parts[1], parts[2]):
            return _json(self._resource_list(parts[1], parts[2]))
        if parts[0] == "openapi":
            return self._openapi(parts[1:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for rtype in sorted(self.registry.in_group_version(group, version), key=lambda t: t.plural):
            resources.append(
                {
                    "name": rtype.plural,
                    "singularName": rtype.singular,
                    "namespaced": rtype.namespaced,
                    "kind": rtype.kind,
                    "verbs": list(rtype.verbs),
                    "shortNames": list(rtype.short_names),
                    "categories": list(rtype.categories),
                }
            )
            for sub in sorted(rtype.subresources):
                resources.append(
                    {
                        "name": f"{rtype.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rtype.namespaced,
                        "kind": rtype.kind,
                        "verbs": _STATUS_VERBS if sub == "status" else ["get"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _openapi(self, parts: list[str]) -> aiohttp.web.StreamResponse:
        """Stubs: enough for kubectl to see that the server validates fields (no schemas)."""
        if parts == ["v2"]:
            return _json(
                {
                    "swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": "v1.32.0"},
                    "paths": {},
                    "definitions": {},
                }
            )
        if parts == ["v3"]:
            paths = {}
            for group, versions in self.registry.group_versions().items():
                for version in versions:
                    gv = f"apis/{group}/{version}" if group else f"api/{version}"
                    digest = hashlib.sha256(json.dumps(self._openapi_gv(group, version)).encode()).hexdigest()
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest[:32].upper()}"}
            return _json({"paths": paths})
        if parts[:1] == ["v3"] and len(parts) in (3, 4):
            group, version = ("", parts[2]) if parts[1] == "api" else (parts[2], parts[3])
            if self.registry.in_group_version(group, version):
                return _json(self._openapi_gv(group, version))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _openapi_gv(self, group: str, version: str) -> dict[str, Any]:
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
        paths = {}
        for rtype in self.registry.in_group_version(group, version):
            ns = "/namespaces/{namespace}" if rtype.namespaced else ""
            gvk = {"group": group, "version": version, "kind": rtype.kind}
            paths[f"{prefix}{ns}/{rtype.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [field_validation],
                    "responses": {"200": {"description": "OK"}},
                },
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }


def _translate(
    event: WatchEvent,
    rtype: ResourceType,
    namespace: str | None,
    labels: tuple[Requirement, ...],
    fields: tuple[Requirement, ...],
) -> tuple[str, dict[str, Any]] | None:
    """A history event as a given watcher sees it: objects entering or leaving its selection become
    ADDED or DELETED, like the real server's watch cache does."""
    if event.storage_key != rtype.storage_key:
        return None
    if namespace is not None and event.obj["metadata"].get("namespace") != namespace:
        return None
    now_in = matches(event.obj, labels, fields)
    was_in = event.prev is not None and matches(event.prev, labels, fields)
    if event.type == "MODIFIED":
        if now_in and was_in:
            return "MODIFIED", event.obj
        if now_in:
            return "ADDED", event.obj
        return ("DELETED", event.obj) if was_in else None
    return (event.type, event.obj) if now_in else None
