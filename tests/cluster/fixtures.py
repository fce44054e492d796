"""pytest fixtures of the real local control plane (register with ``pytest_plugins``).

One control plane serves the whole session (it starts in seconds once built); each test gets its own
namespace, its own nodes (``kubelet``) and, in the integration tests, its own operator watching only
that namespace. With ``TUNIX_E2E_KUBECONFIG`` set, ``kubeconfig`` and ``namespace`` point at that
real cluster instead, and tests needing the local control plane itself are skipped.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
import yaml

from tests.cluster import controlplane
from tests.cluster.controlplane import ControlPlane

REPO = controlplane.REPO
CRDS_DIR = REPO / "crds"
REAL_CLUSTER_ENV = "TUNIX_E2E_KUBECONFIG"
TRAINER_IMAGE = "tunix/trainer:test"  # what fast_settings() gives the operator as default image
OPERATOR_NAMESPACE = "tunix-system"
OPERATOR_RELEASE = "tunix"
LOGS_KEPT = REPO / ".cache" / "test-cluster-logs"


def kubectl_binary() -> str:
    """The kubectl built with the control plane (same version as the API server)."""
    return str(controlplane.binary("kubectl"))


def kubectl(
    kubeconfig: pathlib.Path | str,
    *args: str,
    check: bool = True,
    timeout: float = 60,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against ``kubeconfig`` (KUBECACHEDIR beside it unless set)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.setdefault("KUBECACHEDIR", str(pathlib.Path(kubeconfig).parent / "kube-cache"))
    result = subprocess.run(
        [kubectl_binary(), *args], env=env, capture_output=True, text=True, timeout=timeout, input=input,
        check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def _real_cluster() -> str | None:
    return os.environ.get(REAL_CLUSTER_ENV) or None


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's control plane, with the project's CRDs and the process kubelet's StorageClass."""
    if _real_cluster():
        pytest.skip(f"needs the local control plane: {REAL_CLUSTER_ENV} points at a real cluster")
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(workdir, crds=sorted(CRDS_DIR.glob("*.yaml"))).start()
    try:
        assert kubectl(plane.admin_kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"
        from tests.cluster.kubelet import ensure_storage_class

        ensure_storage_class(plane.api_client())
        yield plane
    finally:
        plane.stop()
        if plane.keep_logs:
            kept = plane.copy_logs(LOGS_KEPT / time.strftime("%Y%m%d-%H%M%S"))
            print(f"\ncontrol-plane logs of this failed session: {kept}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used the control plane keeps its logs (``.cache/test-cluster-logs``)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "control_plane" in getattr(item, "fixturenames", ()):
        plane = item.funcargs.get("control_plane") if hasattr(item, "funcargs") else None
        if isinstance(plane, ControlPlane):
            plane.keep_logs = True
            report.sections.append(("control plane", f"logs: {plane.logs_dir} (kept under {LOGS_KEPT})"))


@pytest.fixture(scope="session")
def admin_api(request: pytest.FixtureRequest) -> kubernetes.client.ApiClient:
    """An admin client: of the local control plane, or of the cluster ``TUNIX_E2E_KUBECONFIG`` names."""
    if _real_cluster():
        return kubernetes.config.new_client_from_config(config_file=_real_cluster())
    return request.getfixturevalue("control_plane").api_client()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40].rstrip("-")


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test (deleted afterwards), in the local or the real cluster."""
    name = f"{_slug(request.node.name)}-{uuid.uuid4().hex[:5]}"
    client = request.getfixturevalue("admin_api")
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name, "labels": {"tunix.dev/test": "true"}}})
    deadline = time.monotonic() + 30
    while True:  # pods need the namespace's default ServiceAccount (the controller-manager makes it)
        try:
            core.read_namespaced_service_account("default", name)
            break
        except kubernetes.client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    # Runs keep the operator's finalizer once their operator has stopped: clear it, or the namespace
    # would stay Terminating (and a later cluster-wide operator would act on its leftovers).
    custom = kubernetes.client.CustomObjectsApi(client)
    for run in custom.list_namespaced_custom_object("tunix.dev", "v1alpha1", name, "tunixruns")["items"]:
        with contextlib.suppress(kubernetes.client.ApiException):
            unfinalized = {"metadata": {"finalizers": None}}
            custom.patch_namespaced_custom_object(
                "tunix.dev", "v1alpha1", name, "tunixruns", run["metadata"]["name"], unfinalized
            )
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def kubeconfig(request: pytest.FixtureRequest, namespace: str, tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:  # fmt: skip
    """An admin kubeconfig whose context namespace is the test's; kubectl gets its own discovery cache."""
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
    if _real_cluster():
        return pathlib.Path(_real_cluster())  # type: ignore[arg-type]
    plane: ControlPlane = request.getfixturevalue("control_plane")
    return controlplane.write_kubeconfig(
        tmp_path / "admin.kubeconfig", plane.url, plane.ca.cert_pem, user="admin", cert=plane.admin_cert,
        namespace=namespace,
    )  # fmt: skip


@pytest.fixture
def kubelet(control_plane: ControlPlane, tmp_path: pathlib.Path, namespace: str):
    """A started process kubelet with two nodes of 8 GPUs each; the trainer image runs as a simulated
    container (the test ends it with ``terminate``); any other image fails to pull."""
    from tests.cluster.kubelet import Node, ProcessKubelet

    suffix = uuid.uuid4().hex[:6]
    nodes = tuple(Node(f"gpu-{i}-{suffix}", extended={"nvidia.com/gpu": "8"}) for i in range(2))
    with ProcessKubelet(
        control_plane.api_client(), tmp_path / "kubelet", nodes=nodes, images={TRAINER_IMAGE: "simulated"}
    ) as process_kubelet:
        yield process_kubelet
        assert not process_kubelet.errors, process_kubelet.errors


# -- the operator's identity: the chart's ServiceAccount and RBAC --------------------------------------
@dataclass(frozen=True)
class OperatorIdentity:
    """The chart's ServiceAccount, as the operator sees it: a token and a kubeconfig."""

    service_account: str
    namespace: str
    token: str
    kubeconfig: pathlib.Path

    def api_client(self) -> kubernetes.client.ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))


