"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The binaries come from ``tools/build_cluster.sh`` (built from the Kubernetes Go modules). Everything
listens on 127.0.0.1 at free ports; each cluster gets its own CA, serving and client certificates and
service-account signing keys, and the API server runs with ``--authorization-mode=Node,RBAC`` and the
default admission plugins (ValidatingAdmissionPolicy included). Nodes come from the project's process
kubelet (``tests/cluster/kubelet.py``); there is no kubelet, kube-proxy or DNS here.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import yaml

from tests.cluster import pki

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_ENV = "TUNIX_CLUSTER_BIN"
DEFAULT_BIN = REPO / ".cache" / "cluster-bin"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The controllers the tests rely on (kube-controller-manager --controllers); the node-lifecycle
# controller is left out on purpose: the process kubelet marks its own nodes Ready and untainted.
CONTROLLERS = (
    "job-controller", "garbage-collector-controller", "namespace-controller",
    "serviceaccount-controller", "serviceaccount-token-controller", "ttl-after-finished-controller",
    "disruption-controller", "persistentvolume-binder-controller", "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller", "pod-garbage-collector-controller",
    "replicaset-controller", "deployment-controller", "endpoints-controller", "endpointslice-controller",
    "root-ca-certificate-publisher-controller",
)  # fmt: skip
ADMISSION = ("NodeRestriction",)  # added to the API server's default admission plugins
# Audit every request except the control plane's own chatter: the tests read it to see which calls a
# client (the operator's service account) made, and how many.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler",
                                    "system:apiserver"]},
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
        {"level": "Metadata"},
    ],
}  # fmt: skip


def bin_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(BIN_ENV) or DEFAULT_BIN)


