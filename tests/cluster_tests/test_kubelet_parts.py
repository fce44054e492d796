"""The process kubelet's pure parts: environment, command lines, addresses and hosts files, status,
termination messages, volumes as files, and the namespace shim (no control plane needed)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import threading

import pytest

from tests.cluster import podenv, podnet, podstatus, volumes
from tests.cluster.containers import shim_command
from tests.cluster.nodes import NOT_READY_TAINT, Node, node_manifest, node_status, without_taint
from tests.cluster.podstatus import ContainerState
from tests.cluster.provisioner import STORAGE_CLASS, storage_class_manifest, volume_manifest
from tests.cluster.rawapi import Api, list_watch

INDEX = "batch.kubernetes.io/job-completion-index"


def _pod(**spec: object) -> dict:
    return {
        "metadata": {
            "name": "run-0-abc",
            "namespace": "team",
            "uid": "0f6c1b1e-uid",
            "labels": {"app": "tunix", INDEX: "1"},
            "annotations": {INDEX: "1", "note": "x"},
        },
        "spec": {"nodeName": "node-a", "serviceAccountName": "trainer", **spec},
    }


def _secret(**data: str) -> dict:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


# -- environment ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),  # undefined names stay as written
        ("$$(A)", "$(A)"),  # $$ escapes
        ("a$$b", "a$b"),
        ("$(A", "$(A"),  # no closing parenthesis
        ("$x$", "$x$"),
        ("$(A)$(A)", "11"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert podenv.expand(text, {"A": "1"}) == expected


def test_container_env_resolves_values_field_refs_secrets_and_config_maps() -> None:
    objects = {
        ("Secret", "creds"): _secret(token="s3cr3t", **{"bad key": "skipped"}),
        ("ConfigMap", "settings"): {"data": {"LEVEL": "debug", "MODE": "fast"}},
    }
    container = {
        "envFrom": [
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}},
        ],
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IDX", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "NONE", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}},
            {"name": "GREETING", "value": "$(POD) on $(NODE) $(UNSET)"},
        ],
    }
    env = podenv.container_env(
        _pod(),
        container,
        lookup=lambda kind, name: objects.get((kind, name)),
        pod_ip="127.9.8.7",
        host_ip="127.0.0.1",
        base={"PATH": "/bin", "LVL": "overridden"},
    )
    assert env == {
        "PATH": "/bin",
        "CFG_LEVEL": "debug",
        "CFG_MODE": "fast",
        "token": "s3cr3t",
        "POD": "run-0-abc",
        "NS": "team",
        "UID": "0f6c1b1e-uid",
        "IDX": "1",
        "APP": "tunix",
        "IP": "127.9.8.7",
        "NODE": "node-a",
        "TOKEN": "s3cr3t",
        "LVL": "debug",
        "GREETING": "run-0-abc on node-a $(UNSET)",
    }


@pytest.mark.parametrize(
    ("var", "message"),
    [
        ({"secretKeyRef": {"name": "gone", "key": "k"}}, 'secret "gone" not found'),
        (
            {"configMapKeyRef": {"name": "settings", "key": "nope"}},
            "couldn't find key nope in ConfigMap team/settings",
        ),
    ],
)
def test_container_env_missing_required_reference_is_a_config_error(var: dict, message: str) -> None:
    objects = {("ConfigMap", "settings"): {"data": {"LEVEL": "debug"}}}
    container = {"env": [{"name": "X", "valueFrom": var}]}
    with pytest.raises(podenv.ContainerConfigError, match=message):
        podenv.container_env(
            _pod(), container, lookup=lambda kind, name: objects.get((kind, name)), pod_ip="", host_ip=""
        )


def test_resource_field_ref_rounds_up_and_falls_back_to_allocatable() -> None:
    container = {"resources": {"limits": {"memory": "1536Mi"}, "requests": {"cpu": "250m"}}}
    assert podenv.resource_value(container, {"resource": "limits.memory", "divisor": "1Gi"}, {}) == "2"
    assert podenv.resource_value(container, {"resource": "requests.cpu", "divisor": "1m"}, {}) == "250"
    assert podenv.resource_value(container, {"resource": "limits.cpu"}, {"cpu": "8"}) == "8"


def test_command_line_expands_variables_and_needs_a_command() -> None:
    container = {"command": ["tunix-train", "--run", "$(RUN)"], "args": ["$$(RUN)", "$(MISSING)"]}
    assert podenv.command_line(container, {"RUN": "r1"}) == [
        "tunix-train",
        "--run",
        "r1",
        "$(RUN)",
        "$(MISSING)",
    ]
    with pytest.raises(podenv.ContainerCreateError):
        podenv.command_line({"args": ["x"]}, {})


# -- addresses and names -------------------------------------------------------------------------------
def test_loopback_addresses_are_stable_distinct_and_off_the_host_address() -> None:
    keys = [f"dns/ns/svc/job-{i}" for i in range(200)]
    addresses = [podnet.loopback_address(k) for k in keys]
    assert addresses == [podnet.loopback_address(k) for k in keys]
    assert len(set(addresses)) == len(keys)
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert ip in ipaddress.ip_network("127.0.0.0/8")
        assert not address.startswith("127.0.") and not address.endswith((".0", ".255"))


def test_an_indexed_pod_address_is_known_to_its_peers_before_it_starts() -> None:
    job = {"metadata": {"name": "run-0"}, "spec": {"completionMode": "Indexed", "completions": 3}}
    peers = podnet.indexed_hostnames(job)
    assert peers == ["run-0-0", "run-0-1", "run-0-2"]
    pod = _pod(hostname="run-0-1", subdomain="run-hosts")
    ip = podnet.pod_address(pod)
    hosts = podnet.render_hosts(podnet.host_entries(pod, ip, peers))
    lines = {line.split("\t")[1]: line.split("\t") for line in hosts.splitlines() if not line.startswith("#")}
    assert lines["run-0-1.run-hosts.team.svc.cluster.local"] == [
        ip,
        "run-0-1.run-hosts.team.svc.cluster.local",
        "run-0-1.run-hosts.team.svc",
        "run-0-1.run-hosts.team",
        "run-0-1.run-hosts",
        "run-0-1",
    ]
    peer = _pod(hostname="run-0-0", subdomain="run-hosts")
    peer["metadata"]["uid"] = "another"
    assert lines["run-0-0.run-hosts.team.svc.cluster.local"][0] == podnet.pod_address(peer)
    assert "run-0-0.run-hosts" in lines["run-0-0.run-hosts.team.svc.cluster.local"]
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")


def test_a_pod_without_subdomain_gets_its_uid_address_and_host_aliases() -> None:
    pod = _pod(hostAliases=[{"ip": "127.5.5.5", "hostnames": ["s3.local"]}])
    ip = podnet.pod_address(pod)
    assert ip == podnet.loopback_address("uid/0f6c1b1e-uid")
    hosts = podnet.render_hosts(podnet.host_entries(pod, ip, ["ignored-0"]))
    assert f"{ip}\trun-0-abc\n" in hosts and "127.5.5.5\ts3.local\n" in hosts and "ignored" not in hosts
    assert podnet.indexed_hostnames({"metadata": {"name": "j"}, "spec": {"completions": 2}}) == []


# -- status and messages -------------------------------------------------------------------------------
def test_termination_message_keeps_the_last_4_kib_of_the_file() -> None:
    content = b"a" * 5000 + b"END"
    message = podstatus.termination_message(
        content, exit_code=1, policy="FallbackToLogsOnError", log_text="log"
    )
    assert len(message) == podstatus.MAX_MESSAGE_BYTES and message.endswith("END")


def test_fallback_to_logs_only_on_error_with_an_empty_file() -> None:
    log = "".join(f"line {i}\n" for i in range(200))
    fallback = podstatus.termination_message(b"", exit_code=3, policy="FallbackToLogsOnError", log_text=log)
    assert fallback.splitlines() == [f"line {i}" for i in range(120, 200)]  # 80 lines, 720 bytes < 2 KiB
    assert podstatus.termination_message(b"", exit_code=0, policy="FallbackToLogsOnError", log_text=log) == ""
    assert podstatus.termination_message(b"", exit_code=3, policy="File", log_text=log) == ""
    cannot = podstatus.termination_message(
        b"", exit_code=128, policy="FallbackToLogsOnError", log_text=log, cannot_run=True
    )
    assert cannot == ""
    wide = "x" * 100 + "\n"
    tail = podstatus.log_tail(wide * 80)
    assert len(tail.encode()) == podstatus.FALLBACK_LOG_BYTES and tail.endswith(wide)


def test_phase_and_conditions_follow_the_containers() -> None:
    running = ContainerState("a", "img", started_at="t0")
    ok = ContainerState("a", "img", started_at="t0", exit_code=0, finished_at="t1")
    bad = ContainerState("b", "img", started_at="t0", exit_code=2, finished_at="t1")
    waiting = ContainerState("b", "img", waiting_reason="ImagePullBackOff", message="m")
    assert podstatus.phase([running], sandbox_ready=True) == "Running"
    assert podstatus.phase([running, waiting], sandbox_ready=True) == "Pending"
    assert podstatus.phase([ok], sandbox_ready=True) == "Succeeded"
    assert podstatus.phase([ok, bad], sandbox_ready=True) == "Failed"
    assert podstatus.phase([running, ok], sandbox_ready=True) == "Running"
    first = podstatus.conditions([running], [], sandbox_ready=True, at="t1")
    assert {c["type"]: c["status"] for c in first} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    same = podstatus.conditions([running], first, sandbox_ready=True, at="t2")
    assert all(c["lastTransitionTime"] == "t1" for c in same)
    done = {c["type"]: c for c in podstatus.conditions([ok], same, sandbox_ready=True, at="t3")}
    assert done["Ready"]["status"] == "False" and done["Ready"]["reason"] == "PodCompleted"
    assert done["Ready"]["lastTransitionTime"] == "t3" and done["Initialized"]["lastTransitionTime"] == "t1"
    wire = bad.to_wire()
    assert wire["state"]["terminated"]["reason"] == "Error" and wire["ready"] is False
    assert waiting.to_wire()["state"] == {"waiting": {"reason": "ImagePullBackOff", "message": "m"}}


def test_status_patch_carries_addresses_only_once_the_sandbox_exists() -> None:
    pod = _pod()
    state = [ContainerState("a", "img", waiting_reason="ErrImagePull")]
    pending = podstatus.status_patch(
        pod, state, pod_ip="127.1.2.3", host_ip="127.0.0.1", sandbox_ready=False, started="t0"
    )["status"]
    assert pending["phase"] == "Pending" and "podIP" not in pending and pending["hostIP"] == "127.0.0.1"
    running = [ContainerState("a", "img", started_at="t0")]
    status = podstatus.status_patch(
        pod, running, pod_ip="127.1.2.3", host_ip="127.0.0.1", sandbox_ready=True, started="t0"
    )["status"]
    assert status["podIPs"] == [{"ip": "127.1.2.3"}] and status["phase"] == "Running"


# -- nodes and volumes provisioned -----------------------------------------------------------------------
def test_node_manifest_and_status_advertise_extended_resources() -> None:
    node = Node(
        "gpu-1",
        extended={"nvidia.com/gpu": "8"},
        labels={"pool": "a"},
        taints=({"key": "gpu", "value": "yes", "effect": "NoSchedule"},),
    )
    manifest = node_manifest(node)
    assert manifest["metadata"]["labels"]["kubernetes.io/hostname"] == "gpu-1"
    assert manifest["metadata"]["labels"]["pool"] == "a"
    assert manifest["spec"]["taints"] == [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]
    status = node_status(node, "t1", "t0")["status"]
    assert status["allocatable"] == {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "8"}
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    taints = [{"key": NOT_READY_TAINT, "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoSchedule"}]
    assert without_taint(taints, NOT_READY_TAINT) == [{"key": "gpu", "effect": "NoSchedule"}]


def test_provisioned_volume_is_a_directory_claimed_by_its_claim(tmp_path: pathlib.Path) -> None:
    claim = {
        "metadata": {"name": "ckpt", "namespace": "team", "uid": "u-1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
    }
    pv = volume_manifest(claim, storage_class_manifest(), tmp_path)
    assert pv["metadata"]["name"] == "pvc-u-1"
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "u-1")
    assert pv["spec"]["claimRef"]["uid"] == "u-1" and pv["spec"]["storageClassName"] == STORAGE_CLASS
    assert (
        pv["spec"]["capacity"] == {"storage": "5Gi"}
        and pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    )


def test_prepare_volumes_writes_files_and_resolves_claims(tmp_path: pathlib.Path) -> None:
    objects = {
        ("ConfigMap", "team", "cfg"): {"data": {"run.yaml": "steps: 3\n", "other": "x"}},
        ("Secret", "team", "creds"): _secret(key="v"),
        ("PersistentVolumeClaim", "team", "ckpt"): {
            "spec": {"volumeName": "pvc-1"},
            "status": {"phase": "Bound"},
        },
        ("PersistentVolume", "", "pvc-1"): {"spec": {"hostPath": {"path": str(tmp_path / "pv")}}},
    }
    tokens = []

    def token(account: str, audience: str, seconds: int) -> str:
        tokens.append((account, audience, seconds))
        return "jwt"

    pod = _pod(
        volumes=[
            {
                "name": "config",
                "configMap": {"name": "cfg", "items": [{"key": "run.yaml", "path": "conf/run.yaml"}]},
            },
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}},
            {
                "name": "api",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "ca.crt"}]}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                                ]
                            }
                        },
                    ]
                },
            },
        ]
    )
    ctx = volumes.PodContext(
        tmp_path / "pod", lambda k, ns, n: objects.get((k, ns, n)), token, "127.1.1.1", ""
    )
    paths = volumes.prepare_volumes(pod, ctx)
    assert (paths["config"] / "conf" / "run.yaml").read_text() == "steps: 3\n"
    assert not (paths["config"] / "other").exists()
    assert (paths["creds"] / "key").read_bytes() == b"v" and (
        paths["creds"] / "key"
    ).stat().st_mode & 0o777 == 0o400
    assert paths["scratch"].is_dir() and not any(paths["scratch"].iterdir())
    assert paths["checkpoints"] == tmp_path / "pv"
    assert [(p.name, p.read_text()) for p in sorted(paths["api"].iterdir())] == [
        ("ca.crt", "x"),
        ("namespace", "team"),
        ("token", "jwt"),
    ]
    assert tokens == [("trainer", "", 3607)]
    container = {
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/tunix"},
            {"name": "checkpoints", "mountPath": "/checkpoints", "subPath": "run-1"},
        ]
    }
    assert volumes.container_mounts(pod, container, paths) == [
        {"source": str(paths["config"]), "target": "/etc/tunix", "readOnly": True},
        {"source": str(tmp_path / "pv" / "run-1"), "target": "/checkpoints", "readOnly": False},
    ]


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
        ({"persistentVolumeClaim": {"claimName": "ckpt"}}, 'persistentvolumeclaim "ckpt" is not bound'),
        ({"configMap": {"name": "cfg", "items": [{"key": "k", "path": "k"}]}}, "non-existent config key: k"),
    ],
)
def test_volumes_not_ready_keep_the_pod_waiting(tmp_path: pathlib.Path, volume: dict, message: str) -> None:
    objects = {
        ("ConfigMap", "team", "cfg"): {"data": {}},
        ("PersistentVolumeClaim", "team", "ckpt"): {"spec": {}},
    }
    ctx = volumes.PodContext(tmp_path, lambda k, ns, n: objects.get((k, ns, n)), lambda *a: "", "", "")
    with pytest.raises(volumes.VolumeNotReady, match=message):
        volumes.prepare_volumes(_pod(volumes=[{"name": "v", **volume}]), ctx)
    optional = {"name": "v", "configMap": {"name": "nope", "optional": True}}
    assert volumes.prepare_volumes(_pod(volumes=[optional]), ctx)["v"].is_dir()


# -- the namespace shim --------------------------------------------------------------------------------
needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for mount namespaces",
)


def _run_shim(tmp_path: pathlib.Path, spec: dict, path: str) -> subprocess.CompletedProcess:
    spec = {"scratch": str(tmp_path), "startError": str(tmp_path / "start-error"), **spec}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    command = shim_command(tmp_path / "spec.json")
    return subprocess.run(command, capture_output=True, text=True, env={"PATH": path})


@needs_namespaces
def test_shim_binds_files_and_volumes_sets_hostname_and_execs(tmp_path: pathlib.Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.44.0.9\tpeer-0.svc\n")
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "run.yaml").write_text("hello")
    message = tmp_path / "termination-log"
    message.write_text("")
    target = tmp_path / "mnt" / "deep" / "config"  # missing mount points: made in this namespace only
    at_root = f"/tunix-shim-test-{os.getpid()}"  # missing under /: the shim shadows / and chroots
    script = (
        "import socket, pathlib, os;"
        "print(socket.gethostname(), open('/etc/hosts').read().split()[1],"
        f" open('{target}/run.yaml').read(), open('{at_root}/run.yaml').read(), os.getcwd());"
        f"pathlib.Path('{tmp_path}/msg').write_text('done')"
    )
    spec = {
        "mounts": [
            {"source": str(hosts), "target": "/etc/hosts"},
            {"source": str(volume), "target": str(target), "readOnly": True},
            {"source": str(volume), "target": at_root},
            {"source": str(hosts), "target": f"{at_root}/sub/hosts"},  # inside a volume: made in the volume
            {"source": str(message), "target": str(tmp_path / "msg")},
        ],
        "hostname": "run-0-1",
        "argv": ["python3", "-c", script],
        "cwd": str(tmp_path / "work"),
    }
    out = _run_shim(tmp_path, spec, os.environ["PATH"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["run-0-1", "peer-0.svc", "hello", "hello", str(tmp_path / "work")]
    assert message.read_text() == "done"  # written through the bind mount
    for made in (tmp_path / "msg", tmp_path / "mnt", tmp_path / "work", pathlib.Path(at_root)):
        assert not made.exists(), made  # nothing made on the machine
    assert (volume / "sub" / "hosts").read_text() == ""  # the mount point made inside the volume
    assert "peer-0.svc" not in pathlib.Path("/etc/hosts").read_text()


@needs_namespaces
def test_shim_reports_a_command_that_cannot_start(tmp_path: pathlib.Path) -> None:
    out = _run_shim(
        tmp_path,
        {"mounts": [], "hostname": "h", "argv": ["no-such-binary-xyz"], "cwd": str(tmp_path)},
        "/usr/bin:/bin",
    )
    assert out.returncode == 128
    assert "no-such-binary-xyz" in (tmp_path / "start-error").read_text()


# -- list+watch ----------------------------------------------------------------------------------------
class _FakeApi:
    """Two lists (resourceVersion 10, then 20) and two watches: the first ends in 410 Gone."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.lists = [
            {"metadata": {"resourceVersion": "10"}, "items": [_obj("a", "9")]},
            {"metadata": {"resourceVersion": "20"}, "items": [_obj("b", "19")]},
        ]
        self.watched_from: list[str] = []

    def request(self, method: str, path: str, query: dict | None = None) -> dict:
        return self.lists.pop(0)

    def watch(self, path: str, version: str, query: dict | None = None):
        self.watched_from.append(version)
        if version == "10":
            yield {"type": "MODIFIED", "object": _obj("a", "11")}
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}
            yield {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}
        else:
            yield {"type": "ADDED", "object": _obj("c", "21")}
            self.stop.set()


