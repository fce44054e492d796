"""Two operators side by side on one control plane: the burst's CPU of A against B, paired.

On a shared machine the same operator's burst CPU moves by 20% or more from one run to the next
(other virtual machines on the host; see docs/PERFORMANCE.md), so a change of a few percent cannot be
seen by running before and after one after the other. This script runs both at once instead: operator
A (``--a-path``, another checkout, e.g. a ``git worktree`` of the baseline; default this one) watches
namespace ``bench-a``, operator B (this checkout) ``bench-b``. Each round creates ``--runs`` runs in
each namespace at once, interleaved (a-0, b-0, a-1, b-1, ...), waits until every Job exists and the
operators are idle again, and reads each operator's CPU from /proc. Both meet the same load at the same
moments; the ratio B/A of each round is the figure to compare (its spread over the rounds says how far
to trust it). Runs stay between rounds, so later rounds also see the larger heaps of more runs.

    .venv/bin/python tools/bench_burst_ab.py --a-path /tmp/base --runs 500 --rounds 3

``--a-env`` / ``--b-env KEY=VALUE`` set an environment variable of one operator only (the same code
with a different setting). Both operators use this checkout's CRD. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kubernetes
from bench_operator import (
    BENCH_CONTROLLERS,
    CRDS_DIR,
    GROUP,
    PLURAL,
    VERSION,
    JobWatch,
    cpu_seconds,
    emit,
    free_port,
    peak_rss_mib,
    run_manifest,
    start_operator,
)

from tests.cluster.controlplane import ControlPlane


class Operator:
    """One ``python -m tunix_operator`` watching one namespace."""

    def __init__(self, plane: ControlPlane, workdir: pathlib.Path, label: str, path: str | None,
                 env: dict[str, str]) -> None:  # fmt: skip
        self.namespace = f"bench-{label}"
        self.process = start_operator(
            plane, workdir, name=f"operator-{label}", user=f"tunix-bench-operator-{label}",
            namespace=self.namespace, metrics_port=free_port(), env=env, checkout=path,
        )  # fmt: skip

    def cpu(self) -> tuple[float, float]:
        """(process CPU seconds, its main thread's: kopf's event loop)."""
        pid = self.process.pid
        return cpu_seconds(pid), cpu_seconds(pid, pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def parse_env(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def settle(operators: list[Operator], quiet_seconds: float, timeout: float = 120) -> None:
    """Wait until no operator used more than 2% of a core over ``quiet_seconds``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [o.cpu()[0] for o in operators]
        time.sleep(quiet_seconds)
        if all(o.cpu()[0] - b < 0.02 * quiet_seconds for o, b in zip(operators, before, strict=True)):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a-path", default=None, help="operator A's checkout (default: this one)")
    parser.add_argument("--a-env", action="append", default=[], help="KEY=VALUE for operator A only")
    parser.add_argument("--b-env", action="append", default=[], help="KEY=VALUE for operator B only")
    parser.add_argument("--runs", type=int, default=500, help="runs per operator per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="threads creating runs")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-ab-"))
    plane = ControlPlane(
        workdir / "cluster", controllers=BENCH_CONTROLLERS, crds=sorted(CRDS_DIR.glob("*.yaml"))
    )
    operators: list[Operator] = []
    rounds: list[dict[str, Any]] = []
    try:
        plane.start()
        admin = plane.api_client()
        custom = kubernetes.client.CustomObjectsApi(admin)
        core = kubernetes.client.CoreV1Api(admin)
        batch = kubernetes.client.BatchV1Api(admin)
        for label, path, env in (("a", args.a_path, args.a_env), ("b", None, args.b_env)):
            core.create_namespace({"metadata": {"name": f"bench-{label}"}})
            operators.append(Operator(plane, workdir, label, path, parse_env(env)))
        watches = [JobWatch(batch, o.namespace) for o in operators]
        time.sleep(3)  # kopf's initial listings

        def create(item: tuple[Operator, str]) -> None:
            operator, name = item
            body = run_manifest(name, namespace=operator.namespace)
            custom.create_namespaced_custom_object(GROUP, VERSION, operator.namespace, PLURAL, body)

        for r in range(args.rounds):
            names = [f"r{r}-{i}" for i in range(args.runs)]
            items = [(o, n) for n in names for o in operators]  # interleaved: a, b, a, b, ...
            before = [o.cpu() for o in operators]
            started = time.monotonic()
            load = os.getloadavg()[0]
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(create, items))
            walls = []
            for watch in watches:
                watch.wait([f"{n}-0" for n in names], timeout=900)
                walls.append(round(max(watch.seen[f"{n}-0"] for n in names) - started, 2))
            settle(operators, quiet_seconds=2.0)
            after = [o.cpu() for o in operators]
            cpu = [round(z[0] - a[0], 3) for a, z in zip(before, after, strict=True)]
            main_cpu = [round(z[1] - a[1], 3) for a, z in zip(before, after, strict=True)]
            rounds.append({
                "round": r, "runs_per_operator": args.runs,
                "cpu_seconds_a_b": cpu, "main_thread_cpu_seconds_a_b": main_cpu,
                "seconds_to_all_jobs_a_b": walls, "ratio_b_over_a": round(cpu[1] / cpu[0], 3),
                "main_thread_ratio_b_over_a": round(main_cpu[1] / main_cpu[0], 3),
                "peak_rss_mib_a_b": [round(peak_rss_mib(o.process.pid), 1) for o in operators],
                "load_average_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
            })  # fmt: skip
            print(json.dumps(rounds[-1]), file=sys.stderr)
        for watch in watches:
            watch.stop()
    finally:
        for operator in operators:
            operator.stop()
        plane.stop()
    ratios = [r["ratio_b_over_a"] for r in rounds]
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rounds": rounds,
        "ratio_b_over_a_mean": round(statistics.mean(ratios), 3) if ratios else None,
        "ratio_b_over_a_min_max": [min(ratios), max(ratios)] if ratios else None,
    }
    emit(result, args.out)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
