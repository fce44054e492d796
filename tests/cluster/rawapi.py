"""JSON requests and resumable list+watch loops over a ``kubernetes.client.ApiClient`` (objects as dicts).

The process kubelet and the PV provisioner speak to the API server only through this: requests return
the API's JSON as dicts, and :func:`list_watch` keeps one collection in step (list, watch from the
list's resourceVersion, relist on 410 Gone), handing each event to a callback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds) for ordinary requests
WATCH_SECONDS = 60  # the server ends each watch after this long; the loop then resumes it
RETRY_SECONDS = 1.0  # wait after a failed list or watch before trying again


class ApiError(Exception):
    """A non-2xx answer: its HTTP code, the Status reason and message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message

    @classmethod
    def from_exception(cls, exc: ApiException) -> ApiError:
        body: Any = exc.body
        if isinstance(body, bytes):
            body = body.decode(errors="replace")
        try:
            status = json.loads(body or "{}")
        except ValueError:
            status = {}
        if not isinstance(status, dict):
            status = {}
        return cls(
            int(exc.status or 0), str(status.get("reason") or exc.reason), str(status.get("message") or body)
        )


def path_of(*parts: str) -> str:
    """``/``-joined, each part percent-encoded (names may hold characters a URL must escape)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


class Api:
    """Plain JSON calls through a private copy of the caller's client (its own connection pool)."""

    def __init__(self, client: kubernetes.client.ApiClient, *, user_agent: str, pool_size: int = 32) -> None:
        configuration = copy.deepcopy(client.configuration)
        configuration.connection_pool_maxsize = pool_size
        self._client = kubernetes.client.ApiClient(configuration)
        self._client.user_agent = user_agent
        self.host = configuration.host
        self._streams: set[urllib3.HTTPResponse] = set()
        self._closed = False
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """The decoded JSON answer; :class:`ApiError` for any non-2xx."""
        try:
            resp = self._client.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            raise ApiError.from_exception(exc) from None
        data = resp.data
        return json.loads(data) if data else {}

    def watch(self, path: str, resource_version: str, query: dict[str, str] | None = None) -> Iterator[Obj]:
        """Watch events (dicts with ``type`` and ``object``) from ``resource_version`` until the server
        ends the watch or :meth:`close_streams` cuts it."""
        query = {
            **(query or {}),
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            resp = self._client.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=(5, WATCH_SECONDS + 30),
            )
        except ApiException as exc:
            raise ApiError.from_exception(exc) from None
        with self._lock:
            self._streams.add(resp)
            if self._closed:  # cut while this watch was being opened
                _cut(resp)
        try:
            for line in iter_resp_lines(resp):
                if line:
                    yield json.loads(line)
        finally:
            with self._lock:
                self._streams.discard(resp)
            resp.release_conn()

    def close_streams(self) -> None:
        """Cut every open watch, and any opened later (their iterators end with an error the loops ignore
        once stopped)."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for resp in streams:
            _cut(resp)

    def close(self) -> None:
        self.close_streams()
        self._client.close()


def _cut(resp: urllib3.HTTPResponse) -> None:
    """Shut a watch's socket down; a stream that ended meanwhile (its connection already released to
    the pool: urllib3 raises RuntimeError) or never had a socket is left as it is."""
    with contextlib.suppress(OSError, AttributeError, RuntimeError, ValueError):
        resp.shutdown()


def list_watch(
    api: Api,
    path: str,
    *,
    on_list: Callable[[list[Obj]], None],
    on_event: Callable[[str, Obj], None],
    stop: threading.Event,
    errors: list[BaseException],
    query: dict[str, str] | None = None,
) -> None:
    """Keep ``path`` (a collection; ``query`` holds its selectors) in step until ``stop``:
    ``on_list(items)`` after every (re)list, ``on_event(type, obj)`` for each ADDED/MODIFIED/DELETED.
    A 410 Gone (expired resourceVersion) relists; other failures are recorded in ``errors`` and retried
    after a pause."""
    while not stop.is_set():
        try:
            listing = api.request("GET", path, query=query)
            on_list(listing.get("items") or [])
            version = listing["metadata"]["resourceVersion"]
            while not stop.is_set():
                version = _follow(api, path, version, query, on_event, stop)
        except _Gone:
            continue
        except Exception as exc:  # the loop must survive anything; the test sees it in errors
            if stop.is_set():
                return
            errors.append(exc)
            stop.wait(RETRY_SECONDS)


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _follow(
    api: Api,
    path: str,
    version: str,
    query: dict[str, str] | None,
    on_event: Callable[[str, Obj], None],
    stop: threading.Event,
) -> str:
    """One watch from ``version``; returns the resourceVersion to resume from."""
    try:
        for event in api.watch(path, version, query):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise ApiError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message")))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind != "BOOKMARK":
                on_event(str(kind), obj)
            if stop.is_set():
                break
    except ApiError as exc:
        if exc.code == 410:
            raise _Gone from None
        raise
    except (urllib3.exceptions.HTTPError, OSError):
        # A cut or timed-out stream (or a server restarting): resume from the last version seen.
        stop.wait(RETRY_SECONDS)
    return version
