#!/usr/bin/env python3
"""The operator at scale, on the real control plane (tests/cluster), with simulated trainer pods.

Starts etcd + kube-apiserver + kube-controller-manager (without the Job controller: this script plays
it and the kubelet, creating each Job's pod itself and setting its status) and a local S3 (moto, its own
process), then ``python -m tunix_operator`` as its own process (logged in as its own ServiceAccount, so
the API server's audit log counts its requests exactly; its CPU and peak RSS read from /proc). Phases:

1. idle: ``--idle-runs`` runs created one by one: create -> Job latency (the Job's ADDED watch event);
2. burst: ``--runs`` runs created at once (``--clients`` threads): time until every Job exists;
3. Running at rest: every pod Running; ``--rest-seconds`` of operator requests, CPU, reconciles;
4. finish: every pod exits 0 with a summary; API requests per lifecycle (no progress patches);
5. finished at rest: requests, CPU and reconciles over ``--rest-seconds``;
6. S3: ``--s3-runs`` Running runs whose progress.json lives on S3 and is rewritten every
   ``--progress-interval`` seconds (the operator polls at the same interval, or less often beyond
   what ``--reads-per-second``, its read budget, allows): operator CPU, reads.

Each phase also reports the CPU the rest of the machine spent meanwhile (``others_cpu_seconds``).

``--s3-only`` runs phase 6 alone. ``reconciles_unchanged`` counts the polls and reconciles that found a
quiet run as its last decision left it (``tunix_reconciles_unchanged_total``).

Prints one JSON document (and writes it to ``--out``). CPU seconds and request counts are the figures
to compare; wall times are given with the load average of the machine during each phase.

    .venv/bin/python tools/bench_operator.py --runs 200 --rest-seconds 60 --s3-runs 100
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from tests.cluster.controlplane import CONTROLLERS, ControlPlane  # noqa: E402
from tests.cluster.fixtures import CRDS_DIR  # noqa: E402

GROUP, VERSION, PLURAL = "tunix.dev", "v1alpha1", "tunixruns"
NAMESPACE = "bench"
OPERATOR_USER = "tunix-bench-operator"
BUCKET = "bench"
NODE = "bench-node"
SUMMARY = {"finalLoss": 1.5, "totalSteps": 20, "provenance": {"jax": "bench"}}
# The Job controller is this script; the pod GC would delete pods bound to the (absent) node.
BENCH_CONTROLLERS = tuple(
    c
    for c in CONTROLLERS
    if c not in ("job-controller", "pod-garbage-collector-controller", "ttl-after-finished-controller")
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# moto's server (werkzeug) closes every connection, so each of the operator's S3 reads would pay a new
# TCP connection, which S3 does not make it pay. With --s3-keep-alive the operator reads through this
# proxy (its own process): HTTP/1.1 keep-alive on the operator's side, a connection per request to moto.
KEEP_ALIVE_PROXY = """
import http.client, http.server, sys
UPSTREAM = int(sys.argv[2])
class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=30)
        conn.request("GET", self.path, headers=dict(self.headers))
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if resp.status != 304:
            self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy).serve_forever()