def _obj(name: str, version: str) -> dict:
    return {"metadata": {"name": name, "resourceVersion": version}}


def test_list_watch_resumes_from_its_version_and_relists_on_410_gone() -> None:
    stop = threading.Event()
    api = _FakeApi(stop)
    seen: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    list_watch(
        api,
        "/api/v1/pods",
        on_list=lambda items: seen.extend(("LIST", i["metadata"]["name"]) for i in items),
        on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
        stop=stop,
        errors=errors,
    )
    assert seen == [("LIST", "a"), ("MODIFIED", "a"), ("LIST", "b"), ("ADDED", "c")]
    assert api.watched_from == ["10", "20"]
    assert errors == []


class _EndedStream:
    """A watch response whose stream ended (its connection back in the pool) just before the cut."""

    def __init__(self) -> None:
        self.cuts = 0

    def shutdown(self) -> None:
        self.cuts += 1
        raise RuntimeError("Cannot shutdown as connection has already been released to the pool")


def test_closing_the_streams_tolerates_one_that_ended_meanwhile() -> None:
    """The race behind a CI failure: a watch ended between close_streams' copy of the set and its cut;
    urllib3's RuntimeError used to abort the kubelet's stop, leaving its Nodes Ready for later pods."""
    import kubernetes

    api = Api(kubernetes.client.ApiClient(), user_agent="test")
    ended = _EndedStream()
    api._streams.add(ended)
    api.close_streams()  # no error
    assert ended.cuts == 1
    api.close()
