"""Benchmark mode through the real operator on the emulated API server and simulated kubelet."""

from __future__ import annotations

import itertools
import json
import pathlib

import kubernetes
import pytest

from tests.cluster.fixtures import kubectl
from tests.cluster.kubelet import ProcessKubelet
from tests.integration.harness import Api, OperatorThread, phase_is, pod_of, run_manifest, wait_for
from tests.operator.test_benchmark_mode import bench_result
from tunix_trainer.benchmark.report import termination_message


def bench_manifest(name: str) -> dict:
    manifest = run_manifest(
        name,
        mode="Benchmark",
        benchmark={"warmupSteps": 2, "measureSteps": 4},
        checkpoint={"volume": {"size": "1Gi", "reclaimPolicy": "Delete"}},  # ignored in Benchmark mode
    )
    del manifest["spec"]["dataset"]
    return manifest


def test_benchmark_run_reports_status_benchmark(
    operator: OperatorThread,
    kubelet: ProcessKubelet,
    k8s: Api,
    kubeconfig: pathlib.Path,
) -> None:
    k8s.create_run(bench_manifest("bench"))
    wait_for(lambda: k8s.jobs("bench") == ["bench-0"], what="job bench-0")
    job = k8s.job("bench-0")
    pod_spec = job["spec"]["template"]["spec"]
    command = pod_spec["containers"][0]["command"]
    assert command[:3] == ["tunix-bench", "--config", "/etc/tunix/run.yaml"]
    assert command[3] == "--artifacts-uri" and command[4].endswith(f"/{k8s.ns}/bench")
    assert "--resume" not in command and "--checkpoint-uri" not in command
    assert [v["name"] for v in pod_spec["volumes"]] == ["config"]
    with pytest.raises(kubernetes.client.ApiException) as missing:
        k8s.core.read_namespaced_persistent_volume_claim("bench-checkpoints", k8s.ns)
    assert missing.value.status == 404

    pod = pod_of(kubelet, "bench", 0)
    wait_for(phase_is(k8s, "bench", "Running"), what="Running")
    result = bench_result()
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=termination_message(result))
    wait_for(phase_is(k8s, "bench", "Succeeded"), what="Succeeded")
    status = k8s.status("bench")
    assert status["benchmark"]["mfu"] == pytest.approx(result.mfu, abs=1e-4)
    assert status["benchmark"]["tokensPerSecond"] == pytest.approx(result.tokens_per_second)
    assert status["benchmark"]["stepTimeP50Ms"] == pytest.approx(107.5)
    for absent in ("summary", "progress", "checkpoint"):
        assert absent not in status, absent
    assert ("Normal", "Succeeded") in wait_for(lambda: k8s.events("bench"), what="events")

    # The API server prints the CRD's -o wide columns (server-side table printing).
    out = kubectl(kubeconfig, "get", "trun", "bench", "-n", k8s.ns, "-o", "wide").stdout
    header, row = out.strip().splitlines()
    columns = [c.strip() for c in _split_columns(header, header)]
    values = dict(zip(columns, _split_columns(header, row), strict=True))
    assert float(values["MFU"]) == pytest.approx(status["benchmark"]["mfu"], abs=1e-3)
    assert float(values["BENCH TOK/S"]) == pytest.approx(status["benchmark"]["tokensPerSecond"], rel=1e-3)
    assert float(values["STEP P50 MS"]) == pytest.approx(107.5)


def _split_columns(header: str, line: str) -> list[str]:
    """Cut ``line`` at the start of each column of kubectl's table ``header`` (names may hold spaces)."""
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")]
    bounds = [*starts, len(max(header, line, key=len))]
    return [line[a:b].strip() for a, b in itertools.pairwise(bounds)]


def test_benchmark_without_a_result_fails_with_a_message(
    operator: OperatorThread,
    kubelet: ProcessKubelet,
    k8s: Api,
) -> None:
    k8s.create_run(bench_manifest("nores"))
    pod = pod_of(kubelet, "nores", 0)
    kubelet.terminate(pod["metadata"]["name"], exit_code=0, message=json.dumps({"finalLoss": 1.0}))
    wait_for(phase_is(k8s, "nores", "Failed"), what="Failed")
    status = k8s.status("nores")
    assert "training summary, not a benchmark result" in status["message"]
    assert status["restarts"] == 0 and k8s.jobs("nores") == ["nores-0"]