"""


# ---- measuring -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds of a process (or of its thread ``tid``)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = pathlib.Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """The operator's Prometheus metrics (name{labels} -> value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_for_metrics(process: subprocess.Popen[bytes], port: int, hint: str, timeout: float = 60) -> None:
    """Until the operator ``process`` serves its metrics on ``port`` (RuntimeError if it exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape(port)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start: {hint}") from None
            time.sleep(0.3)


def start_operator(
    plane: ControlPlane,
    workdir: pathlib.Path,
    *,
    name: str,
    user: str,
    namespace: str,
    metrics_port: int,
    env: dict[str, str],
    checkout: str | None = None,
    python_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m tunix_operator`` as its own process, watching ``namespace``, once it serves its
    metrics. It logs in as the ServiceAccount ``user`` of ``namespace`` with a bound token, as an
    operator in a cluster does (the audit log tells its requests apart: :func:`operator_username`);
    ``checkout``: another checkout's operator, first on the path (e.g. a baseline); ``env`` is added to
    the environment. Writes ``<name>.kubeconfig``, ``<name>.log`` and ``<name>-artifacts/`` under
    ``workdir``."""
    kubeconfig = plane.kubeconfig_for(
        workdir / f"{name}.kubeconfig",
        token=service_account_token(plane, namespace, user),
        user=user,
        namespace=namespace,
    )
    artifacts = workdir / f"{name}-artifacts"
    artifacts.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "TUNIX_ARTIFACTS_BASE_URI": artifacts.as_uri(),
        "TUNIX_LOG_FORMAT": "text",
        "TUNIX_LOG_LEVEL": "WARNING",
        **env,
    }
    if checkout:
        paths = [str(pathlib.Path(checkout) / d) for d in ("operator", "api")]
        environment["PYTHONPATH"] = os.pathsep.join([*paths, environment.get("PYTHONPATH", "")])
    log_path = workdir / f"{name}.log"
    command = [sys.executable, *(python_args or []), "-m", "tunix_operator", "--kubeconfig", str(kubeconfig),
               "--standalone", "-n", namespace, "--metrics-port", str(metrics_port),
               "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO)
    wait_for_metrics(process, metrics_port, f"see {log_path}")
    return process


def service_account_token(plane: ControlPlane, namespace: str, name: str) -> str:
    """A day's token of a new ServiceAccount ``name`` bound to ``cluster-admin`` (RBAC is evaluated for
    each of its requests, and its token checked, as for an operator's pod; a ``system:masters`` client
    certificate would skip the one and cost a certificate chain check per request instead)."""
    client = plane.api_client()
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
    kubernetes.client.RbacAuthorizationV1Api(client).create_cluster_role_binding(
        {
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": role,
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
    )
    request = {"spec": {"expirationSeconds": 86_400}}
    return core.create_namespaced_service_account_token(name, namespace, request).status.token


def operator_username(namespace: str, name: str) -> str:
    """The audit log's user of the operator that :func:`start_operator` started."""
    return f"system:serviceaccount:{namespace}:{name}"


def reconcile_count(metrics: dict[str, float]) -> float:
    return metrics.get("tunix_reconcile_duration_seconds_count", 0.0)


def unchanged_count(metrics: dict[str, float]) -> float:
    return metrics.get("tunix_reconciles_unchanged_total", 0.0)


def storage_reads(metrics: dict[str, float]) -> dict[str, float]:
    pattern = re.compile(r'tunix_storage_reads_total\{result="(\w+)"\}')
    return {m.group(1): v for k, v in metrics.items() if (m := pattern.fullmatch(k))}


class Window:
    """Operator CPU, API requests (audit log), reconciles and storage reads over one phase."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.offset = bench.plane.audit_offset()
        self.cpu = cpu_seconds(bench.operator.pid)
        self.main_cpu = cpu_seconds(bench.operator.pid, bench.operator.pid)  # kopf's event loop
        self.metrics = scrape(bench.metrics_port)
        self.others = others_cpu_seconds(bench)
        self.wall = time.monotonic()
        self.load_before = os.getloadavg()[0]

    def close(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        cpu = cpu_seconds(self.bench.operator.pid) - self.cpu
        main = cpu_seconds(self.bench.operator.pid, self.bench.operator.pid) - self.main_cpu
        metrics = scrape(self.bench.metrics_port)
        requests = self.bench.requests(self.offset)
        others = others_cpu_seconds(self.bench)
        before, after = storage_reads(self.metrics), storage_reads(metrics)
        reads = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        return {
            "wall_seconds": round(wall, 2),
            "operator_cpu_seconds": round(cpu, 3),
            "operator_cores": round(cpu / wall, 4) if wall else None,
            # The event loop (kopf: watches, events, indices, posting) apart from the worker threads
            # (reconciles: the kubernetes client's requests, storage reads).
            "operator_main_thread_cpu_seconds": round(main, 3),
            "api_requests": sum(requests.values()),
            "api_requests_per_second": round(sum(requests.values()) / wall, 3) if wall else None,
            "api_requests_by_verb": dict(sorted(requests.items())),
            "reconciles": (done := reconcile_count(metrics) - reconcile_count(self.metrics)),
            "operator_cpu_ms_per_reconcile": round(1000 * cpu / done, 2) if done else None,
            # Of them, found as the last quiet decision left them (not decided again).
            "reconciles_unchanged": unchanged_count(metrics) - unchanged_count(self.metrics),
            "storage_reads": reads,
            "load_average_1m": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
            # What the rest of the machine spent meanwhile: the control plane, S3, this script.
            "others_cpu_seconds": {k: round(v - self.others.get(k, 0.0), 3) for k, v in others.items()},
        }


def others_cpu_seconds(bench: Bench) -> dict[str, float]:
    """CPU seconds so far of the control plane's processes, moto and its proxy, and this script (the
    simulated Job controller and kubelet, the clients creating runs)."""
    processes = {c.name: c.process for c in bench.plane.components if c.process is not None}
    processes |= {n: p for n in ("moto", "proxy") if (p := getattr(bench, n, None)) is not None}
    cpu = {name: cpu_seconds(p.pid) for name, p in processes.items() if p.poll() is None}
    return cpu | {"bench": time.process_time()}


# ---- the cluster side ----------------------------------------------------------------------------


class JobWatch:
    """When each Job of the namespace was first seen (the ADDED event of a watch)."""

    def __init__(self, batch: kubernetes.client.BatchV1Api, namespace: str = NAMESPACE) -> None:
        self.batch = batch
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _watch(self) -> None:
        version = self._list()
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            self._ready.set()
            try:
                jobs = self.batch.list_namespaced_job
                for event in watch.stream(jobs, self.namespace, resource_version=version, timeout_seconds=30):
                    job = self.batch.api_client.sanitize_for_serialization(event["object"])
                    version = job["metadata"]["resourceVersion"]
                    if event["type"] == "ADDED":
                        self._saw(job)
                    if self._stop.is_set():
                        break
            except Exception:  # a cut stream (or 410 Gone): list again, then watch from there
                if self._stop.is_set():
                    return  # the cluster is going away
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    version = self._list()

    def _list(self) -> str:
        response = self.batch.list_namespaced_job(self.namespace)
        for item in response.items:
            self._saw(self.batch.api_client.sanitize_for_serialization(item))
        return response.metadata.resource_version

    def _saw(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        self.seen.setdefault(name, time.monotonic())
        self.jobs[name] = job

    def wait(self, names: Iterable[str], timeout: float) -> None:
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(wanted - self.seen.keys())} Jobs missing after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


def run_manifest(name: str, s3: dict[str, str] | None = None, namespace: str = NAMESPACE) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": {"uri": "data/golden/golden.jsonl"},
        "training": {"steps": 20, "batchSize": 4, "seqLen": 32},
        "accelerator": {"type": "nvidia.com/gpu", "countPerHost": 1},
    }
    if s3:
        spec["storage"] = s3
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TunixRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: pathlib.Path) -> None:
        self.args = args
        self.workdir = workdir
        # A baseline checkout's operator gets its own CRD (its models refuse fields added since).
        crds = pathlib.Path(args.operator_path) / "crds" if args.operator_path else CRDS_DIR
        self.plane = ControlPlane(
            workdir / "cluster",
            controllers=BENCH_CONTROLLERS,
            crds=sorted(crds.glob("*.yaml")),
            profiling=args.apiserver_profile is not None,
        )
        self.metrics_port = free_port()
        self.s3_port = free_port()
        self.operator: subprocess.Popen[bytes]
        self.moto: subprocess.Popen[bytes]

    # -- set-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.plane.start()
        admin = self.plane.api_client()
        self.custom = kubernetes.client.CustomObjectsApi(admin)
        self.core = kubernetes.client.CoreV1Api(admin)
        self.batch = kubernetes.client.BatchV1Api(admin)
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        deadline = time.monotonic() + 60
        while not self.core.list_namespaced_service_account(NAMESPACE).items:  # pods need "default"
            if time.monotonic() > deadline:
                raise TimeoutError("no default ServiceAccount")
            time.sleep(0.2)
        self._start_moto()
        self.core.create_namespaced_secret(
            NAMESPACE,
            {
                "metadata": {"name": "bench-s3"},
                "stringData": {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"},
            },
        )
        self._start_operator()
        self.jobs = JobWatch(self.batch)

    def _start_moto(self) -> None:
        code = (
            "import time; from moto.server import ThreadedMotoServer as S; "
            f"s = S(ip_address='127.0.0.1', port={self.s3_port}, verbose=False); s.start(); time.sleep(1e9)"
        )
        log = (self.workdir / "moto.log").open("wb")
        self.moto = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        import boto3

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.s3.create_bucket(Bucket=BUCKET)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def operator_s3_url(self) -> str:
        """The S3 endpoint the operator reads from: moto, or the keep-alive proxy in front of it."""
        if not self.args.s3_keep_alive:
            return self.s3_url
        if getattr(self, "proxy", None) is None:
            port = free_port()
            command = [sys.executable, "-c", KEEP_ALIVE_PROXY, str(port), str(self.s3_port)]
            self.proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proxy_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the keep-alive proxy did not start")
                time.sleep(0.1)
        return self.proxy_url

    def _start_operator(self) -> None:
        env = {
            "TUNIX_PROGRESS_INTERVAL_SECONDS": str(self.args.progress_interval),
            **({"TUNIX_MAX_PROGRESS_READS_PER_SECOND": str(r)} if (r := self.args.reads_per_second) else {}),
            "TUNIX_MAX_CONCURRENT_RECONCILES": str(self.args.workers),
            **({"TUNIX_RESYNC_INTERVAL_SECONDS": str(r)} if (r := self.args.resync_interval) else {}),
            "TUNIX_LOG_LEVEL": self.args.log_level,
        }
        profile = ["-m", "cProfile", "-o", str(self.args.profile)] if self.args.profile else []
        self.operator = start_operator(
            self.plane, self.workdir, name="operator", user=OPERATOR_USER, namespace=NAMESPACE,
            metrics_port=self.metrics_port, env=env, checkout=self.args.operator_path, python_args=profile,
        )  # fmt: skip
        time.sleep(3)  # kopf's initial listings

    def stop(self) -> None:
        processes = [getattr(self, name, None) for name in ("operator", "moto", "proxy")]
        for process in processes:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if hasattr(self, "jobs"):
            self.jobs.stop()
        self.plane.stop()

    # -- audit -------------------------------------------------------------------------------------

    def requests(self, since: int) -> collections.Counter[str]:
        """The operator's requests since ``since`` by verb (watches counted when they start)."""
        events = self.plane.audit_events(user=operator_username(NAMESPACE, OPERATOR_USER), since=since)
        return collections.Counter(e["verb"] for e in events if (e.get("objectRef") or {}).get("resource"))

    # -- playing the Job controller and the kubelet ------------------------------------------------

    def profile_apiserver(self, path: pathlib.Path | None, seconds: int) -> threading.Thread | None:
        """Start a CPU profile of kube-apiserver (``/debug/pprof/profile``) into ``path``, in a thread."""
        if path is None:
            return None
        thread = threading.Thread(target=self.plane.cpu_profile, args=(path, seconds), daemon=True)
        thread.start()
        return thread

    def parallel(self, fn: Callable[[str], Any], names: Iterable[str]) -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(self.args.clients) as pool:
            return list(pool.map(fn, names))

    def create_run(self, name: str, s3: dict[str, str] | None = None) -> float:
        started = time.monotonic()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, run_manifest(name, s3))
        return started

    def start_pod(self, job_name: str) -> None:
        """The Job's one pod, bound to the (simulated) node and Running."""
        job = self.jobs.jobs[job_name]
        template = job["spec"]["template"]
        meta = template["metadata"]
        pod = {
            "metadata": {
                "name": f"{job_name}-0",
                "namespace": NAMESPACE,
                "labels": meta.get("labels") or {},
                "annotations": {
                    **(meta.get("annotations") or {}),
                    "batch.kubernetes.io/job-completion-index": "0",
                },
            },
            "spec": {**template["spec"], "nodeName": NODE},
        }
        self.core.create_namespaced_pod(NAMESPACE, pod)
        self._pod_status(f"{job_name}-0", "Running", {"running": {"startedAt": now_rfc3339()}})

    def unrelated_pod(self, name: str) -> None:
        """A pod of someone else's workload (no label of ours), bound to the simulated node."""
        container = {
            "name": "app",
            "image": "example/app:1",
            "env": [{"name": f"VAR_{i}", "value": "x" * 20} for i in range(10)],
        }
        pod = {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "other"}},
               "spec": {"nodeName": NODE, "containers": [container]}}  # fmt: skip
        self.core.create_namespaced_pod(NAMESPACE, pod)

    def finish_pod(self, job_name: str) -> None:
        state = {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(SUMMARY),
                                "startedAt": now_rfc3339(), "finishedAt": now_rfc3339()}}  # fmt: skip
        self._pod_status(f"{job_name}-0", "Succeeded", state)

    def _pod_status(self, name: str, phase: str, state: dict[str, Any]) -> None:
        status = {
            "phase": phase,
            "containerStatuses": [{
                "name": "trainer", "ready": phase == "Running", "restartCount": 0, "state": state,
                "image": "tunix/trainer:bench", "imageID": "bench",
            }],
        }  # fmt: skip
        self.core.patch_namespaced_pod_status(name, NAMESPACE, {"status": status})

    def phases(self) -> dict[str, str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}

    def wait_phase(self, names: Iterable[str], phase: str, timeout: float) -> float:
        wanted = set(names)
        started = time.monotonic()
        while True:
            phases = self.phases()
            if all(phases.get(n) == phase for n in wanted):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                late = sorted(n for n in wanted if phases.get(n) != phase)
                raise TimeoutError(f"{len(late)} runs not {phase} after {timeout} s: {late[:5]}")
            time.sleep(0.5)

    def write_progress(self, names: Iterable[str], step: int) -> None:
        def put(name: str) -> None:
            doc = {"step": step, "totalSteps": 1000, "loss": 2.0, "updatedAt": now_rfc3339()}
            self.s3.put_object(Bucket=BUCKET, Key=f"{name}/progress.json", Body=json.dumps(doc).encode())

        self.parallel(put, names)

    # -- the phases --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {"settings": {k: v for k, v in vars(a).items() if k != "out"}}
        if a.s3_only:
            self.s3_phase(out)
            out["operator_peak_rss_mib"] = round(peak_rss_mib(self.operator.pid), 1)
            return out
        if a.unrelated_pods:  # 0. pods that are not ours, created while the operator idles
            window = Window(self)
            rss = peak_rss_mib(self.operator.pid)
            self.parallel(self.unrelated_pod, [f"other-{i}" for i in range(a.unrelated_pods)])
            time.sleep(a.settle_seconds)
            growth = round(peak_rss_mib(self.operator.pid) - rss, 1)
            out["unrelated_pods"] = {
                "pods": a.unrelated_pods,
                **window.close(),
                "operator_peak_rss_growth_mib": growth,
            }
        # 1. create -> Job on an idle operator
        idle = [f"idle-{i}" for i in range(a.idle_runs)]
        idle_window = Window(self)
        latencies = []
        for name in idle:
            started = self.create_run(name)
            self.jobs.wait([f"{name}-0"], timeout=60)
            latencies.append(self.jobs.seen[f"{name}-0"] - started)
            time.sleep(0.2)
        latencies.sort()
        idle_requests = idle_window.close()["api_requests"]
        out["create_to_job_idle_ms"] = {
            "runs": len(latencies),
            "p50": round(1000 * statistics.median(latencies), 1),
            "p99": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
            "max": round(1000 * latencies[-1], 1),
        }
        # 2. a burst
        burst = [f"run-{i}" for i in range(a.runs)]
        profile = self.profile_apiserver(a.apiserver_profile, a.apiserver_profile_seconds)
        window = Window(self)
        starts = self.parallel(self.create_run, burst)
        self.jobs.wait([f"{n}-0" for n in burst], timeout=600)
        last_job = max(self.jobs.seen[f"{n}-0"] for n in burst)
        result = window.close()
        if profile is not None:
            profile.join()
        result["runs"] = len(burst)
        result["seconds_first_create_to_all_jobs"] = round(last_job - min(starts), 2)
        spans = sorted(self.jobs.seen[f"{n}-0"] - s for n, s in zip(burst, starts, strict=True))
        result["create_to_job_ms_p50_p99"] = [
            round(1000 * statistics.median(spans)),
            round(1000 * spans[int(0.99 * len(spans)) - 1]),
        ]
        out["burst"] = result
        everyone = idle + burst
        # 3. lifecycles: pods Running, then at rest
        lifecycle = Window(self)
        self.parallel(self.start_pod, [f"{n}-0" for n in everyone])
        self.wait_phase(everyone, "Running", timeout=600)
        time.sleep(a.settle_seconds)
        window = Window(self)
        time.sleep(a.rest_seconds)
        out["rest_running"] = {"runs": len(everyone), **window.close()}
        # 4. finish
        running_rest = out["rest_running"]["api_requests"]
        self.parallel(self.finish_pod, [f"{n}-0" for n in everyone])
        self.wait_phase(everyone, "Succeeded", timeout=600)
        time.sleep(a.settle_seconds)
        life = lifecycle.close()
        # Every request from the first create to the last Succeeded, less the Running rest window.
        total = idle_requests + out["burst"]["api_requests"] + life["api_requests"] - running_rest
        out["lifecycle"] = {
            "runs": len(everyone),
            "api_requests_by_verb_after_creation": life["api_requests_by_verb"],
            "api_requests_per_run": round(total / len(everyone), 2),
        }
        # 5. finished at rest
        window = Window(self)
        time.sleep(a.rest_seconds)
        out["rest_finished"] = {"runs": len(everyone), **window.close()}
        # 6. S3 progress
        if a.s3_runs:
            self.s3_phase(out)
        out["operator_peak_rss_mib"] = round(peak_rss_mib(self.operator.pid), 1)
        return out

    def s3_phase(self, out: dict[str, Any]) -> None:
        """Phase 6: Running runs whose progress.json on S3 changes every interval, then does not."""
        a = self.args
        s3 = {
            "uri": "",
            "endpointUrl": self.operator_s3_url(),
            "region": "us-east-1",
            "credentialsSecret": "bench-s3",
        }
        names = [f"s3-{i}" for i in range(a.s3_runs)]
        self.write_progress(names, 1)
        self.parallel(lambda n: self.create_run(n, {**s3, "uri": f"s3://{BUCKET}/{n}"}), names)
        self.jobs.wait([f"{n}-0" for n in names], timeout=600)
        self.parallel(self.start_pod, [f"{n}-0" for n in names])
        self.wait_phase(names, "Running", timeout=600)
        time.sleep(a.settle_seconds + a.progress_interval)
        window = Window(self)
        step, deadline = 1, time.monotonic() + a.rest_seconds
        while time.monotonic() < deadline:
            step += 1
            self.write_progress(names, step)
            time.sleep(max(0.0, a.progress_interval - 0.5))
        result = window.close()
        reads = sum(result["storage_reads"].values())
        result["runs"] = len(names)
        result["operator_cpu_ms_per_storage_read"] = (
            round(1000 * result["operator_cpu_seconds"] / reads, 2) if reads else None
        )
        out["s3_progress"] = result
        result = self.s3_idle(names)
        out["s3_progress_unchanged"] = result

    def s3_idle(self, names: list[str]) -> dict[str, Any]:
        """The same S3 runs while their progress does not change (conditional reads answered 304)."""
        time.sleep(self.args.progress_interval)
        window = Window(self)
        time.sleep(self.args.rest_seconds)
        result = window.close()
        reads = sum(result["storage_reads"].values())
        result["runs"] = len(names)
        result["operator_cpu_ms_per_storage_read"] = (
            round(1000 * result["operator_cpu_seconds"] / reads, 2) if reads else None
        )
        return result


