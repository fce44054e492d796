"""A minimal blocking JSON client for the emulated API server (used by the cluster and the kubelet)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3


class RestError(RuntimeError):
    """A non-2xx answer; ``status`` holds the decoded ``Status`` object when there is one."""

    def __init__(self, code: int, status: Any) -> None:
        super().__init__(f"HTTP {code}: {status}")
        self.code, self.status = code, status


class RestClient:
    """JSON over HTTP with a fixed User-Agent; thread-safe (urllib3 pools are)."""

    def __init__(self, base_url: str, *, user_agent: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.user_agent = user_agent
        self._http = urllib3.PoolManager(
            maxsize=8, retries=False, timeout=urllib3.Timeout(connect=5, read=30)
        )
        self._streams: set[urllib3.BaseHTTPResponse] = set()
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", "Content-Type": content_type}
        data = None if body is None else json.dumps(body).encode()
        url = self.base_url + path + ("?" + urlencode(params) if params else "")
        response = self._http.request(method, url, body=data, headers=headers)
        payload = json.loads(response.data) if response.data and response.data[:1] in (b"{", b"[") else None
        if response.status >= 300:
            raise RestError(response.status, payload or response.data.decode(errors="replace"))
        return payload

    def watch(self, path: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Stream watch events until the server ends the stream or :meth:`close_streams` is called."""
        query = urlencode({**params, "watch": "true"})
        response = self._http.request(
            "GET",
            f"{self.base_url}{path}?{query}",
            headers={"User-Agent": self.user_agent},
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=None),
        )
        with self._lock:
            self._streams.add(response)
        try:
            if response.status >= 300:
                raise RestError(response.status, response.read().decode(errors="replace"))
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._streams.discard(response)
            response.release_conn()

    def close_streams(self) -> None:
        """Interrupt every open watch (from any thread)."""
        with self._lock:
            streams = list(self._streams)
        for response in streams:
            response.shutdown()
