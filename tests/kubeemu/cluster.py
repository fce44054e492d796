"""EmulatedCluster: the emulated API server on a real port, served from its own thread and event loop."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiohttp.web
import kubernetes.client
import yaml

from tests.kubeemu.rest import RestClient, RestError
from tests.kubeemu.server import ApiServer, RequestRecord

T = TypeVar("T")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TOKEN = "kubeemu-token"  # any bearer token is accepted; some clients refuse to run without credentials


class EmulatedCluster:
    """An in-memory Kubernetes API over real HTTP, served from its own thread and event loop."""

    def __init__(self, *, namespaces: Sequence[str] = ("default",)) -> None:
        self.namespaces = tuple(namespaces)
        self.url = ""
        self._api = ApiServer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: aiohttp.web.BaseRunner | None = None
        self._thread: threading.Thread | None = None
        self._rest: RestClient | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> EmulatedCluster:
        if self._thread is not None:
            raise RuntimeError("the cluster is already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="kubeemu", daemon=True
        )
        self._thread.start()
        if not ready.wait(30) or failure:
            raise RuntimeError(f"the emulated API server did not start: {failure}")
        self._rest = RestClient(self.url, user_agent="kubeemu-cluster/1")
        for namespace in self.namespaces:
            self.rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> EmulatedCluster:
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
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        self._runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self._api), shutdown_timeout=2.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _close(self) -> None:
        self._api.stopping = True
        self._api.wake_watchers()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers for tests -----------------------------------------------------------------------
    @property
    def rest(self) -> RestClient:
        """A plain JSON client for this server (User-Agent ``kubeemu-cluster/1``)."""
        if self._rest is None:
            raise RuntimeError("the cluster is not started")
        return self._rest

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (to touch server state safely) and return its result."""
        if self._loop is None:
            raise RuntimeError("the cluster is not started")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = "default") -> pathlib.Path:
        path = pathlib.Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeemu", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeemu", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "kubeemu",
                    "context": {"cluster": "kubeemu", "user": "kubeemu", "namespace": namespace},
                }
            ],
            "current-context": "kubeemu",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def install_crd(self, crd: dict[str, Any] | str | pathlib.Path) -> None:
        """Create (or replace) CRDs over HTTP; they become discoverable and servable at once.

        ``crd`` is a manifest dict, a YAML string, or a path to a (multi-document) YAML file.
        """
        if isinstance(crd, dict):
            docs = [crd]
        else:
            text = crd.read_text() if isinstance(crd, pathlib.Path) else crd
            docs = [doc for doc in yaml.safe_load_all(text) if doc]
        for doc in docs:
            if doc.get("kind") != "CustomResourceDefinition":
                raise ValueError(f"not a CustomResourceDefinition: {doc.get('kind')!r}")
            try:
                self.rest.request("POST", CRD_PATH, doc)
            except RestError as exc:
                if exc.code != 409:
                    raise
                name = doc["metadata"]["name"]
                current = self.rest.request("GET", f"{CRD_PATH}/{name}")
                replacement = {
                    **doc,
                    "metadata": {
                        **doc["metadata"],
                        "resourceVersion": current["metadata"]["resourceVersion"],
                    },
                }
                self.rest.request("PUT", f"{CRD_PATH}/{name}", replacement)

    def api_client(self) -> kubernetes.client.ApiClient:
        """A kubernetes client configured for this server only (the global default config is untouched)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": TOKEN}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return kubernetes.client.ApiClient(configuration)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What ``GET .../pods/<name>/log`` answers (the container runtime's part; no watch events)."""
        self.call(lambda: self._api.pod_logs.__setitem__((namespace, name), text))

    def pod_log(self, namespace: str, name: str) -> str:
        return self.call(lambda: self._api.pod_logs.get((namespace, name), ""))

    # -- request log -----------------------------------------------------------------------------
    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request handled so far, in order (a snapshot)."""
        return self.call(lambda: list(self._api.request_log))

    def clear_request_log(self) -> None:
        self.call(self._api.request_log.clear)

    def requests_from(self, user_agent_substring: str) -> list[RequestRecord]:
        """The logged requests whose User-Agent contains the substring (e.g. ``kopf/``)."""
        return [r for r in self.request_log if user_agent_substring in r.user_agent]

    @property
    def internal_errors(self) -> list[Exception]:
        """Exceptions the emulator itself raised while serving (each answered with a 500)."""
        return self.call(lambda: list(self._api.internal_errors))
