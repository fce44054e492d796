#!/usr/bin/env python3
"""kube-apiserver CPU per TunixRun write, and the CRD's CEL rules' share of it, on the real control plane.

Installs this checkout's CRD (``tunix.dev``), a copy without any ``x-kubernetes-validations``
(``nocel.tunix.dev``) and, with ``--baseline-crd``, another CRD file's schema (``baseline.tunix.dev``),
then, round after round and CRD after CRD (each round starting with the next CRD), creates
``--runs`` runs (the spec of ``tools/bench_operator.py``) and patches each one's status once (a merge
patch through the status subresource, as the operator's first reconcile does), from ``--clients``
threads. For each phase:

- ``cpu_ms``: the API server's CPU per request (/proc; moves with the shared host's load);
- ``cel_ms``: of it, the CPU in CEL validation (``cel.(*Validator).Validate`` in a CPU profile of the API
  server, ``/debug/pprof/profile``, read by ``tools/apiserver_profile.py``): the figure to compare.

    .venv/bin/python tools/bench_crd_writes.py --runs 400 --rounds 3 --baseline-crd /tmp/old-tunixrun.yaml
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from tests.cluster.controlplane import ControlPlane  # noqa: E402
from tests.cluster.fixtures import CRDS_DIR  # noqa: E402
from tools import apiserver_profile  # noqa: E402
from tools.bench_operator import cpu_seconds, emit, run_manifest  # noqa: E402

VERSION, PLURAL = "v1alpha1", "tunixruns"
CEL = "of which anywhere: CEL validation rules"
PENDING = {"phase": "Pending", "message": "0/1 pods running"}


def without_cel(node: Any) -> Any:
    """A copy of a schema with every ``x-kubernetes-validations`` removed."""
    if isinstance(node, dict):
        return {k: without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(v) for v in node]
    return node


def crd_for_group(crd: dict[str, Any], group: str, versions: list[Any] | None = None) -> dict[str, Any]:
    """``crd`` served under ``group`` (so that several variants share one API server)."""
    out = copy.deepcopy(crd)
    out["metadata"] = {"name": f"{PLURAL}.{group}"}
    out["spec"]["group"] = group
    if versions is not None:
        out["spec"]["versions"] = copy.deepcopy(versions)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: pathlib.Path) -> None:
        self.args = args
        self.workdir = workdir
        ours = yaml.safe_load((CRDS_DIR / "tunixrun.yaml").read_text())
        variants = {"tunix.dev": None, "nocel.tunix.dev": without_cel(ours["spec"]["versions"])}
        if args.baseline_crd:
            variants["baseline.tunix.dev"] = yaml.safe_load(args.baseline_crd.read_text())["spec"]["versions"]
        self.groups = list(variants)
        files = [CRDS_DIR / "tunixrun.yaml"]
        for group, versions in variants.items():
            if versions is not None:
                path = workdir / f"{group}.yaml"
                path.write_text(yaml.safe_dump(crd_for_group(ours, group, versions)))
                files.append(path)
        self.plane = ControlPlane(workdir / "cluster", crds=files, profiling=True)
        self.pool = concurrent.futures.ThreadPoolExecutor(args.clients)

    def run(self) -> dict[str, Any]:
        self.plane.start()
        client = self.plane.api_client()
        self.api = kubernetes.client.CustomObjectsApi(client)
        core = kubernetes.client.CoreV1Api(client)
        self.server = next(c.process for c in self.plane.components if c.name == "kube-apiserver")
        phases: dict[str, list[dict[str, float]]] = {}
        for round_ in range(self.args.rounds):
            namespace = f"bench-{round_}"
            core.create_namespace({"metadata": {"name": namespace}})
            names = [f"run-{i}" for i in range(self.args.runs)]
            turn = round_ % len(self.groups)  # each CRD goes first in some round: no order effect
            for group in self.groups[turn:] + self.groups[:turn]:
                phases.setdefault(f"{group} create", []).append(
                    self.phase(lambda n, g=group, ns=namespace: self.create(g, ns, n), names)
                )
                phases.setdefault(f"{group} status patch", []).append(
                    self.phase(lambda n, g=group, ns=namespace: self.patch(g, ns, n), names)
                )
        return {
            "phases": phases,
            "cel_ms_mean": {k: round(sum(p["cel_ms"] for p in v) / len(v), 3) for k, v in phases.items()},
            "cpu_ms_mean": {k: round(sum(p["cpu_ms"] for p in v) / len(v), 2) for k, v in phases.items()},
        }

    def create(self, group: str, namespace: str, name: str) -> None:
        body = run_manifest(name, namespace=namespace)
        body["apiVersion"] = f"{group}/{VERSION}"
        self.api.create_namespaced_custom_object(group, VERSION, namespace, PLURAL, body)

    def patch(self, group: str, namespace: str, name: str) -> None:
        self.api.patch_namespaced_custom_object_status(
            group, VERSION, namespace, PLURAL, name, {"status": PENDING}
        )

    def phase(self, request: Callable[[str], None], names: list[str]) -> dict[str, float]:
        """The requests from the pool, inside one CPU profile of the API server."""
        time.sleep(self.args.settle_seconds)
        profile = self.workdir / "phase.pprof"
        fetch = threading.Thread(target=self.plane.cpu_profile, args=(profile, self.args.profile_seconds))
        fetch.start()
        time.sleep(0.3)
        before, started = cpu_seconds(self.server.pid), time.monotonic()
        list(self.pool.map(request, names))
        cpu = cpu_seconds(self.server.pid) - before
        if time.monotonic() - started > self.args.profile_seconds - 0.5:
            raise SystemExit("the requests outlasted the profile: raise --profile-seconds")
        fetch.join()
        classes = apiserver_profile.classify(apiserver_profile.raw_profile(str(profile)))
        cel, profiled = classes.get(CEL, 0.0), classes["total"]
        return {
            "cpu_ms": round(1000 * cpu / len(names), 2),
            "cel_ms": round(1000 * cel / len(names), 3),
            "cel_percent_of_profile": round(100 * cel / profiled, 1) if profiled else 0.0,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=400, help="runs created (and patched) per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="threads sending the requests")
    parser.add_argument("--baseline-crd", type=pathlib.Path, default=None, help="another CRD file to compare")
    parser.add_argument("--profile-seconds", type=int, default=8, help="longer than a phase's requests take")
    parser.add_argument("--settle-seconds", type=float, default=1.5)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-crd-writes-"))
    bench = Bench(args, workdir)
    try:
        result = bench.run()
    finally:
        bench.plane.stop()
        bench.pool.shutdown()
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    emit(result, args.out)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