def binary(name: str) -> pathlib.Path:
    """A control-plane binary built by tools/build_cluster.sh (``make cluster``)."""
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: run `make cluster` (tools/build_cluster.sh) to build it")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_kubeconfig(
    path: pathlib.Path,
    server: str,
    ca_pem: bytes,
    *,
    user: str,
    cert: pki.KeyPair | None = None,
    token: str | None = None,
    namespace: str = "default",
) -> pathlib.Path:
    """A self-contained kubeconfig (certificates inline) for a client certificate or a bearer token."""
    credentials: dict[str, str] = {}
    if cert is not None:
        credentials["client-certificate-data"] = base64.b64encode(cert.cert).decode()
        credentials["client-key-data"] = base64.b64encode(cert.key).decode()
    if token is not None:
        credentials["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class Component:
    """One control-plane process, its command and its log file."""

    name: str
    args: list[str]
    log: pathlib.Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-25:]
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; last lines of {self.log}:\n"
                + "\n".join(tail)
            )

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler in ``workdir``.

    ``workdir/logs`` keeps one log per component (kept after ``stop``); ``admin_kubeconfig`` is a
    ``system:masters`` client-certificate kubeconfig.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        controllers: Sequence[str] = CONTROLLERS,
        crds: Sequence[pathlib.Path] = (),
        profiling: bool = False,
    ) -> None:
        self.workdir = pathlib.Path(workdir)
        # The API server's /debug/pprof (for benchmarks: where its CPU goes); off as in a hardened cluster.
        self.profiling = profiling
        # Installed before the controller-manager starts: its garbage collector rediscovers resource
        # types only every 30 s, and would not yet collect the children of a brand-new CRD's objects.
        self.crds = tuple(crds)
        self.logs_dir = self.workdir / "logs"
        self.pki_dir = self.workdir / "pki"
        self.controllers = tuple(controllers)
        self.port = 0
        self.url = ""
        self.components: list[Component] = []
        self.ca = pki.CertificateAuthority()
        self.admin_cert = self.ca.issue("tunix-test-admin", organization="system:masters")
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.logs_dir / "audit.jsonl"
        self.keep_logs = False  # set when a test failed: the fixture copies the logs somewhere lasting

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> ControlPlane:
        for directory in (self.logs_dir, self.pki_dir, self.workdir / "etcd"):
            directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        write_kubeconfig(
            self.admin_kubeconfig, self.url, self.ca.cert_pem, user="admin", cert=self.admin_cert
        )
        try:
            etcd_url = self._start_etcd()
            self._start(self._apiserver_args(etcd_url), "kube-apiserver")
            self.wait_ready(timeout)
            self._install_crds()
            self._start(self._controller_manager_args(), "kube-controller-manager")
            self._start(self._scheduler_args(), "kube-scheduler")
            self._wait_controllers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise (with the log tail) if any component has exited."""
        for component in self.components:
            component.check_alive()

    # -- clients -------------------------------------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        """An admin client of the kubernetes library, configured for this cluster only."""
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(self.admin_kubeconfig), client_configuration=configuration
        )
        return kubernetes.client.ApiClient(configuration)

    def kubeconfig_for(
        self, path: pathlib.Path, *, token: str, user: str, namespace: str = "default"
    ) -> pathlib.Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a service account's)."""
        return write_kubeconfig(path, self.url, self.ca.cert_pem, user=user, token=token, namespace=namespace)

    def admin_ssl_context(self) -> ssl.SSLContext:
        """TLS for raw HTTPS requests to the API server as the admin (``system:masters``)."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        context.load_cert_chain(*self.admin_cert.write(self.pki_dir, "admin"))
        return context

    def cpu_profile(self, path: pathlib.Path, seconds: int) -> None:
        """A CPU profile of the API server over the next ``seconds`` (``/debug/pprof/profile``, needs
        ``profiling=True``) into ``path``; blocks meanwhile."""
        url = f"{self.url}/debug/pprof/profile?seconds={seconds}"
        with urllib.request.urlopen(url, context=self.admin_ssl_context(), timeout=seconds + 60) as answer:
            path.write_bytes(answer.read())

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/readyz`` of the API server answers ok."""
        context = self.admin_ssl_context()
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as response:
                    if response.read().strip() == b"ok":
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(
            f"kube-apiserver at {self.url} not ready in {timeout:.0f} s ({last}); logs: {self.logs_dir}"
        )

    # -- components ----------------------------------------------------------------------------------
    def _start(self, args: list[str], name: str) -> Component:
        component = Component(name, args, self.logs_dir / f"{name}.log")
        component.start()
        self.components.append(component)
        return component

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._start(
            [
                str(binary("etcd")), "--name=tunix", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=tunix={peer_url}", "--listen-metrics-urls=",
                # A throwaway test store: durability across machine crashes is not wanted here.
                "--unsafe-no-fsync", "--log-level=warn",
            ],
            "etcd",
        )  # fmt: skip
        return url

    def _apiserver_args(self, etcd_url: str) -> list[str]:
        serving = self.ca.issue("kube-apiserver", server=True, dns_names=pki.SERVING_DNS, ips=pki.SERVING_IPS)
        cert, key = serving.write(self.pki_dir, "apiserver")
        kubelet_client_cert, kubelet_client_key = self.ca.issue(
            "kube-apiserver-kubelet-client", organization="system:masters"
        ).write(self.pki_dir, "apiserver-kubelet-client")
        ca = self.pki_dir / "ca.crt"
        ca.write_bytes(self.ca.cert_pem)
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        sa_private, sa_public = pki.service_account_keys()
        (self.pki_dir / "sa.key").write_bytes(sa_private)
        (self.pki_dir / "sa.pub").write_bytes(sa_public)
        return [
            str(binary("kube-apiserver")),
            "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            f"--etcd-servers={etcd_url}",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}", f"--client-ca-file={ca}",
            f"--kubelet-client-certificate={kubelet_client_cert}",
            f"--kubelet-client-key={kubelet_client_key}",
            f"--kubelet-certificate-authority={ca}",
            f"--service-account-issuer={ISSUER}", f"--service-account-key-file={self.pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", f"--enable-admission-plugins={','.join(ADMISSION)}",
            "--allow-privileged=true", f"--profiling={'true' if self.profiling else 'false'}",
            "--event-ttl=1h", "--v=1",
            # Loopback cannot be advertised in the `kubernetes` Service's endpoints, and nothing here
            # reaches the API through that Service (no kube-proxy): no endpoint reconciler.
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--audit-log-mode=blocking", "--audit-log-maxsize=0",
        ]  # fmt: skip

    def _component_kubeconfig(self, user: str) -> pathlib.Path:
        cert = self.ca.issue(user)
        return write_kubeconfig(self.workdir / f"{user.split(':')[-1]}.kubeconfig", self.url,
                                self.ca.cert_pem, user=user, cert=cert)  # fmt: skip

    def _controller_manager_args(self) -> list[str]:
        kubeconfig = self._component_kubeconfig("system:kube-controller-manager")
        return [
            str(binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--controllers={','.join(self.controllers)}", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
            f"--root-ca-file={self.pki_dir / 'ca.crt'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--secure-port=0", "--profiling=false", "--v=1",
            # Tests watch pods and jobs settle: react at once rather than in batches.
            "--concurrent-job-syncs=5", "--concurrent-gc-syncs=5",
        ]  # fmt: skip

    def _scheduler_args(self) -> list[str]:
        kubeconfig = self._component_kubeconfig("system:kube-scheduler")
        return [
            str(binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0",
            "--profiling=false", "--v=1",
        ]  # fmt: skip

    def _install_crds(self) -> None:
        if not self.crds:
            return
        kubectl = [str(binary("kubectl")), f"--kubeconfig={self.admin_kubeconfig}"]
        files = [arg for path in self.crds for arg in ("-f", str(path))]
        subprocess.run(
            [*kubectl, "apply", "--server-side", *files], check=True, capture_output=True, timeout=60
        )
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
                       check=True, capture_output=True, timeout=70)  # fmt: skip

    def _wait_controllers(self, timeout: float) -> None:
        """Until the controller-manager has made the default namespace's ServiceAccount."""
        core = kubernetes.client.CoreV1Api(self.api_client())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                core.read_namespaced_service_account("default", "default")
                return
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
            time.sleep(0.2)
        raise TimeoutError(f"kube-controller-manager made no default ServiceAccount in {timeout:.0f} s")

    def audit_events(self, *, user: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """The audited requests after byte ``since`` of the log, by ``user``: one event per request, its
        first of ``ResponseStarted`` (long-running ones: watches) and ``ResponseComplete``."""
        events: dict[str, dict[str, Any]] = {}
        with self.audit_log.open("rb") as log:
            log.seek(since)
            for line in log:
                event = json.loads(line)
                if event.get("stage") not in ("ResponseStarted", "ResponseComplete"):
                    continue
                if user is None or event["user"]["username"] == user:
                    events.setdefault(event["auditID"], event)
        return list(events.values())

    def audit_offset(self) -> int:
        """The audit log's current size: pass it as ``since`` to see only later requests."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def copy_logs(self, destination: pathlib.Path) -> pathlib.Path:
        """Keep this cluster's logs (e.g. after a failed test) at ``destination``."""
        shutil.copytree(self.logs_dir, destination, dirs_exist_ok=True)
        return destination
