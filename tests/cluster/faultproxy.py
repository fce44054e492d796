"""A TLS reverse proxy in front of the real API server that injects API faults for tests.

Clients (the operator, with its bearer token) talk to the proxy, which serves a certificate from the
cluster's CA, forwards every request to the real API server and streams the answer back (watches
included). Tests arm faults: answer the next N matching requests with an HTTP error (a 500, or a 409
Conflict as the server gives for a stale resourceVersion) without forwarding them, or cut every open
watch stream now. Loopback only; bounded by the test's lifetime.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from dataclasses import dataclass, field

import aiohttp
import aiohttp.web

from tests.cluster.controlplane import ControlPlane

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class Fault:
    """Answer up to ``count`` requests whose method matches and whose path matches ``path`` (a regex)."""

    method: str
    path: str
    status: int
    count: int
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.count and method == self.method and re.search(self.path, path) is not None


@dataclass
class ProxyLog:
    """What the proxy saw: (method, path, status) of each request, and the watches it cut."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)
    watches_cut: int = 0


def _status_body(code: int) -> bytes:
    reason = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}
    message = f"injected by the test's fault proxy: {code}"
    if code == 409:
        message = "Operation cannot be fulfilled: the object has been modified; injected by the fault proxy"
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
              "reason": reason.get(code, "InternalError"), "code": code}  # fmt: skip
    return json.dumps(status).encode()


class FaultProxy:
    """``start()`` serves ``url`` in a thread of its own; ``fail``/``cut_watches`` arm faults."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.url = ""
        self.log = ProxyLog()
        self._faults: list[Fault] = []
        self._watches: set[aiohttp.web.StreamResponse] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: aiohttp.web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- faults ----------------------------------------------------------------------------------------
    def fail(self, method: str, path: str, status: int = 500, count: int = 1) -> Fault:
        fault = Fault(method.upper(), path, status, count)
        with self._lock:
            self._faults.append(fault)
        return fault

    def cut_watches(self) -> int:
        """Close every watch stream open now (as a load balancer or API server restart does)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    async def _cut(self) -> int:
        cut = 0
        for response in list(self._watches):
            if response.task is not None:
                response.task.cancel()
                cut += 1
        self.log.watches_cut += cut
        return cut

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    # -- serving ---------------------------------------------------------------------------------------
    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        path = request.rel_url.path
        fault = self._take_fault(request.method, path)
        if fault is not None:
            self.log.requests.append((request.method, str(request.rel_url), fault.status))
            return aiohttp.web.Response(status=fault.status, body=_status_body(fault.status),
                                        content_type="application/json")  # fmt: skip
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method, f"{self.plane.url}{request.rel_url}", headers=headers, data=body or None,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None), auto_decompress=False,
        ) as upstream:  # fmt: skip
            self.log.requests.append((request.method, str(request.rel_url), upstream.status))
            response = aiohttp.web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_HEADERS:
                    response.headers[key] = value
            is_watch = request.query.get("watch") in ("true", "1")
            await response.prepare(request)
            if is_watch:
                self._watches.add(response)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            finally:
                self._watches.discard(response)
            await response.write_eof()
            return response

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name="fault-proxy",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        if not ready.wait(30) or failure:
            raise RuntimeError(f"the fault proxy did not start: {failure}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        pki_dir = self.plane.pki_dir
        serving = self.plane.ca.issue(
            "fault-proxy", server=True, dns_names=("localhost",), ips=("127.0.0.1",)
        )
        cert, key = serving.write(pki_dir, "fault-proxy")
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)
        client_context = ssl.create_default_context(cadata=self.plane.ca.cert_pem.decode())
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context))
        app = aiohttp.web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"https://{host}:{port}"

    async def _close(self) -> None:
        await self._cut()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