def s3_read_cost(objects: int, rounds: int) -> dict[str, Any]:
    """CPU of one progress read (``JsonReads.read``, in this process) against moto in its own process:
    unchanged objects (conditional GET answered 304) and changed ones (200 with the body).

    Run with ``PYTHONPATH=<checkout>/operator:<checkout>/api`` to measure another checkout's reader.
    """
    import boto3

    from tunix_operator.storage import JsonReads  # the operator's, or PYTHONPATH's

    port = free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer as S; "
        f"s = S(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); time.sleep(1e9)"
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    moto = subprocess.Popen([sys.executable, "-c", code], **quiet)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        keys = [f"r{i}/progress.json" for i in range(objects)]
        options = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
        reads = JsonReads()

        def put(step: int) -> None:
            for key in keys:
                s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"step": step}).encode())

        def read_all() -> float:
            started = time.process_time()
            for key in keys:
                assert reads.read(f"s3://{BUCKET}/{key}", options) is not None
            return time.process_time() - started

        put(0)
        read_all()  # the client is built and every ETag known
        unchanged = sum(read_all() for _ in range(rounds))
        changed = 0.0
        for step in range(1, rounds + 1):
            put(step)
            changed += read_all()
        n = objects * rounds
        return {
            "reader": sys.modules[JsonReads.__module__].__file__,
            "objects": objects,
            "rounds": rounds,
            "cpu_ms_per_read_unchanged": round(1000 * unchanged / n, 3),
            "cpu_ms_per_read_changed": round(1000 * changed / n, 3),
            "counts": dict(reads.counts),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        moto.terminate()


def emit(result: dict[str, Any], out: pathlib.Path | None) -> None:
    """Add the machine and the date to a benchmark's result; print it as JSON, and write it to ``out``."""
    result["machine"] = {"cpus": os.cpu_count(), "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        out.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="runs created at once (default 200)")
    parser.add_argument("--idle-runs", type=int, default=30, help="runs created one by one (latency)")
    parser.add_argument("--s3-runs", type=int, default=100, help="Running runs with progress on S3 (0: skip)")
    parser.add_argument("--unrelated-pods", type=int, default=0, help="pods not ours, created first")
    parser.add_argument("--rest-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--progress-interval", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8, help="TUNIX_MAX_CONCURRENT_RECONCILES")
    parser.add_argument(
        "--reads-per-second", type=float, default=None, help="TUNIX_MAX_PROGRESS_READS_PER_SECOND"
    )
    parser.add_argument("--resync-interval", type=float, default=None, help="TUNIX_RESYNC_INTERVAL_SECONDS")
    parser.add_argument("--clients", type=int, default=8, help="threads creating runs and pods")
    parser.add_argument("--profile", default=None, help="cProfile the operator's main thread into this file")
    parser.add_argument(
        "--apiserver-profile",
        type=pathlib.Path,
        default=None,
        help="write a CPU profile of kube-apiserver from the burst's start here (`go tool pprof -top`)",
    )
    parser.add_argument("--apiserver-profile-seconds", type=int, default=30)
    parser.add_argument("--log-level", default="WARNING", help="the operator's (its log: --keep)")
    parser.add_argument("--operator-path", default=None, help="run the operator of this checkout instead")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--s3-only", action="store_true", help="only phase 6 (S3 progress polls)")
    parser.add_argument(
        "--s3-keep-alive", action="store_true", help="the operator reads S3 through a keep-alive proxy"
    )
    parser.add_argument(
        "--s3-read-only", action="store_true", help="only the CPU of one S3 progress read (no cluster)"
    )
    args = parser.parse_args(argv)
    if args.s3_read_only:
        print(json.dumps(s3_read_cost(objects=40, rounds=10), indent=2))
        return 0
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-operator-"))
    bench = Bench(args, workdir)
    try:
        bench.start()
        result = bench.run()
    finally:
        bench.stop()
    emit(result, args.out)
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
