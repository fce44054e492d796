"""The holdout-style scenario on the real control plane: a 200-step run preempted twice (evicted through
the Eviction API) and stalled once (its trainer stops itself with SIGSTOP at step 130), then
finishing. The attempt history, goodput and checkpoint fields must add up as a person would check
them, and ``kubectl get trun -o wide`` prints them.

The trainer is tests/integration/fake_trainer.py, run by the process kubelet as a real process: it
writes progress.json as tunix-train does, checkpoints every 20 steps and on SIGTERM.
"""

from __future__ import annotations

import pathlib
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import kubectl
from tests.cluster.kubelet import Node, ProcessKubelet
from tests.integration import fake_trainer
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for
from tests.integration.test_benchmark_mode import _split_columns
from tunix_operator.conditions import parse_time
from tunix_operator.observe import CHECKPOINT_TIME_ANNOTATION

IMAGE = "tunix/fake-trainer:test"


@pytest.fixture
def trainer_kubelet(control_plane: ControlPlane, tmp_path: pathlib.Path) -> Iterator[ProcessKubelet]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_trainer.install(bin_dir)
    with ProcessKubelet(
        control_plane.api_client(), tmp_path / "kubelet", nodes=(Node(f"fake-{uuid.uuid4().hex[:8]}"),),
        images={IMAGE: "process"}, path_prefix=(str(bin_dir), str(pathlib.Path(sys.executable).parent)),
    ) as kubelet:  # fmt: skip
        yield kubelet
        assert not kubelet.errors, kubelet.errors


def _progress_of(k8s: Api, name: str, attempt: int, step: int) -> bool:
    status = k8s.status(name)
    progress = status.get("progress") or {}
    return (
        status.get("attempt") == attempt and progress.get("attempt") == attempt and progress["step"] >= step
    )


def test_preempted_twice_and_stalled_once_in_a_200_step_run(
    start_operator, trainer_kubelet: ProcessKubelet, k8s: Api, kubeconfig: pathlib.Path
) -> None:
    op: OperatorThread = start_operator(default_image=IMAGE)
    env = {"FAKE_STEPS": "200", "FAKE_STEP_SECONDS": "0.05", "FAKE_SAVE_EVERY": "20", "FAKE_HANG": "2:130"}
    manifest = run_manifest(
        "gp",
        training={"steps": 200, "batchSize": 4, "seqLen": 32},
        env=[{"name": k, "value": v} for k, v in env.items()],
        retryPolicy={"maxRestarts": 1, "maxPreemptions": 2, "backoffSeconds": 1, "stallTimeoutSeconds": 10},
        terminationGracePeriodSeconds=2,
    )
    k8s.create_run(manifest)
    assert op.settings.default_image == IMAGE
    for attempt, at_step in ((0, 40), (1, 100)):  # two preemptions
        pod = pod_of(trainer_kubelet, "gp", attempt, timeout=60)
        wait_for(
            lambda a=attempt, s=at_step: _progress_of(k8s, "gp", a, s), timeout=60, what=f"step {at_step}"
        )
        trainer_kubelet.evict(pod["metadata"]["name"])
    wait_for(lambda: _progress_of(k8s, "gp", 2, 130), timeout=60, what="attempt 2 at step 130 (hung)")
    wait_for(lambda: ("Warning", "Stalled") in k8s.events("gp"), timeout=60, what="the Stalled event")
    wait_for(phase_is(k8s, "gp", "Succeeded"), timeout=120, what="Succeeded")

    status = k8s.status("gp")
    attempts: list[dict[str, Any]] = status["attempts"]
    assert [a["outcome"] for a in attempts] == ["Preempted", "Preempted", "Stalled", "Succeeded"], attempts
    assert [a["index"] for a in attempts] == [0, 1, 2, 3]
    # each preempted attempt saved its last step and the next resumed from it; the hung one had saved 120
    assert [a.get("restoredFrom") for a in attempts] == [
        None, attempts[0]["lastStep"], attempts[1]["lastStep"], 120
    ], attempts  # fmt: skip
    assert attempts[0]["lastStep"] >= 40 and attempts[1]["lastStep"] >= 100
    assert attempts[2]["lastStep"] == 130 and attempts[2]["reason"] == "StepStalled"
    assert attempts[3]["lastStep"] == 200 and attempts[3]["exitCode"] == 0
    assert [a.get("exitCode") for a in attempts[:2]] == [75, 75]
    assert [a.get("waitedSeconds") for a in attempts] == [
        None,
        None,
        None,
        1.0,
    ]  # the backoff after the stall
    for a in attempts:
        assert parse_time(a["startTime"]) <= parse_time(a["firstStepTime"]) <= parse_time(a["lastStepTime"])
        assert parse_time(a["lastStepTime"]) <= parse_time(a["endTime"]), a
    assert (status["restarts"], status["preemptions"]) == (1, 2)

    goodput = status["goodput"]
    lost = goodput["lostSeconds"]
    assert goodput["stepsLost"] == 10  # 121..130 trained again: attempt 3 resumed from 120
    assert lost["idle"] == 1.0
    assert lost["rework"] > 0 and lost["restart"] > 0 and goodput["productiveSeconds"] > 0
    total = goodput["productiveSeconds"] + lost["rework"] + lost["restart"] + lost["idle"]
    assert total == pytest.approx(goodput["wallSeconds"], abs=0.25)  # four values rounded to 0.1 s
    # productive and wall are rounded to 0.1 s, the percentage to 0.1
    slack = 100 * 0.05 / goodput["wallSeconds"] * (1 + goodput["goodputPercent"] / 100) + 0.05 + 1e-9
    assert goodput["goodputPercent"] == pytest.approx(
        100 * goodput["productiveSeconds"] / goodput["wallSeconds"], abs=slack
    )
    assert parse_time(goodput["since"]) == parse_time(attempts[0]["startTime"])

    checkpoint = status["checkpoint"]
    assert (checkpoint["latestStep"], checkpoint["restoredFrom"]) == (200, 120)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("False", "Progressing")
    last_pod = k8s.core.read_namespaced_pod(
        pod_of(trainer_kubelet, "gp", 3, phase=None)["metadata"]["name"], k8s.ns
    )
    assert parse_time(last_pod.metadata.annotations[CHECKPOINT_TIME_ANNOTATION]) is not None

    out = kubectl(kubeconfig, "get", "trun", "gp", "-n", k8s.ns, "-o", "wide").stdout
    header, row = out.strip().splitlines()
    values = dict(zip(_split_columns(header, header), _split_columns(header, row), strict=True))
    assert float(values["GOODPUT"]) == pytest.approx(goodput["goodputPercent"])
    assert values["CKPT"] == "200" and values["STEP"] == "200/200"
    print(f"\n{out}\nattempts: {attempts}\ngoodput: {goodput}\ncheckpoint: {checkpoint}")
