"""Run the real operator (kopf + handlers) in a thread against the real API server, as the chart's
ServiceAccount (its token and RBAC), watching only the test's namespace."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
import kubernetes

from tests.cluster.fixtures import OperatorIdentity
from tests.cluster.kubelet import ProcessKubelet
from tunix_operator.handlers import build_registry
from tunix_operator.kube import KubeClient
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler
from tunix_operator.settings import OperatorSettings

T = TypeVar("T")
GROUP, VERSION, PLURAL = "tunix.dev", "v1alpha1", "tunixruns"
OPERATOR_USER_AGENT = "tunix-operator-test/1"  # the reconciler's client's User-Agent


def fast_settings(artifacts_base_uri: str, **overrides: Any) -> OperatorSettings:
    """Fast timings for tests."""
    values: dict[str, Any] = {
        "artifacts_base_uri": artifacts_base_uri,
        "default_image": "tunix/trainer:test",
        "progress_interval_seconds": 0.3,
        "max_progress_reads_per_second": 1000.0,  # every run read at the interval
        "resync_interval_seconds": 1.0,
        "restart_settle_seconds": 0.2,
        "metrics_port": 0,
        "liveness_endpoint": None,
    }
    values.update(overrides)
    return OperatorSettings(**values)


class OperatorThread:
    """``kopf.operator`` with the project's registry, in its own thread and event loop.

    Like ``tunix-operator``, it serves ``settings.watch_namespaces`` (empty: cluster-wide) and peers
    unless ``settings.standalone``. Both kopf and the reconciler authenticate as ``identity`` (the
    chart's ServiceAccount); the reconciler's User-Agent is :data:`OPERATOR_USER_AGENT`.
    """

    def __init__(self, identity: OperatorIdentity, settings: OperatorSettings) -> None:
        self.identity = identity
        self.settings = settings
        api_client = identity.api_client()
        self.server = api_client.configuration.host
        self.ca_path = api_client.configuration.ssl_ca_cert
        api_client.user_agent = OPERATOR_USER_AGENT
        self.metrics = OperatorMetrics()
        self.reconciler = Reconciler(KubeClient(api_client), settings)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=self.server, ca_path=self.ca_path, token=self.identity.token, default_namespace="default"
        )

    def _main(self) -> None:
        registry = build_registry(self.reconciler, self.settings, self.metrics, login=self._login)
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    standalone=self.settings.standalone,
                    peering_name=self.settings.peering_name,
                    clusterwide=not self.settings.watch_namespaces,
                    namespaces=list(self.settings.watch_namespaces),
                    ready_flag=self._ready,
                    stop_flag=self._stop,
                )
            )
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def start(self) -> OperatorThread:
        self._thread = threading.Thread(target=self._main, name="tunix-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.error:
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the operator did not stop"
            self._thread = None

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(fn: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; its last value is in the error otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (kubernetes.client.ApiException, LookupError, KeyError) as exc:
            last = exc  # an exception is truthy: it is kept for the error, never returned
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or fn}: last value {last!r}")


def run_manifest(name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {
        "dataset": {"uri": "data/golden/golden.jsonl"},
        "training": {"steps": 20, "batchSize": 4, "seqLen": 32},
        "retryPolicy": {"maxRestarts": 1, "backoffSeconds": 0, "maxPreemptions": 3},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TunixRun",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": body,
    }


# -- the tests' view of the API ------------------------------------------------------------
class Api:
    """The tests' view of the cluster: runs, Jobs and events in one namespace."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.core = kubernetes.client.CoreV1Api(client)

    def create_run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, manifest)

    def run(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.run(name).get("status") or {}

    def delete_run(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def run_gone(self, name: str) -> bool:
        try:
            self.run(name)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec})

    def jobs(self, name: str) -> list[str]:
        items = self.batch.list_namespaced_job(self.ns, label_selector=f"tunix.dev/run={name}").items
        return sorted(j.metadata.name for j in items if not j.metadata.deletion_timestamp)

    def job(self, name: str) -> dict[str, Any]:
        job = self.batch.read_namespaced_job(name, self.ns)
        return self.batch.api_client.sanitize_for_serialization(job)

    def events(self, name: str) -> list[tuple[str, str]]:
        items = self.core.list_namespaced_event(self.ns).items
        return [(e.type, e.reason) for e in items if e.involved_object.name == name]


def phase_is(k8s: Api, name: str, phase: str, attempt: int | None = None) -> Callable[[], bool]:
    """A wait condition: the run is in ``phase`` (at ``attempt``, when given)."""

    def reached() -> bool:
        status = k8s.status(name)
        return status.get("phase") == phase and (attempt is None or status.get("attempt") == attempt)

    return reached


def pod_of(
    kubelet: ProcessKubelet, name: str, attempt: int, phase: str | None = "Running", timeout: float = 20
) -> dict[str, Any]:
    selector = f"tunix.dev/run={name},tunix.dev/attempt={attempt}"
    return kubelet.wait_for_pods(selector, phase=phase, timeout=timeout)[0]
