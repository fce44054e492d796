"""ProcessKubelet: the project's kubelet for a real control plane. It registers Nodes and runs the pods
the real scheduler binds to them, as local processes or simulated containers, acting only through the
API server.

One list+watch of pods feeds a worker per pod (like the real kubelet's pod workers); a heartbeat thread
renews the Nodes' Leases; a provisioner makes directory-backed PersistentVolumes. See
tests/cluster/README.md ("The process kubelet") for what it does like a real kubelet and what it does not.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kubernetes

from tests.cluster import podenv, podnet, podstatus, volumes
from tests.cluster.containers import Container, ContainerResult, ProcessContainer, SimulatedContainer
from tests.cluster.nodes import Node, NodeAgent
from tests.cluster.podstatus import ContainerState
from tests.cluster.provisioner import Provisioner, ensure_storage_class
from tests.cluster.rawapi import STRATEGIC_MERGE_PATCH, Api, ApiError, list_watch, path_of

__all__ = ["ContainerResult", "Node", "ProcessKubelet", "ensure_storage_class"]

Obj = dict[str, Any]
Runner = Callable[[Obj], ContainerResult | None]
IMAGE_KINDS = ("process", "simulated")
HEARTBEAT_SECONDS = 10.0
RETRY_SECONDS = 1.0  # a pod that cannot start yet (volume, config) is tried again after this
DEFAULT_GRACE_SECONDS = 30
WAIT_SECONDS = 10.0  # how long terminate() waits for a pod to start and for its status to be posted
DEFAULT_MESSAGE_PATH = "/dev/termination-log"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EVICTION_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 10Mi. "


def pull_error(image: str) -> str:
    """The message of ErrImagePull for an image the kubelet does not have."""
    return (
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
        "not found (the process kubelet runs only the images it was given)"
    )


class ProcessKubelet:
    """A kubelet for ``nodes`` over ``client`` (admin); pods' files live under ``workdir``.

    ``images`` maps an image to "process" (run command+args as a local process) or "simulated" (Running
    until ``runner``'s result, :meth:`terminate` or deletion); any other image fails to pull.
    ``path_prefix`` goes before the system PATH of process containers (e.g. the venv's bin).
    """

    def __init__(
        self,
        client: kubernetes.client.ApiClient,
        workdir: pathlib.Path,
        *,
        nodes: Sequence[Node] = (Node("node-a"),),
        images: Mapping[str, str] = {},
        runner: Runner | None = None,
        path_prefix: Sequence[str] = (),
    ) -> None:
        unknown = {image: kind for image, kind in images.items() if kind not in IMAGE_KINDS}
        if unknown:
            raise ValueError(f"images: kinds must be one of {IMAGE_KINDS}, got {unknown}")
        self.workdir = pathlib.Path(workdir)
        self.nodes = tuple(nodes)
        self.images = dict(images)
        self.runner = runner
        self.path_prefix = tuple(str(p) for p in path_prefix)
        self.errors: list[BaseException] = []
        self._api = Api(client, user_agent="process-kubelet/v1.37.2")
        self._node_names = frozenset(n.name for n in self.nodes)
        self._agent = NodeAgent(self._api, self.nodes)
        self._provisioner = Provisioner(self._api, self.workdir / "pv", self.errors)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}  # pod uid -> worker
        self._pod_dirs: dict[tuple[str, str], pathlib.Path] = {}  # (namespace, name) -> the latest pod's dir
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ProcessKubelet:
        """Register the Nodes, then watch pods, heartbeat and provision until :meth:`stop`."""
        if "process" in self.images.values() and (os.geteuid() != 0 or shutil.which("unshare") is None):
            raise RuntimeError("process containers need root and util-linux unshare(1) (mount namespaces)")
        (self.workdir / "pods").mkdir(parents=True, exist_ok=True)
        self._agent.register()
        self._provisioner.start()
        query = {"fieldSelector": f"spec.nodeName={self.nodes[0].name}"} if len(self.nodes) == 1 else None
        watch = threading.Thread(
            target=list_watch,
            args=(self._api, "/api/v1/pods"),
            kwargs={
                "on_list": self._on_list,
                "on_event": self._on_pod,
                "stop": self._stop,
                "errors": self.errors,
                "query": query,
            },
            name="process-kubelet-pods",
            daemon=True,
        )
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="process-kubelet-heartbeat", daemon=True
        )
        for thread in (watch, heartbeat):
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Kill every container, stop the threads, delete the Nodes and Leases. The Nodes go even when
        an earlier step fails: a Node left Ready (no node-lifecycle controller here) would draw later
        tests' pods to a kubelet that no longer runs."""
        self._stop.set()
        try:
            self._api.close_streams()
            with self._lock:
                workers = list(self._workers.values())
            for worker in workers:
                worker.wake()
            for worker in workers:
                worker.join(5)
            for thread in self._threads:
                thread.join(10)
            self._threads.clear()
            self._provisioner.stop()
        finally:
            try:
                self._agent.remove()
            except (ApiError, OSError) as exc:
                self.errors.append(exc)
            self._api.close()

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- watch ---------------------------------------------------------------------------------------
    def _on_list(self, pods: list[Obj]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod("ADDED", pod)
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in seen]
        for worker in vanished:  # deleted while the watch was down
            self._on_pod("DELETED", worker.pod)

    def _on_pod(self, kind: str, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") not in self._node_names or self._stop.is_set():
            return
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                if kind == "DELETED" or not _needs_worker(pod):
                    return
                worker = _PodWorker(self, pod)
                self._workers[uid] = worker
                self._pod_dirs[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = worker.directory
                worker.start()
            worker.update(pod, deleted=kind == "DELETED")

    def heartbeat(self) -> None:
        """Renew the Nodes' Leases and Ready heartbeats now (a deleted Node is registered again); the
        kubelet also does this every 10 s."""
        self._agent.heartbeat()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except (ApiError, OSError) as exc:
                if not self._stop.is_set():
                    self.errors.append(exc)

    def _worker_done(self, worker: _PodWorker) -> bool:
        """Called by a worker with nothing left to do: it goes unless an update came meanwhile."""
        with self._lock:
            if worker.dirty and not self._stop.is_set():
                return False
            self._workers.pop(worker.uid, None)
            return True

    # -- for tests -----------------------------------------------------------------------------------
    def _list_pods(self, namespace: str | None, query: dict[str, str]) -> list[Obj]:
        path = path_of("api", "v1", "namespaces", namespace, "pods") if namespace else "/api/v1/pods"
        return self._api.request("GET", path, query=query).get("items") or []

    def wait_for_pods(
        self,
        selector: str,
        count: int = 1,
        *,
        phase: str | None = None,
        namespace: str | None = None,
        timeout: float = 10,
    ) -> list[Obj]:
        """At least ``count`` pods matching the label ``selector`` (and ``phase``), sorted by name."""
        query = {"labelSelector": selector}
        if phase:
            query["fieldSelector"] = f"status.phase={phase}"
        deadline = time.monotonic() + timeout
        while True:
            pods = self._list_pods(namespace, query)
            if len(pods) >= count:
                return sorted(pods, key=lambda p: p["metadata"]["name"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pods)} of {count} pods match {selector!r} (phase {phase})")
            time.sleep(0.1)

    def _worker(self, pod_name: str, namespace: str | None, *, timeout: float = WAIT_SECONDS) -> _PodWorker:
        """The worker of this kubelet's pod ``pod_name`` (waiting for the scheduler to bind it here)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [
                    w
                    for w in self._workers.values()
                    if w.name == pod_name and (namespace is None or w.namespace == namespace)
                ]
            if len(found) > 1:
                raise LookupError(f"pod {pod_name!r} is in several namespaces: pass namespace=")
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise LookupError(f"no running pod {pod_name!r} on this kubelet's nodes")
            time.sleep(0.05)

    def terminate(
        self,
        pod_name: str,
        *,
        exit_code: int,
        message: str = "",
        reason: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """End a pod's simulated containers (the first with this result, others with 0); returns once
        the terminated status is posted."""
        worker = self._worker(pod_name, namespace)
        worker.finish_simulated(ContainerResult(exit_code=exit_code, message=message, reason=reason))

    def evict(
        self,
        pod_name: str,
        *,
        namespace: str | None = None,
        via_api: bool = True,
        reason: str | None = None,
    ) -> None:
        """Evict a pod. ``via_api``: POST pods/eviction (the API server adds DisruptionTarget
        EvictionByEvictionAPI and deletes the pod gracefully; a PodDisruptionBudget may refuse: ApiError
        429). Else as the kubelet under node pressure: DisruptionTarget (``reason``, default
        TerminationByKubelet), SIGTERM, the grace period, SIGKILL, phase Failed with reason Evicted; the
        pod is not deleted. Returns once the eviction has begun."""
        if via_api:
            pods = self._list_pods(namespace, {"fieldSelector": f"metadata.name={pod_name}"})
            if len(pods) != 1:
                raise LookupError(f"{len(pods)} pods named {pod_name!r} (namespace {namespace})")
            ns = pods[0]["metadata"]["namespace"]
            body = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod_name, "namespace": ns},
            }
            self._api.request(
                "POST", path_of("api", "v1", "namespaces", ns, "pods", pod_name, "eviction"), body
            )
            return
        self._worker(pod_name, namespace).evict(reason or "TerminationByKubelet", EVICTION_MESSAGE)

    def logs(self, pod_name: str, namespace: str | None = None, container: str | None = None) -> str:
        """What the pod's container (the first, unless named) wrote to stdout and stderr."""
        dirs = [d for (ns, name), d in self._pod_dirs.items() if name == pod_name and namespace in (None, ns)]
        if len(dirs) != 1:
            raise LookupError(f"{len(dirs)} pods named {pod_name!r} ran here (namespace {namespace})")
        logs = sorted((dirs[0] / "logs").glob("*.log"))
        if container is not None:
            logs = [p for p in logs if p.stem == container]
        return logs[0].read_text(errors="replace") if logs else ""

    # -- for workers ---------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def api(self) -> Api:
        return self._api

    def base_env(self, hostname: str) -> dict[str, str]:
        """The environment of an "image": PATH (path_prefix first), HOME, HOSTNAME, and the API server as
        the ``kubernetes`` Service's variables (in-cluster clients reach the real server on loopback)."""
        url = urllib.parse.urlsplit(self._api.host)
        port = str(url.port or 443)
        return {
            "PATH": ":".join((*self.path_prefix, SYSTEM_PATH)),
            "HOME": "/root",
            "HOSTNAME": hostname,
            "KUBERNETES_SERVICE_HOST": url.hostname or podnet.HOST_IP,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{url.hostname}:{port}",
        }

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def run_simulated(self, worker: _PodWorker) -> None:
        """Hand a started pod to ``runner`` in a thread of its own; its result ends the containers."""
        if self.runner is None:
            return
        runner, pod = self.runner, worker.pod

        def run() -> None:
            try:
                result = runner(pod)
            except Exception as exc:
                self.errors.append(exc)
                result = ContainerResult(exit_code=1, message=f"{type(exc).__name__}: {exc}")
            if result is not None and not self._stop.is_set():
                worker.finish_simulated(result, wait=False)

        threading.Thread(target=run, name=f"runner-{worker.name}", daemon=True).start()


def _needs_worker(pod: Obj) -> bool:
    """A pod this kubelet has to act on: not yet terminal, or terminal but still to be deleted by it."""
    meta, status = pod["metadata"], pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return True
    return bool(meta.get("deletionTimestamp")) and meta.get("deletionGracePeriodSeconds") != 0


class _PodWorker:
    """Everything this kubelet does for one pod, in one thread: start, report, stop, delete."""

    def __init__(self, kubelet: ProcessKubelet, pod: Obj) -> None:
        meta = pod["metadata"]
        self.kubelet = kubelet
        self.pod = pod
        self.uid, self.name, self.namespace = meta["uid"], meta["name"], meta["namespace"]
        self.directory = kubelet.workdir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.pod_ip = podnet.pod_address(pod)
        self.dirty = False
        self.deleted = False
        self.final = threading.Event()  # the terminal status is posted
        self.started = threading.Event()  # the containers exist
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}
        self._states: list[ContainerState] = []  # as last reported
        self._start_time = podstatus.now()
        self._retry_at: float | None = None
        self._pull_failed = False
        self._eviction: tuple[str, str] | None = None
        self._delete_sent = False
        self._thread = threading.Thread(target=self._loop, name=f"pod-{self.name}", daemon=True)

    # -- thread --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def update(self, pod: Obj, *, deleted: bool) -> None:
        """A newer version of the pod (called under the kubelet's lock)."""
        self.pod = pod
        self.deleted = self.deleted or deleted
        self.dirty = True
        self._wake.set()

    def _loop(self) -> None:
        while True:
            timeout = None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._retry_at = None  # due: this pass is the retry (no waiting on a past time again)
            if self.kubelet.stopping:
                self._kill_all()
                return
            with self.kubelet._lock:
                self.dirty = False
            try:
                finished = self._sync()
            except Exception as exc:  # recorded for the test; the pod is tried again
                if self.kubelet.stopping:
                    return
                self.kubelet.errors.append(exc)
                finished = False
                self._retry_at = time.monotonic() + RETRY_SECONDS
            if finished and self.kubelet._worker_done(self):
                return

    # -- decisions -----------------------------------------------------------------------------------
    def _sync(self) -> bool:
        """One look at the pod; True when nothing is left to do."""
        pod, meta = self.pod, self.pod["metadata"]
        if self.deleted:  # gone from the API (force-deleted, or after this kubelet's final DELETE)
            self._kill_all()
            self._clean_up()
            return True
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if meta.get("deletionTimestamp"):
            if self._containers:
                grace = meta.get("deletionGracePeriodSeconds")
                self._stop_containers(DEFAULT_GRACE_SECONDS if grace is None else int(grace))
                self._report(final=True)
            elif _ran_before(pod) and not terminal:
                self._report_lost()
            elif not terminal:  # never started (e.g. ImagePullBackOff): Failed, its containers still waiting
                self._report(final=True)
            self._delete()
            self._clean_up()
            return True
        if self._eviction is not None:
            _, message = self._eviction
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            self._stop_containers(DEFAULT_GRACE_SECONDS if grace is None else int(grace))
            self._report(final=True, reason="Evicted", message=message)
            return True
        if not self._containers:
            if terminal:
                return True  # ended before this kubelet knew it
            if _ran_before(pod):
                self._report_lost()
                return True
            if not self._try_start():
                return False
        self._report()
        return self.final.is_set()

    def _try_start(self) -> bool:
        """Create the containers; False (with waiting states reported) when they cannot start yet."""
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return False
        self._retry_at = None
        containers = (self.pod.get("spec") or {}).get("containers") or []
        bad = [c for c in containers if self.kubelet.images.get(c.get("image", "")) not in IMAGE_KINDS]
        if bad:
            if self._pull_failed:
                reason, message = (
                    "ImagePullBackOff",
                    lambda c: (
                        f'Back-off pulling image "{c["image"]}": ErrImagePull: {pull_error(c["image"])}'
                    ),
                )
            else:
                reason, message = "ErrImagePull", lambda c: pull_error(c["image"])
            self._wait_state(bad, reason, message, backoff=not self._pull_failed)
            self._pull_failed = True
            return False
        try:
            created = self._create(containers)
        except (
            volumes.VolumeNotReady,
            podenv.ContainerConfigError,
            podenv.ContainerCreateError,
            volumes.VolumeUnsupported,
            ValueError,
        ) as exc:
            text = str(exc)
            self._wait_state(containers, _waiting_reason(exc), lambda c: text, backoff=True)
            return False
        self._containers = created
        self.started.set()
        self._report()
        self.kubelet.run_simulated(self)
        return True

    def _wait_state(
        self, containers: list[Obj], reason: str, message: Callable[[Obj], str], *, backoff: bool
    ) -> None:
        states = [
            ContainerState(
                c["name"],
                c.get("image", ""),
                waiting_reason=reason if c in containers else None,
                message=message(c) if c in containers else "",
            )
            for c in (self.pod.get("spec") or {}).get("containers") or []
        ]
        if states != self._states:
            self._post(states, sandbox_ready=reason != "ContainerCreating")
        if backoff:
            self._retry_at = time.monotonic() + RETRY_SECONDS

    # -- containers ----------------------------------------------------------------------------------
    def _create(self, specs: list[Obj]) -> dict[str, Container]:
        """Set up volumes, hosts file and environments, then start every container."""
        pod, kubelet = self.pod, self.kubelet
        spec = pod.get("spec") or {}
        ctx = volumes.PodContext(self.directory, self._fetch, self._token, self.pod_ip, podnet.HOST_IP)
        paths = volumes.prepare_volumes(pod, ctx)
        hostname = podnet.pod_hostname(pod)
        hosts = self.directory / "hosts"
        hosts.write_text(podnet.render_hosts(podnet.host_entries(pod, self.pod_ip, self._peers())))
        (self.directory / "hostname").write_text(hostname + "\n")
        allocatable = kubelet.node(spec["nodeName"]).resources()
        plans = []
        for container in specs:  # everything resolved before anything starts
            env = podenv.container_env(
                pod,
                container,
                lookup=lambda kind, name: self._fetch(kind, self.namespace, name),
                pod_ip=self.pod_ip,
                host_ip=podnet.HOST_IP,
                base=kubelet.base_env(hostname),
                node_allocatable=allocatable,
            )
            kind = kubelet.images[container["image"]]
            argv = podenv.command_line(container, env) if kind == "process" else []
            plans.append((container, kind, env, argv))
        created: dict[str, Container] = {}
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        for container, kind, env, argv in plans:
            name = container["name"]
            log = self.directory / "logs" / f"{name}.log"
            if kind == "simulated":
                created[name] = SimulatedContainer(name, log, self.wake)
                continue
            mounts = volumes.container_mounts(pod, container, paths)
            mounts += [
                {"source": str(hosts), "target": "/etc/hosts"},
                {"source": str(self.directory / "hostname"), "target": "/etc/hostname", "optional": True},
            ]
            created[name] = ProcessContainer(
                name=name,
                argv=argv,
                env=env,
                mounts=mounts,
                hostname=hostname,
                cwd=container.get("workingDir") or str(_made(self.directory / "work" / name)),
                message_path=container.get("terminationMessagePath") or DEFAULT_MESSAGE_PATH,
                directory=self.directory / "containers" / name,
                log_path=log,
                on_exit=self.wake,
            )
        return created

    def _fetch(self, kind: str, namespace: str, name: str) -> Obj | None:
        plural = {
            "ConfigMap": "configmaps",
            "Secret": "secrets",
            "PersistentVolumeClaim": "persistentvolumeclaims",
            "PersistentVolume": "persistentvolumes",
            "Service": "services",
        }[kind]
        path = (
            path_of("api", "v1", plural, name)
            if kind == "PersistentVolume"
            else path_of("api", "v1", "namespaces", namespace, plural, name)
        )
        try:
            return self.kubelet.api.request("GET", path)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def _token(self, account: str, audience: str, seconds: int) -> str:
        """A token for the pod's service account bound to the pod (TokenRequest, as the kubelet asks)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        path = path_of("api", "v1", "namespaces", self.namespace, "serviceaccounts", account, "token")
        try:
            return self.kubelet.api.request("POST", path, body)["status"]["token"]
        except ApiError as exc:
            if exc.code == 404:
                raise volumes.VolumeNotReady(f'serviceaccount "{account}" not found') from None
            raise

    def _peers(self) -> list[str]:
        """Hostnames of the pod's peers under its subdomain: every index of its Indexed Job, when the
        headless Service named like the subdomain exists (which the cluster DNS would need too)."""
        spec = self.pod.get("spec") or {}
        subdomain = spec.get("subdomain")
        if not subdomain:
            return []
        service = self._fetch("Service", self.namespace, subdomain)
        if service is None or (service.get("spec") or {}).get("clusterIP") != "None":
            return []
        owner = next(
            (
                r
                for r in self.pod["metadata"].get("ownerReferences") or []
                if r.get("kind") == "Job" and r.get("controller")
            ),
            None,
        )
        if owner is None:
            return []
        try:
            job = self.kubelet.api.request(
                "GET", path_of("apis", "batch", "v1", "namespaces", self.namespace, "jobs", owner["name"])
            )
        except ApiError as exc:
            if exc.code == 404:
                return []
            raise
        return podnet.indexed_hostnames(job)

    def _stop_containers(self, grace: int) -> None:
        """SIGTERM every container, wait up to ``grace`` seconds (less if the pod is force-deleted or the
        kubelet stops), then SIGKILL what is left and wait for it."""
        running = [c for c in self._containers.values() if not c.done.is_set()]
        for container in running:
            container.terminate()
        deadline = time.monotonic() + grace
        while any(not c.done.is_set() for c in running):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.deleted or self.kubelet.stopping:
                break
            self._wake.wait(remaining)
            self._wake.clear()
        self._kill_all()

    def _kill_all(self) -> None:
        for container in self._containers.values():
            container.kill()
        for container in self._containers.values():
            container.done.wait(10)

    def _clean_up(self) -> None:
        """The pod is gone: its own volumes go (logs stay for :meth:`ProcessKubelet.logs`)."""
        shutil.rmtree(self.directory / "volumes", ignore_errors=True)

    def finish_simulated(self, result: ContainerResult, *, wait: bool = True) -> None:
        """End the simulated containers: the first with ``result``, the others with exit code 0."""
        if not self.started.wait(WAIT_SECONDS):
            raise TimeoutError(f"pod {self.name}: its containers did not start within {WAIT_SECONDS} s")
        simulated = [c for c in self._containers.values() if isinstance(c, SimulatedContainer)]
        if not simulated:
            raise ValueError(f"pod {self.name} has no simulated container")
        simulated[0].finish(result)
        for other in simulated[1:]:
            other.finish(ContainerResult(exit_code=0))
        if (
            wait
            and not self.final.wait(WAIT_SECONDS)
            and all(c.done.is_set() for c in self._containers.values())
        ):
            raise TimeoutError(
                f"pod {self.name}: its terminated status was not posted within {WAIT_SECONDS} s"
            )

    def evict(self, reason: str, message: str) -> None:
        """Node-pressure eviction: the DisruptionTarget condition now, the rest in the worker."""
        condition = podstatus.disruption_condition(reason, message)
        self.kubelet.api.request(
            "PATCH",
            path_of("api", "v1", "namespaces", self.namespace, "pods", self.name, "status"),
            {"status": {"conditions": [condition]}},
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._eviction = (reason, message)
        self.wake()

    # -- status --------------------------------------------------------------------------------------
    def _states_now(self) -> list[ContainerState]:
        out = []
        for spec in (self.pod.get("spec") or {}).get("containers") or []:
            container = self._containers.get(spec["name"])
            image = spec.get("image", "")
            if container is None:
                out.append(ContainerState(spec["name"], image, waiting_reason="ContainerCreating"))
                continue
            container_id = f"process://{self.uid}/{spec['name']}"
            end = container.exit
            if end is None:
                out.append(
                    ContainerState(
                        spec["name"], image, started_at=container.started_at, container_id=container_id
                    )
                )
                continue
            message = podstatus.termination_message(
                end.message,
                exit_code=end.exit_code,
                policy=spec.get("terminationMessagePolicy") or "File",
                log_text=container.log_path.read_text(errors="replace")
                if container.log_path.exists()
                else "",
                cannot_run=end.cannot_run,
            )
            out.append(
                ContainerState(
                    spec["name"],
                    image,
                    started_at=container.started_at,
                    exit_code=end.exit_code,
                    reason=end.reason,
                    message=message,
                    finished_at=end.finished_at,
                    container_id=container_id,
                )
            )
        return out

    def _report(self, *, final: bool = False, reason: str | None = None, message: str | None = None) -> None:
        """Post the containers' states when they changed; ``final``: the pod has ended (containers not
        started count as failed)."""
        if self.final.is_set():
            return
        states = self._states_now()
        if final and any(s.running for s in states):
            raise RuntimeError(f"pod {self.name}: a container still runs after it was killed")
        if states == self._states and not final and reason is None:
            return
        terminal = bool(states) and all(s.terminated for s in states)
        self._post(
            states,
            sandbox_ready=bool(self._containers),
            final=final or terminal,
            reason=reason,
            message=message,
        )

    def _report_lost(self) -> None:
        """The pod ran under an earlier kubelet: its containers are lost (137, ContainerStatusUnknown)."""
        at = podstatus.now()
        states = [
            ContainerState(
                c["name"],
                c.get("image", ""),
                started_at=at,
                exit_code=137,
                reason="ContainerStatusUnknown",
                message="The container could not be located when the pod was terminated",
                finished_at=at,
            )
            for c in (self.pod.get("spec") or {}).get("containers") or []
        ]
        self._post(states, sandbox_ready=True, final=True)

    def _post(
        self,
        states: list[ContainerState],
        *,
        sandbox_ready: bool,
        final: bool = False,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        patch = podstatus.status_patch(
            self.pod,
            states,
            pod_ip=self.pod_ip,
            host_ip=podnet.HOST_IP,
            sandbox_ready=sandbox_ready,
            started=self._start_time,
            reason=reason,
            message=message,
        )
        if reason == "Evicted" or (final and patch["status"]["phase"] not in ("Succeeded", "Failed")):
            patch["status"]["phase"] = "Failed"  # evicted, or deleted before every container ended
        path = path_of("api", "v1", "namespaces", self.namespace, "pods", self.name, "status")
        try:
            updated = self.kubelet.api.request("PATCH", path, patch, content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            if exc.code != 404:
                raise
            self.deleted = True
            return
        with self.kubelet._lock:  # keep the newer of the answer and what the watch brought meanwhile
            if _version(updated) > _version(self.pod):
                self.pod = updated
        self._states = states
        if patch["status"]["phase"] in ("Succeeded", "Failed"):
            self.final.set()

    def _delete(self) -> None:
        """Remove the pod for good once it has ended (gracePeriodSeconds 0, only this uid)."""
        if self._delete_sent:
            return
        self._delete_sent = True
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        with contextlib.suppress(ApiError):  # 404 (gone) or 409 (another pod by now): nothing to do
            self.kubelet.api.request(
                "DELETE", path_of("api", "v1", "namespaces", self.namespace, "pods", self.name), body
            )


def _made(directory: pathlib.Path) -> pathlib.Path:
    """``directory``, created (the kubelet's own directories exist before a container starts)."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _waiting_reason(exc: Exception) -> str:
    """The waiting reason a container shows while it cannot be created for ``exc``."""
    if isinstance(exc, volumes.VolumeNotReady):
        return "ContainerCreating"
    if isinstance(exc, podenv.ContainerConfigError):
        return "CreateContainerConfigError"
    return "CreateContainerError"


def _version(obj: Obj) -> int:
    """resourceVersion as a number (etcd's revision; opaque in general, so -1 when it is not one)."""
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return -1


def _ran_before(pod: Obj) -> bool:
    """The pod's status says containers started (under an earlier kubelet)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if "running" in state or "terminated" in state:
            return True
    return False
