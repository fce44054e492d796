"""The process kubelet against the real control plane: the real scheduler binds pods to its Node, the
real Job controller makes them, and it runs them as local processes (or simulated containers),
reporting through the API as a kubelet does."""

from __future__ import annotations

import base64
import pathlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubelet import ContainerResult, Node, ProcessKubelet
from tests.cluster.rawapi import Api, ApiError, path_of

Obj = dict[str, Any]
PYTHON = "tunix/python:process"  # runs command+args as a local process of the venv
SIMULATED = "tunix/simulated:1"
VENV_BIN = str(pathlib.Path(sys.executable).parent)
TIMEOUT = 30.0


@pytest.fixture
def node_name() -> str:
    return f"proc-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[Api]:
    client = Api(control_plane.api_client(), user_agent="test-kubelet/1", pool_size=4)
    yield client
    client.close()


def _kubelet(control_plane: ControlPlane, workdir: pathlib.Path, node: str, **kwargs: Any) -> ProcessKubelet:
    return ProcessKubelet(
        control_plane.api_client(),
        workdir,
        nodes=(Node(node),),
        images={PYTHON: "process", SIMULATED: "simulated"},
        path_prefix=(VENV_BIN,),
        **kwargs,
    )


@pytest.fixture
def kubelet_here(
    control_plane: ControlPlane, tmp_path: pathlib.Path, node_name: str
) -> Iterator[ProcessKubelet]:
    with _kubelet(control_plane, tmp_path / "kubelet", node_name) as kubelet:
        yield kubelet
    assert not kubelet.errors, kubelet.errors


def _pod_spec(node: str, *containers: Obj, **extra: Any) -> Obj:
    """A pod spec pinned to ``node`` (other tests' nodes may exist): restartPolicy Never, short grace."""
    return {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": list(containers),
        **extra,
    }


def _python(script: str, name: str = "main", **extra: Any) -> Obj:
    return {"name": name, "image": PYTHON, "command": ["python", "-c", script], **extra}


def _create(api: Api, namespace: str, plural: str, body: Obj, group: str = "api/v1") -> Obj:
    return api.request("POST", f"/{group}/namespaces/{namespace}/{plural}", body)


def _create_pod(api: Api, namespace: str, name: str, spec: Obj, **meta: Any) -> Obj:
    return _create(api, namespace, "pods", {"metadata": {"name": name, **meta}, "spec": spec})


def _get(api: Api, namespace: str, plural: str, name: str, group: str = "api/v1") -> Obj | None:
    try:
        return api.request("GET", f"/{group}/namespaces/{namespace}/{plural}/{name}")
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


