#!/usr/bin/env python3
"""A real local Kubernetes cluster for trying tunix-rt by hand: ``up``, ``status`` and ``down``.

``up`` starts, in the background, the control plane the tests use (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; built by ``make cluster``) and the process kubelet with
``--nodes`` nodes (``--gpus`` nvidia.com/gpu each) that runs the trainer image as local processes of
this venv; it installs the CRDs and prints the admin kubeconfig. ``down`` stops everything; logs stay
in ``<dir>/logs``.

    python tools/local_cluster.py up && export KUBECONFIG=.cache/local-cluster/admin.kubeconfig
    kubectl get nodes; python tools/local_cluster.py down
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DIR = REPO / ".cache" / "local-cluster"
TRAINER_IMAGES = ("tunix/trainer:local", "tunix-trainer:0.1.0-cpu")


def _state(directory: pathlib.Path) -> dict:
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def serve(args: argparse.Namespace) -> int:
    """The background process: control plane + kubelet until SIGTERM."""
    from tests.cluster.controlplane import ControlPlane
    from tests.cluster.fixtures import CRDS_DIR
    from tests.cluster.kubelet import Node, ProcessKubelet, ensure_storage_class

    directory = pathlib.Path(args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ControlPlane(directory, crds=sorted(CRDS_DIR.glob("*.yaml"))) as plane:
        ensure_storage_class(plane.api_client())
        extended = {"nvidia.com/gpu": str(args.gpus)} if args.gpus else {}
        nodes = [Node(f"local-{i}", extended=extended) for i in range(args.nodes)]
        images = dict.fromkeys(TRAINER_IMAGES, "process")
        venv_bin = str(pathlib.Path(sys.executable).parent)
        with ProcessKubelet(plane.api_client(), directory / "kubelet", nodes=nodes, images=images,
                            path_prefix=(venv_bin,)):  # fmt: skip
            state = {"pid": os.getpid(), "url": plane.url, "kubeconfig": str(plane.admin_kubeconfig),
                     "logs": str(plane.logs_dir)}  # fmt: skip
            (directory / "state.json").write_text(json.dumps(state))
            while not stop.wait(1):
                plane.check_alive()
    (directory / "state.json").unlink(missing_ok=True)
    return 0


def up(args: argparse.Namespace) -> int:
    directory = pathlib.Path(args.dir)
    state = _state(directory)
    if state and _alive(state["pid"]):
        print(f"already up: export KUBECONFIG={state['kubeconfig']}")
        return 0
    subprocess.run([str(REPO / "tools" / "build_cluster.sh")], check=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "state.json").unlink(missing_ok=True)
    log = (directory / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", "--dir", str(directory), "--nodes", str(args.nodes),
         "--gpus", str(args.gpus)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + args.timeout
    while not (directory / "state.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"the cluster did not come up; see {directory / 'serve.log'}", file=sys.stderr)
            process.terminate()
            return 1
        time.sleep(0.5)
    state = _state(directory)
    print(f"up at {state['url']} (logs: {state['logs']})\nexport KUBECONFIG={state['kubeconfig']}")
    return 0


def status(args: argparse.Namespace) -> int:
    state = _state(pathlib.Path(args.dir))
    if state and _alive(state["pid"]):
        print(f"up at {state['url']}: export KUBECONFIG={state['kubeconfig']}")
        return 0
    print("down")
    return 1


def down(args: argparse.Namespace) -> int:
    state = _state(pathlib.Path(args.dir))
    if not state or not _alive(state["pid"]):
        print("down")
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    print("down" if not _alive(state["pid"]) else f"pid {state['pid']} still running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("up", "down", "status", "serve"))
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="state, certificates and logs")
    parser.add_argument("--nodes", type=int, default=2, help="nodes the process kubelet registers")
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity of each node")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for `up`")
    args = parser.parse_args(argv)
    return {"up": up, "down": down, "status": status, "serve": serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