def helm_binary() -> str:
    return str(controlplane.binary("helm"))


def render_chart(*, release: str = OPERATOR_RELEASE, namespace: str = OPERATOR_NAMESPACE,
                 values: tuple[str, ...] = ()) -> str:  # fmt: skip
    """``helm template`` of the chart with the real helm binary (the CRDs are not included)."""
    args = [helm_binary(), "template", release, str(REPO / "charts" / "tunix-operator"), "-n", namespace]
    for value in values:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


def install_operator_identity(
    plane: ControlPlane,
    workdir: pathlib.Path,
    *,
    release: str = OPERATOR_RELEASE,
    values: tuple[str, ...] = (),
    objects: list[dict[str, Any]] | None = None,
) -> OperatorIdentity:
    """Apply the chart's ServiceAccount and RBAC (nothing else; ``objects`` if already rendered) and mint
    a token for the ServiceAccount."""
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    if objects is None:
        objects = [d for d in yaml.safe_load_all(render_chart(release=release, values=values)) if d]
    rbac = [d for d in objects if d["kind"] in kinds]
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]
    kubectl(plane.admin_kubeconfig, "create", "namespace", account["namespace"], check=False)
    kubectl(plane.admin_kubeconfig, "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
    token = kubectl(
        plane.admin_kubeconfig, "create", "token", account["name"], "-n", account["namespace"],
        "--duration=4h",
    ).stdout.strip()  # fmt: skip
    kubeconfig = plane.kubeconfig_for(
        workdir / f"{release}-operator.kubeconfig", token=token, user=f"{release}-operator"
    )
    return OperatorIdentity(account["name"], account["namespace"], token, kubeconfig)


@pytest.fixture(scope="session")
def operator_identity(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> OperatorIdentity:
    """The cluster-wide install's ServiceAccount (chart defaults), which the tests' operators run as."""
    return install_operator_identity(control_plane, tmp_path_factory.mktemp("operator-identity"))
