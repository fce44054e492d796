"""The progress-read budget on the real control plane: many running runs whose progress.json keeps
changing are read, and their status patched, at most at the budget's rate (tunix_operator.budget)."""

from __future__ import annotations

import itertools
import json
import pathlib
import time

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OperatorIdentity
from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import Api, phase_is, pod_of, run_manifest, wait_for
from tests.integration.test_reads_at_rest import audited, operator_user

RUNS = 4
BUDGET = 2.0  # reads/s; the tests' 0.3 s interval would read 4 runs 13 times a second
WINDOW_SECONDS = 6.0


def test_running_runs_are_read_within_the_budget(
    start_operator,  # type: ignore[no-untyped-def]
    kubelet: ProcessKubelet,
    k8s: Api,
    control_plane: ControlPlane,
    operator_identity: OperatorIdentity,
    artifacts_dir: pathlib.Path,
) -> None:
    op = start_operator(max_progress_reads_per_second=BUDGET)
    names = [f"budget-{i}" for i in range(RUNS)]
    for name in names:
        k8s.create_run(run_manifest(name))
        (artifacts_dir / k8s.ns / name).mkdir(parents=True)
    for name in names:
        pod_of(kubelet, name, 0, timeout=60)
        wait_for(phase_is(k8s, name, "Running"), timeout=60, what=f"{name} Running")
    steps = itertools.count(1)

    def write_progress() -> None:
        progress = {"step": next(steps), "totalSteps": 10_000, "updatedAt": "2099-01-01T00:00:00Z"}
        for name in names:
            (artifacts_dir / k8s.ns / name / "progress.json").write_text(json.dumps(progress))

    def step_of(name: str) -> int:
        return int((k8s.status(name).get("progress") or {}).get("step") or 0)

    write_progress()
    wait_for(lambda: all(step_of(n) for n in names), timeout=30, what="status.progress")
    sample = op.metrics.registry.get_sample_value
    assert sample("tunix_progress_readers") == RUNS
    assert sample("tunix_progress_read_interval_seconds") == RUNS / BUDGET

    def reads() -> float:
        samples = [s for m in op.metrics.storage_reads.collect() for s in m.samples]
        return sum(s.value for s in samples if s.name.endswith("_total"))

    first = {n: step_of(n) for n in names}
    before, since = reads(), control_plane.audit_offset()
    deadline = time.monotonic() + WINDOW_SECONDS
    while time.monotonic() < deadline:  # the trainers report a new step every 0.1 s
        write_progress()
        time.sleep(0.1)
    done = reads() - before
    patches = [r for r in audited(control_plane, operator_user(operator_identity), since, k8s.ns)
               if r[:2] == ("patch", "tunixruns/status")]  # fmt: skip
    # At most the budget's reads in the window, plus one per run already due at its start.
    assert done <= BUDGET * WINDOW_SECONDS + RUNS, done
    assert len(patches) <= done
    # Each run is still read and its progress still follows, every RUNS / BUDGET seconds.
    wait_for(lambda: all(step_of(n) > first[n] for n in names), timeout=10, what="progress advanced")