def _wait(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """``probe()``'s first truthy value, polled every 0.1 s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _wait_phase(api: Api, namespace: str, name: str, *phases: str, timeout: float = TIMEOUT) -> Obj:
    def probe() -> Obj | None:
        pod = _get(api, namespace, "pods", name)
        return pod if pod and pod["status"].get("phase") in phases else None

    return _wait(f"pod {name} in {phases}", probe, timeout)


def _terminated(pod: Obj, index: int = 0) -> Obj:
    return pod["status"]["containerStatuses"][index]["state"]["terminated"]


def _conditions(pod: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in pod["status"].get("conditions") or []}


# -- Nodes ---------------------------------------------------------------------------------------------
def test_node_is_registered_ready_untainted_with_lease_and_removed_on_stop(
    control_plane: ControlPlane, api: Api, tmp_path: pathlib.Path, node_name: str
) -> None:
    node = Node(
        node_name,
        extended={"google.com/tpu": "4"},
        labels={"pool": "tpu"},
        taints=({"key": "tpu", "value": "yes", "effect": "NoSchedule"},),
    )
    kubelet = ProcessKubelet(control_plane.api_client(), tmp_path, nodes=(node,))
    with kubelet:
        got = api.request("GET", path_of("api", "v1", "nodes", node_name))
        assert got["status"]["allocatable"]["google.com/tpu"] == "4"
        assert got["status"]["capacity"]["pods"] == "110"
        assert _conditions(got)["Ready"]["status"] == "True"
        assert got["metadata"]["labels"]["pool"] == "tpu"
        assert got["spec"]["taints"] == [
            {"key": "tpu", "value": "yes", "effect": "NoSchedule"}
        ]  # not-ready gone
        assert got["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
        lease = api.request(
            "GET",
            path_of(
                "apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases", node_name
            ),
        )
        assert lease["spec"]["holderIdentity"] == node_name
    with pytest.raises(ApiError) as gone:
        api.request("GET", path_of("api", "v1", "nodes", node_name))
    assert gone.value.code == 404
    assert not kubelet.errors


def test_a_deleted_node_is_registered_again_at_the_next_heartbeat(
    kubelet_here: ProcessKubelet, api: Api, node_name: str
) -> None:
    first = api.request("GET", path_of("api", "v1", "nodes", node_name))
    api.request("DELETE", path_of("api", "v1", "nodes", node_name))
    kubelet_here.heartbeat()
    again = api.request("GET", path_of("api", "v1", "nodes", node_name))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert _conditions(again)["Ready"]["status"] == "True" and not again["spec"].get("taints")


# -- process containers ----------------------------------------------------------------------------------
def test_bare_pod_runs_as_a_process_and_succeeds_with_its_termination_message(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    script = (
        "import socket, sys; print('hello from', socket.gethostname(), flush=True);"
        "print('to stderr', file=sys.stderr);"
        "open('/dev/termination-log', 'w').write('all done')"
    )
    _create_pod(api, namespace, "hello", _pod_spec(node_name, _python(script)))
    pod = _wait_phase(api, namespace, "hello", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = _terminated(pod)
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        0,
        "Completed",
        "all done",
    )
    assert pod["spec"]["nodeName"] == node_name  # bound by the real scheduler
    assert pod["status"]["podIP"].startswith("127.") and pod["status"]["hostIP"] == "127.0.0.1"
    assert _conditions(pod)["PodScheduled"]["status"] == "True"
    assert _conditions(pod)["Ready"]["reason"] == "PodCompleted"
    assert kubelet_here.logs("hello", namespace) == "hello from hello\nto stderr\n"


def test_failed_process_falls_back_to_its_log_and_reports_the_exit_code(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    script = "import sys; print('step 1 ok'); print('fatal: bad config'); sys.exit(3)"
    container = _python(script, terminationMessagePolicy="FallbackToLogsOnError")
    _create_pod(api, namespace, "fails", _pod_spec(node_name, container))
    pod = _wait_phase(api, namespace, "fails", "Succeeded", "Failed")
    terminated = _terminated(pod)
    assert pod["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert terminated["message"] == "step 1 ok\nfatal: bad config\n"


def test_env_field_refs_secret_and_config_map_refs_are_resolved(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    _create(
        api,
        namespace,
        "secrets",
        {"metadata": {"name": "creds"}, "data": {"token": base64.b64encode(b"s3cr3t").decode()}},
    )
    _create(api, namespace, "configmaps", {"metadata": {"name": "settings"}, "data": {"LEVEL": "debug"}})
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "ROLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}}},
        {"name": "SUMMARY", "value": "$(POD_NAME)@$(NODE)"},
    ]
    keys = ["POD_NAME", "POD_NS", "POD_IP", "NODE", "ROLE", "TOKEN", "SUMMARY", "CFG_LEVEL", "MAYBE"]
    values = f"'|'.join(os.environ.get(k, '-') for k in {keys})"
    script = f"import os; open('/dev/termination-log', 'w').write({values})"
    container = _python(script, env=env, envFrom=[{"prefix": "CFG_", "configMapRef": {"name": "settings"}}])
    _create_pod(api, namespace, "envs", _pod_spec(node_name, container), labels={"role": "worker"})
    pod = _wait_phase(api, namespace, "envs", "Succeeded", "Failed")
    values = _terminated(pod)["message"].split("|")
    assert values == [
        "envs",
        namespace,
        pod["status"]["podIP"],
        node_name,
        "worker",
        "s3cr3t",
        f"envs@{node_name}",
        "debug",
        "-",
    ]


def test_missing_secret_holds_the_container_in_create_container_config_error(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    script = "import os; open('/dev/termination-log', 'w').write(os.environ['TOKEN'])"
    _create_pod(api, namespace, "waits", _pod_spec(node_name, _python(script, env=env)))

    def waiting() -> Obj | None:
        pod = _get(api, namespace, "pods", "waits")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
        return (statuses[0].get("state") or {}).get("waiting")

    state = _wait("CreateContainerConfigError", waiting)
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    _create(api, namespace, "secrets", {"metadata": {"name": "later"}, "stringData": {"token": "now"}})
    pod = _wait_phase(api, namespace, "waits", "Succeeded", "Failed")  # retried until the Secret came
    assert _terminated(pod)["message"] == "now"


def test_config_map_volume_is_visible_read_only_at_its_mount_path(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    _create(
        api, namespace, "configmaps", {"metadata": {"name": "run-config"}, "data": {"run.yaml": "steps: 7\n"}}
    )
    mount = f"/etc/tunix-kubelet-test-{uuid.uuid4().hex[:6]}"  # missing: made in the pod's namespace only
    script = (
        "import pathlib\n"
        f"text = pathlib.Path('{mount}/run.yaml').read_text()\n"
        "try:\n"
        f"    pathlib.Path('{mount}/new').write_text('x'); writable = 'writable'\n"
        "except OSError:\n"
        "    writable = 'read-only'\n"
        "open('/dev/termination-log', 'w').write(text + writable)\n"
    )
    container = _python(script, volumeMounts=[{"name": "config", "mountPath": mount}])
    spec = _pod_spec(node_name, container, volumes=[{"name": "config", "configMap": {"name": "run-config"}}])
    _create_pod(api, namespace, "reads-config", spec)
    pod = _wait_phase(api, namespace, "reads-config", "Succeeded", "Failed")
    assert _terminated(pod)["message"] == "steps: 7\nread-only"
    assert not pathlib.Path(mount).exists()  # the mount point, and the volume, only inside the pod


# -- deletion and eviction ------------------------------------------------------------------------------
TRAPS_SIGTERM = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('ignoring SIGTERM', flush=True))\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def _wait_log(kubelet: ProcessKubelet, name: str, namespace: str, text: str) -> None:
    _wait(f"{text!r} in the log of {name}", lambda: text in kubelet.logs(name, namespace))


def test_graceful_delete_sends_sigterm_then_removes_the_pod(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    _create_pod(api, namespace, "polite", _pod_spec(node_name, _python(TRAPS_SIGTERM)))
    _wait_phase(api, namespace, "polite", "Running")
    _wait_log(kubelet_here, "polite", namespace, "ready")
    started = time.monotonic()
    api.request("DELETE", path_of("api", "v1", "namespaces", namespace, "pods", "polite"))  # grace 5 s
    _wait("pod polite gone", lambda: _get(api, namespace, "pods", "polite") is None)
    assert time.monotonic() - started < 4  # it exited on SIGTERM, before the grace period ran out
    assert kubelet_here.logs("polite", namespace) == "ready\ngot SIGTERM\n"


def test_grace_period_ends_with_sigkill(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    spec = _pod_spec(node_name, _python(IGNORES_SIGTERM), terminationGracePeriodSeconds=1)
    _create_pod(api, namespace, "stubborn", spec)
    _wait_phase(api, namespace, "stubborn", "Running")
    _wait_log(kubelet_here, "stubborn", namespace, "ready")
    started = time.monotonic()
    api.request("DELETE", path_of("api", "v1", "namespaces", namespace, "pods", "stubborn"))
    _wait("pod stubborn gone", lambda: _get(api, namespace, "pods", "stubborn") is None)
    assert 1 <= time.monotonic() - started < 5
    assert kubelet_here.logs("stubborn", namespace) == "ready\nignoring SIGTERM\n"


def test_eviction_through_the_api_adds_disruption_target_and_deletes_gracefully(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    slow_exit = TRAPS_SIGTERM.replace("sys.exit(0)", "time.sleep(1); sys.exit(0)")
    _create_pod(api, namespace, "evicted", _pod_spec(node_name, _python(slow_exit)))
    _wait_phase(api, namespace, "evicted", "Running")
    _wait_log(kubelet_here, "evicted", namespace, "ready")
    kubelet_here.evict("evicted", namespace=namespace)
    pod = _get(api, namespace, "pods", "evicted")
    assert pod is not None and pod["metadata"].get("deletionTimestamp")
    assert _conditions(pod)["DisruptionTarget"]["reason"] == "EvictionByEvictionAPI"
    _wait("pod evicted gone", lambda: _get(api, namespace, "pods", "evicted") is None)
    assert "got SIGTERM" in kubelet_here.logs("evicted", namespace)


def test_kubelet_eviction_fails_the_pod_without_deleting_it(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    _create_pod(api, namespace, "pressure", _pod_spec(node_name, _python(TRAPS_SIGTERM)))
    _wait_phase(api, namespace, "pressure", "Running")
    _wait_log(kubelet_here, "pressure", namespace, "ready")
    kubelet_here.evict("pressure", namespace=namespace, via_api=False)
    pod = _wait_phase(api, namespace, "pressure", "Failed")
    assert pod["status"]["reason"] == "Evicted" and "low on resource" in pod["status"]["message"]
    assert _conditions(pod)["DisruptionTarget"]["reason"] == "TerminationByKubelet"
    assert not pod["metadata"].get("deletionTimestamp")
    assert _terminated(pod)["exitCode"] == 0  # it exited on SIGTERM; the pod is Failed all the same
    assert "got SIGTERM" in kubelet_here.logs("pressure", namespace)


def test_unknown_image_backs_off_and_the_pod_stays_pending(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    container = {"name": "main", "image": "registry.invalid/nope:1", "command": ["true"]}
    _create_pod(api, namespace, "no-image", _pod_spec(node_name, container))

    def backoff() -> Obj | None:
        pod = _get(api, namespace, "pods", "no-image") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        waiting = (statuses[0].get("state") or {}).get("waiting") or {}
        return pod if waiting.get("reason") == "ImagePullBackOff" else None

    pod = _wait("ImagePullBackOff", backoff)
    assert pod["status"]["phase"] == "Pending"
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert message.startswith('Back-off pulling image "registry.invalid/nope:1": ErrImagePull: ')


def test_real_scheduler_preemption_ends_the_victim_and_starts_the_preemptor(
    control_plane: ControlPlane, api: Api, namespace: str, node_name: str, tmp_path: pathlib.Path
) -> None:
    gpu = {"nvidia.com/gpu": "1"}
    for name, value in (("low", 10), ("high", 1000)):
        try:
            api.request(
                "POST",
                "/apis/scheduling.k8s.io/v1/priorityclasses",
                {"metadata": {"name": f"kubelet-test-{name}"}, "value": value},
            )
        except ApiError as exc:
            if exc.code != 409:
                raise
    node = Node(node_name, extended=gpu)
    images = {PYTHON: "process", SIMULATED: "simulated"}
    with ProcessKubelet(
        control_plane.api_client(), tmp_path, nodes=(node,), images=images, path_prefix=(VENV_BIN,)
    ) as kubelet:
        slow_exit = TRAPS_SIGTERM.replace("sys.exit(0)", "time.sleep(1); sys.exit(0)")
        victim = _python(slow_exit, resources={"requests": gpu, "limits": gpu})
        _create_pod(
            api, namespace, "victim", _pod_spec(node_name, victim, priorityClassName="kubelet-test-low")
        )
        _wait_phase(api, namespace, "victim", "Running")
        _wait_log(kubelet, "victim", namespace, "ready")
        preemptor = {"name": "main", "image": SIMULATED, "resources": {"requests": gpu, "limits": gpu}}
        spec = _pod_spec(node_name, preemptor, priorityClassName="kubelet-test-high")
        _create_pod(api, namespace, "preemptor", spec)

        def disrupted() -> Obj | None:  # the scheduler adds the condition, then deletes the pod
            pod = _get(api, namespace, "pods", "victim")
            return pod if pod and pod["metadata"].get("deletionTimestamp") else None

        pod = _wait("the victim preempted", disrupted)
        assert _conditions(pod)["DisruptionTarget"]["reason"] == "PreemptionByScheduler"
        _wait("the victim gone", lambda: _get(api, namespace, "pods", "victim") is None)
        assert "got SIGTERM" in kubelet.logs("victim", namespace)
        assert _wait_phase(api, namespace, "preemptor", "Running")["spec"]["nodeName"] == node_name
    assert not kubelet.errors, kubelet.errors


def test_pods_of_an_earlier_kubelet_are_reported_lost(
    control_plane: ControlPlane, api: Api, namespace: str, node_name: str, tmp_path: pathlib.Path
) -> None:
    with _kubelet(control_plane, tmp_path / "first", node_name):
        _create_pod(api, namespace, "orphan", _pod_spec(node_name, {"name": "main", "image": SIMULATED}))
        _wait_phase(api, namespace, "orphan", "Running")
    with _kubelet(control_plane, tmp_path / "second", node_name) as second:  # the same Node, restarted
        pod = _wait_phase(api, namespace, "orphan", "Failed")
        terminated = _terminated(pod)
        assert (terminated["exitCode"], terminated["reason"]) == (137, "ContainerStatusUnknown")
    assert not second.errors, second.errors


# -- simulated containers ---------------------------------------------------------------------------------
def test_simulated_containers_end_by_runner_or_terminate(
    control_plane: ControlPlane, api: Api, namespace: str, node_name: str, tmp_path: pathlib.Path
) -> None:
    def runner(pod: Obj) -> ContainerResult | None:
        if pod["metadata"]["name"] == "scripted":
            return ContainerResult(exit_code=42, message="scripted failure", logs="some log\n")
        return None  # held Running until terminate()

    with _kubelet(control_plane, tmp_path, node_name, runner=runner) as kubelet:
        sim = {"name": "main", "image": SIMULATED}
        _create_pod(api, namespace, "scripted", _pod_spec(node_name, sim))
        _create_pod(api, namespace, "held", _pod_spec(node_name, sim))
        scripted = _wait_phase(api, namespace, "scripted", "Failed")
        assert (_terminated(scripted)["exitCode"], _terminated(scripted)["message"]) == (
            42,
            "scripted failure",
        )
        assert kubelet.logs("scripted", namespace) == "some log\n"
        _wait_phase(api, namespace, "held", "Running")
        kubelet.terminate("held", exit_code=0, message='{"ok": true}', namespace=namespace)
        held = _get(api, namespace, "pods", "held")  # terminate() returns once the status is posted
        assert held is not None and held["status"]["phase"] == "Succeeded"
        assert _terminated(held)["message"] == '{"ok": true}'
    assert not kubelet.errors, kubelet.errors


# -- Jobs and volumes ---------------------------------------------------------------------------------
def _job(name: str, node: str, container: Obj, **spec: Any) -> Obj:
    template_spec = _pod_spec(node, container, **spec.pop("pod", {}))
    return {
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": template_spec}, **spec},
    }


def _job_condition(api: Api, namespace: str, name: str) -> str | None:
    job = _get(api, namespace, "jobs", name, group="apis/batch/v1") or {}
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition["type"]
    return None


def test_job_from_the_real_job_controller_runs_to_complete(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    script = "import os; open('/dev/termination-log', 'w').write(os.environ['JOB_COMPLETION_INDEX'])"
    job = _job("indexed", node_name, _python(script), completions=2, parallelism=2, completionMode="Indexed")
    _create(api, namespace, "jobs", job, group="apis/batch/v1")
    assert _wait("job indexed finished", lambda: _job_condition(api, namespace, "indexed")) == "Complete"
    pods = kubelet_here.wait_for_pods("batch.kubernetes.io/job-name=indexed", 2, namespace=namespace)
    assert sorted(_terminated(p)["message"] for p in pods) == ["0", "1"]


def test_claim_is_provisioned_bound_and_outlives_its_pods(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    _create(api, namespace, "persistentvolumeclaims", claim)
    bound = _wait(
        "claim bound",
        lambda: (
            (_get(api, namespace, "persistentvolumeclaims", "data") or {}).get("status", {}).get("phase")
            == "Bound"
        ),
    )
    assert bound
    volume_name = _get(api, namespace, "persistentvolumeclaims", "data")["spec"]["volumeName"]  # type: ignore[index]
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    data = f"/kubelet-test-data-{uuid.uuid4().hex[:6]}"  # missing under /: made in the pod's namespace
    mounts = [{"name": "data", "mountPath": str(data)}]
    write = _python(f"open('{data}/kept.txt', 'w').write('from the first pod')", volumeMounts=mounts)
    _create_pod(api, namespace, "writer", _pod_spec(node_name, write, volumes=[volume]))
    assert _wait_phase(api, namespace, "writer", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    api.request("DELETE", path_of("api", "v1", "namespaces", namespace, "pods", "writer"))
    _wait("writer gone", lambda: _get(api, namespace, "pods", "writer") is None)
    read = _python(
        f"open('/dev/termination-log', 'w').write(open('{data}/kept.txt').read())", volumeMounts=mounts
    )
    _create_pod(api, namespace, "reader", _pod_spec(node_name, read, volumes=[volume]))
    assert (
        _terminated(_wait_phase(api, namespace, "reader", "Succeeded", "Failed"))["message"]
        == "from the first pod"
    )
    pv = api.request("GET", path_of("api", "v1", "persistentvolumes", volume_name))
    directory = pathlib.Path(pv["spec"]["hostPath"]["path"])
    assert (directory / "kept.txt").read_text() == "from the first pod"
    assert not pathlib.Path(data).exists()
    api.request("DELETE", path_of("api", "v1", "namespaces", namespace, "pods", "reader"))
    _wait("reader gone", lambda: _get(api, namespace, "pods", "reader") is None)
    api.request("DELETE", path_of("api", "v1", "namespaces", namespace, "persistentvolumeclaims", "data"))

    def volume_gone() -> bool:
        try:
            api.request("GET", path_of("api", "v1", "persistentvolumes", volume_name))
        except ApiError as exc:
            return exc.code == 404
        return False

    _wait("the released volume deleted", volume_gone)
    assert not directory.exists()


def test_indexed_job_pods_reach_each_other_by_hostname_and_subdomain(
    kubelet_here: ProcessKubelet, api: Api, namespace: str, node_name: str
) -> None:
    service = {
        "metadata": {"name": "peers"},
        "spec": {
            "clusterIP": "None",
            "selector": {"batch.kubernetes.io/job-name": "ring"},
            "ports": [{"port": 29511}],
        },
    }
    _create(api, namespace, "services", service)
    script = (
        "import os, socket, time\n"
        "index = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        "if index == 0:\n"
        "    server = socket.create_server((socket.gethostbyname('ring-0.peers'), 29511))\n"
        "    conn, _ = server.accept()\n"
        "    message = conn.recv(100).decode()\n"
        "else:\n"
        "    for _ in range(200):\n"
        "        try:\n"
        "            conn = socket.create_connection(('ring-0.peers', 29511), timeout=1); break\n"
        "        except OSError:\n"
        "            time.sleep(0.1)\n"
        "    conn.sendall(f'hello from {socket.gethostname()}'.encode())\n"
        "    fqdn = 'ring-0.peers.' + os.environ['NS'] + '.svc.cluster.local'\n"
        "    message = 'sent to ' + socket.gethostbyname(fqdn)\n"
        "open('/dev/termination-log', 'w').write(message)\n"
    )
    env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    job = _job(
        "ring",
        node_name,
        _python(script, env=env),
        completions=2,
        parallelism=2,
        completionMode="Indexed",
        pod={"subdomain": "peers"},
    )
    _create(api, namespace, "jobs", job, group="apis/batch/v1")
    assert (
        _wait("job ring finished", lambda: _job_condition(api, namespace, "ring"), timeout=60) == "Complete"
    )
    first, second = kubelet_here.wait_for_pods("batch.kubernetes.io/job-name=ring", 2, namespace=namespace)
    assert first["spec"]["hostname"] == "ring-0"
    assert _terminated(first)["message"] == "hello from ring-1"
    assert _terminated(second)["message"] == f"sent to {first['status']['podIP']}"
