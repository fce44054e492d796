"""SimulatedKubelet: a Job controller and a kubelet for the emulated cluster, acting only through HTTP.

One background thread reconciles (list jobs and pods, create/delete pods, patch statuses); two watch
threads wake it on every change. Runners (the "containers") run in a worker pool.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.kubeemu import jobs, patches
from tests.kubeemu.cluster import EmulatedCluster
from tests.kubeemu.rest import RestClient, RestError
from tests.kubeemu.selectors import matches, parse_label_selector

Obj = dict[str, Any]
MAX_TERMINATION_MESSAGE = 4096  # bytes the kubelet keeps from terminationMessagePath
FALLBACK_LOG_LINES = 80  # lines of log the kubelet uses with FallbackToLogsOnError
RESYNC_SECONDS = 0.25  # also re-check deadlines this often without any change


@dataclass
class ContainerResult:
    """How a container ends: its exit code, termination message, and optional reason and log text."""

    exit_code: int
    message: str = ""
    reason: str | None = None
    logs: str = ""


def _now() -> str:
    return jobs.format_time(datetime.datetime.now(datetime.UTC))


class SimulatedKubelet:
    """Runs in a background thread; acts ONLY through HTTP (watch/list + patch), never the store directly.

    With ``auto_start_pods`` every new pod is scheduled and started (Running) at once; tests that want
    to hold pods Pending (``set_waiting``, ``set_unschedulable``) should pass ``auto_start_pods=False``
    and may start pods later with :meth:`start_pod`. With a ``runner``, ``runner(pod)`` runs in a worker
    thread once the pod is Running, and its :class:`ContainerResult` (if not None) ends the pod.
    """

    def __init__(
        self,
        cluster: EmulatedCluster,
        *,
        namespace: str | None = None,
        auto_start_pods: bool = True,
        runner: Callable[[Obj], ContainerResult | None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.auto_start_pods = auto_start_pods
        self.runner = runner
        self.errors: list[BaseException] = []
        self._rest = RestClient(cluster.url, user_agent="kubeemu-kubelet/1")
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kubeemu-container")
        self._runs_started: set[str] = set()  # pod uids handed to the runner
        self._pod_ips = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> SimulatedKubelet:
        for target, name in (
            (self._reconcile_loop, "reconcile"),
            (self._watch_loop, "watch-pods"),
            (self._watch_loop, "watch-jobs"),
        ):
            args = () if name == "reconcile" else (name.split("-")[1],)
            thread = threading.Thread(target=target, args=args, name=f"kubeemu-kubelet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._rest.close_streams()
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SimulatedKubelet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- paths -----------------------------------------------------------------------------------
    def _collection(self, group_path: str, plural: str) -> str:
        ns = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{group_path}{ns}/{plural}"

    @staticmethod
    def _pod_path(namespace: str, name: str) -> str:
        return f"/api/v1/namespaces/{namespace}/pods/{name}"

    def _find_pod(self, pod_name: str) -> Obj:
        pods = [p for p in self._list_pods() if p["metadata"]["name"] == pod_name]
        if not pods:
            raise LookupError(f"no pod {pod_name!r}")
        return pods[0]

    def _list_pods(self) -> list[Obj]:
        return self._rest.request("GET", self._collection("/api/v1", "pods"))["items"]

    # -- loops -----------------------------------------------------------------------------------
    def _watch_loop(self, what: str) -> None:
        path = (
            self._collection("/api/v1", "pods")
            if what == "pods"
            else self._collection("/apis/batch/v1", "jobs")
        )
        while not self._stopped.is_set():
            try:
                for _ in self._rest.watch(path, {"timeoutSeconds": "30", "resourceVersion": "0"}):
                    self._wake.set()
                    if self._stopped.is_set():
                        return
            except RestError as exc:
                self.errors.append(exc)
                time.sleep(0.2)

    def _reconcile_loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.reconcile_once()
            except RestError as exc:
                if exc.code == 409:  # acted on a stale view: look again
                    self._wake.set()
                elif not self._stopped.is_set():
                    self.errors.append(exc)
            except OSError as exc:
                if not self._stopped.is_set():
                    self.errors.append(exc)

    def reconcile_once(self) -> None:
        """One pass of the Job controller and the kubelet over everything visible."""
        now = datetime.datetime.now(datetime.UTC)
        pods = self._list_pods()
        for job in self._rest.request("GET", self._collection("/apis/batch/v1", "jobs"))["items"]:
            self._reconcile_job(job, pods, now)
        for pod in pods:
            self._reconcile_pod(pod)

    def _reconcile_job(self, job: Obj, pods: list[Obj], now: datetime.datetime) -> None:
        plan = jobs.plan_job(job, pods, now)
        if plan is None:
            return
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        for pod_name in plan.delete_pods:
            try:
                self._rest.request("DELETE", self._pod_path(namespace, pod_name))
            except RestError as exc:
                if exc.code != 404:
                    raise
        for index in plan.create_indexes:
            self._rest.request("POST", f"/api/v1/namespaces/{namespace}/pods", jobs.pod_manifest(job, index))
        if plan.status != (job.get("status") or {}):
            path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
            self._patch_status(path, plan.status, job["metadata"]["resourceVersion"])

    def _reconcile_pod(self, pod: Obj) -> None:
        status = pod.get("status") or {}
        if pod["metadata"].get("deletionTimestamp"):
            return
        if self.auto_start_pods and status.get("phase") == "Pending" and not status.get("conditions"):
            pod = self._run(pod)
            status = pod["status"]
        uid = pod["metadata"]["uid"]
        if self.runner is not None and status.get("phase") == "Running" and uid not in self._runs_started:
            self._runs_started.add(uid)
            self._pool.submit(self._run_container, pod)

    def _run_container(self, pod: Obj) -> None:
        try:
            result = self.runner(pod) if self.runner is not None else None
        except BaseException as exc:
            self.errors.append(exc)
            result = ContainerResult(exit_code=1, message=f"{type(exc).__name__}: {exc}")
        if result is None or self._stopped.is_set():
            return
        meta = pod["metadata"]
        if result.logs:
            self.cluster.set_pod_log(meta["namespace"], meta["name"], result.logs)
        try:
            self.terminate(
                meta["name"], exit_code=result.exit_code, message=result.message, reason=result.reason
            )
        except (RestError, LookupError) as exc:
            if not self._stopped.is_set():
                self.errors.append(exc)

    def _patch_status(self, path: str, status: Obj, resource_version: str | None = None) -> Obj:
        """A merge patch of the whole status through the /status subresource (409 if the object changed
        since ``resource_version``, when given)."""
        body: Obj = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._rest.request("PATCH", f"{path}/status", body, content_type=patches.MERGE_PATCH)

    def _patch_pod_status(self, pod: Obj, status: Obj, *, guarded: bool = False) -> Obj:
        meta = pod["metadata"]
        path = self._pod_path(meta["namespace"], meta["name"])
        return self._patch_status(path, status, meta["resourceVersion"] if guarded else None)

    # -- kubelet actions (also for tests) --------------------------------------------------------
    def _run(self, pod: Obj) -> Obj:
        """Schedule and start a pod: Running with every container running."""
        now = _now()
        self._pod_ips += 1
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"].get("containers") or []
        ]
        return self._patch_pod_status(
            pod,
            {
                "phase": "Running",
                "conditions": conditions,
                "containerStatuses": containers,
                "startTime": now,
                "podIP": f"10.244.{self._pod_ips // 250}.{self._pod_ips % 250 + 2}",
                "hostIP": "172.18.0.2",
            },
            guarded=True,
        )

    def start_pod(self, pod_name: str) -> None:
        """Schedule and start a pod that is held Pending (``auto_start_pods=False``)."""
        self._run(self._find_pod(pod_name))

    def wait_for_pods(
        self, selector: str, count: int = 1, *, phase: str | None = None, timeout: float = 10
    ) -> list[Obj]:
        """Pods matching a label selector (and phase), once at least ``count`` exist; sorted by name."""
        requirements = parse_label_selector(selector)
        deadline = time.monotonic() + timeout
        while True:
            pods = [
                p
                for p in self._list_pods()
                if matches(p, requirements) and (phase is None or p["status"].get("phase") == phase)
            ]
            if len(pods) >= count:
                return sorted(pods, key=lambda p: p["metadata"]["name"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pods)} of {count} pods match {selector!r} (phase {phase})")
            time.sleep(0.05)

    def terminate(
        self, pod_name: str, *, exit_code: int, message: str = "", reason: str | None = None
    ) -> None:
        """End the pod's containers with an exit code and termination message; phase Succeeded or Failed."""
        pod = self._find_pod(pod_name)
        message = self._termination_message(pod, exit_code, message)
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        self._end(pod, exit_code=exit_code, reason=reason, message=message)

    def evict(self, pod_name: str, *, reason: str = "PreemptionByScheduler") -> None:
        """Like a preemption or eviction: DisruptionTarget condition, containers killed (143), Failed."""
        pod = self._find_pod(pod_name)
        disruption = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": f"{reason}: the pod was disrupted",
            "lastTransitionTime": _now(),
        }
        self._end(pod, exit_code=143, reason="Error", message="", extra_condition=disruption)

    def set_waiting(self, pod_name: str, *, reason: str, message: str) -> None:
        """Scheduled but a container cannot start (e.g. ImagePullBackOff): stays Pending."""
        pod = self._find_pod(pod_name)
        now = _now()
        containers = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
            for c in pod["spec"].get("containers") or []
        ]
        self._patch_pod_status(
            pod,
            {
                "phase": "Pending",
                "containerStatuses": containers,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ContainersNotReady",
                        "lastTransitionTime": now,
                    },
                ],
            },
        )

    def set_unschedulable(self, pod_name: str, *, message: str) -> None:
        """The scheduler cannot place the pod: PodScheduled False, reason Unschedulable."""
        pod = self._find_pod(pod_name)
        self._patch_pod_status(
            pod,
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": _now(),
                    }
                ],
            },
        )

    def _termination_message(self, pod: Obj, exit_code: int, message: str) -> str:
        """What the kubelet reports: the message (capped), or the log tail with FallbackToLogsOnError."""
        containers = pod["spec"].get("containers") or [{}]
        policy = containers[0].get("terminationMessagePolicy", "File")
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            meta = pod["metadata"]
            lines = self.cluster.pod_log(meta["namespace"], meta["name"]).splitlines()
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])
        return message.encode()[:MAX_TERMINATION_MESSAGE].decode(errors="ignore")

    def _end(
        self, pod: Obj, *, exit_code: int, reason: str, message: str, extra_condition: Obj | None = None
    ) -> None:
        now = _now()
        previous = {s["name"]: s for s in pod["status"].get("containerStatuses") or []}
        statuses = []
        for i, container in enumerate(pod["spec"].get("containers") or []):
            started = ((previous.get(container["name"]) or {}).get("state") or {}).get("running", {})
            terminated = {
                "exitCode": exit_code if i == 0 else 0,
                "reason": reason if i == 0 else "Completed",
                "startedAt": started.get("startedAt", now),
                "finishedAt": now,
                "containerID": f"containerd://{pod['metadata']['uid']}-{i}",
            }
            if i == 0 and message:
                terminated["message"] = message
            statuses.append(
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            )
        conditions = [
            c
            for c in pod["status"].get("conditions") or []
            if c["type"] not in ("Ready", "ContainersReady", "DisruptionTarget")
        ]
        conditions += [
            {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
            for t in ("Ready", "ContainersReady")
        ]
        if extra_condition:
            conditions.append(extra_condition)
        self._patch_pod_status(
            pod,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": conditions,
                "containerStatuses": statuses,
            },
        )
