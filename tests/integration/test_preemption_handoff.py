"""A preempted attempt hands over only once its trainer has stopped (issue: two trainers wrote the same
checkpoint directory for 15 s when the next attempt started beside an evicted pod still saving).

The trainer here is a stand-in for ``tunix-train`` that the process kubelet runs as a real process: on
SIGTERM it takes 3 s to "save its final checkpoint", then exits 75 (preempted). Each start and stop is
appended to a trace file with a timestamp; the next attempt must start after the previous one stopped,
whether the pod was evicted through the Eviction API (the API server deletes it gracefully) or by its
kubelet (node-pressure eviction: DisruptionTarget and SIGTERM, the pod is not deleted).
"""

from __future__ import annotations

import pathlib
import stat
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for

IMAGE = "tunix/slow-saver:test"
SLOW_TRAINER = """#!/bin/sh
echo "start $(date +%s.%N) $TUNIX_ATTEMPT" >> "$TRACE"
trap 'sleep 3; echo "stop $(date +%s.%N) $TUNIX_ATTEMPT" >> "$TRACE"; exit 75' TERM
while true; do sleep 0.1; done
"""


@pytest.fixture
def slow_kubelet(control_plane: ControlPlane, tmp_path: pathlib.Path) -> Iterator[ProcessKubelet]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trainer = bin_dir / "tunix-train"
    trainer.write_text(SLOW_TRAINER)
    trainer.chmod(trainer.stat().st_mode | stat.S_IEXEC)
    with ProcessKubelet(
        control_plane.api_client(), tmp_path / "kubelet", nodes=(Node(f"slow-{uuid.uuid4().hex[:8]}"),),
        images={IMAGE: "process"}, path_prefix=(str(bin_dir), str(pathlib.Path(sys.executable).parent)),
    ) as kubelet:  # fmt: skip
        yield kubelet
        assert not kubelet.errors, kubelet.errors


def _trace(path: pathlib.Path) -> list[tuple[str, float, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(what, float(at), int(attempt)) for what, at, attempt in rows]


@pytest.mark.parametrize("via_api", [True, False], ids=["eviction-api", "kubelet-eviction"])
def test_the_next_attempt_starts_after_the_evicted_trainer_stopped(
    via_api: bool, start_operator, slow_kubelet: ProcessKubelet, k8s: Api, tmp_path: pathlib.Path
) -> None:
    trace = tmp_path / "trace.log"
    op: OperatorThread = start_operator(default_image=IMAGE)
    assert op.settings.default_image == IMAGE
    k8s.create_run(run_manifest("handoff", env=[{"name": "TRACE", "value": str(trace)}]))
    pod = pod_of(slow_kubelet, "handoff", 0, timeout=60)
    wait_for(lambda: _trace(trace), timeout=30, what="attempt 0 started")
    slow_kubelet.evict(pod["metadata"]["name"], via_api=via_api)
    wait_for(lambda: [r for r in _trace(trace) if r[0] == "start" and r[2] == 1], timeout=90,
             what="attempt 1 started")  # fmt: skip
    events = _trace(trace)
    stopped = next(at for what, at, attempt in events if what == "stop" and attempt == 0)
    restarted = next(at for what, at, attempt in events if what == "start" and attempt == 1)
    assert restarted > stopped, events  # never two trainers at once
    wait_for(phase_is(k8s, "handoff", "Running", attempt=1), timeout=30, what="Running at attempt 1")
    status = k8s.status("handoff")
    assert (status["preemptions"], status["restarts"]) == (1, 0)
