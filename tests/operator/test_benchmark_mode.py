"""Benchmark mode (``spec.mode: Benchmark``): the Job, the state machine and status.benchmark.

The termination message and ``benchmark.json`` come from the trainer's own (JAX-free) report
code, so these tests break when the two sides of the contract drift apart.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import kubernetes_validate
import pytest

from tests.operator.factories import at, job, pod, run_body, spec
from tests.operator.test_reconciler import FakeKube, reconciler
from tunix_api.run import BenchmarkStatus, ObjectMeta, TunixRun, TunixRunSpec
from tunix_api.training import StorageSpec
from tunix_operator.manifests import RunRef, build_children, build_job
from tunix_operator.settings import OperatorSettings
from tunix_operator.state import CreateAttempt, Decision, DeleteJob, Observed, decide, reads_needed
from tunix_operator.storage import ArtifactReader
from tunix_operator.trainer_output import (
    describe_message,
    parse_benchmark_document,
    parse_benchmark_message,
)
from tunix_trainer.bench import parse_args
from tunix_trainer.benchmark.hardware import DeviceInfo, PeakLookup
from tunix_trainer.benchmark.report import (
    BenchmarkResult,
    Timings,
    Workload,
    status_payload,
    termination_message,
)
from tunix_trainer.benchmark.stats import summarize_step_times

SETTINGS = OperatorSettings(artifacts_base_uri="s3://bucket/runs", progress_interval_seconds=7)
BENCH = {
    "mode": "Benchmark",
    "dataset": None,
    "benchmark": {"warmupSteps": 2, "measureSteps": 4},
    # a volume that Train mode would mount (and create): Benchmark mode must ignore it
    "checkpoint": {"volume": {"size": "10Gi", "reclaimPolicy": "Delete"}},
}
TRAINING_SUMMARY = {"finalLoss": 1.25, "totalSteps": 100, "provenance": {"jax": "0.10.2"}}


def bench_result(peak: float | None = 1e12) -> BenchmarkResult:
    """A real tunix-bench result (as the trainer builds it), without running JAX."""
    return BenchmarkResult(
        run_name="r1",
        namespace="ns",
        config_hash="abc",
        workload=Workload(
            model_name="125m",
            param_count=125_000_000,
            flops_per_token=8.0e8,
            vocab_size=32_000,
            batch_size=8,
            seq_len=1024,
            grad_accum_steps=1,
            compute_dtype="bfloat16",
            param_dtype="float32",
            synthetic_data=True,
        ),
        timings=Timings(
            compile_seconds=12.3456,
            warmup_steps=2,
            step_times=summarize_step_times([0.100, 0.110, 0.105, 0.140]),
            window_seconds=0.4,
            window_steps=4,
        ),
        devices=DeviceInfo(platform="gpu", kind="NVIDIA H200", count=1, local_count=1, process_count=1),
        peak=PeakLookup(peak, "H200" if peak else None, None if peak else "unknown device"),
        peak_memory_bytes=5 * 1024**3,
        versions={"jax": "0.10.2"},
    )


def make_run(**overrides: Any) -> TunixRun:
    return TunixRun(
        metadata=ObjectMeta(name="r1", namespace="ns"),
        spec=TunixRunSpec.model_validate(spec(**{**BENCH, **overrides})),
    )


def step(body: dict[str, Any], observed: Observed | None = None, now_s: float = 0) -> Decision:
    """Decide, then store the status like the API server would (so steps chain)."""
    decision = decide(body, observed or Observed(), at(now_s), SETTINGS)
    body["status"] = decision.status
    return decision


def started() -> dict[str, Any]:
    body = run_body(**BENCH)
    step(body)
    return body


def finished(message: str | None) -> Observed:
    return Observed(
        job=job(condition="Complete"), pods=[pod(phase="Succeeded", exit_code=0, message=message)]
    )


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


# ---- the Job ------------------------------------------------------------------------------------


def test_benchmark_job_runs_tunix_bench_without_checkpoints_or_pvc() -> None:
    run = make_run()
    ref = RunRef("r1", "ns", "uid-1")
    children = build_children(run, ref, SETTINGS, attempt=1)
    assert [c["kind"] for c in children] == ["Job"]  # no PVC despite checkpoint.volume
    job_obj = children[-1]
    for obj in children:
        kubernetes_validate.validate(obj, "1.32", strict=True)
    pod_spec = job_obj["spec"]["template"]["spec"]
    command = pod_spec["containers"][0]["command"]
    assert command == [
        "tunix-bench",
        "--config",
        "/etc/tunix/run.yaml",
        "--artifacts-uri",
        "s3://bucket/runs/ns/r1",
    ]
    args = parse_args(command[1:])  # the trainer's real command line accepts it
    assert (args.config, args.artifacts_uri) == ("/etc/tunix/run.yaml", "s3://bucket/runs/ns/r1")
    assert [v["name"] for v in pod_spec["volumes"]] == ["config"]
    assert [m["name"] for m in pod_spec["containers"][0]["volumeMounts"]] == ["config"]
    # retries are the operator's, as in Train mode
    assert (job_obj["spec"]["backoffLimit"], pod_spec["restartPolicy"]) == (0, "Never")


def test_benchmark_job_uses_spec_storage_uri() -> None:
    job_obj = build_job(make_run(storage={"uri": "s3://b/bench"}), RunRef("r1", "ns", "u"), SETTINGS, 0)
    assert job_obj["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "s3://b/bench"


# ---- parsing ------------------------------------------------------------------------------------


def test_termination_message_of_tunix_bench_becomes_benchmark_status() -> None:
    result = bench_result()
    status = parse_benchmark_message(termination_message(result))
    assert status is not None
    payload = status_payload(result)
    payload.pop("kind")
    assert status.to_wire() == {k: v for k, v in payload.items() if v is not None}
    assert status.mfu == pytest.approx(result.mfu, abs=1e-4)
    assert status.tokens_per_second == pytest.approx(8 * 1024 * 10.0)  # 4 steps in 0.4 s


def test_benchmark_json_gives_the_same_figures() -> None:
    result = bench_result()
    from_message = parse_benchmark_message(termination_message(result))
    from_document = parse_benchmark_document(json.loads(json.dumps(result.to_json())))
    assert from_message is not None and from_document is not None
    for key, value in from_message.model_dump().items():
        assert getattr(from_document, key) == pytest.approx(value, rel=1e-3), key


def test_unknown_peak_leaves_mfu_out() -> None:
    status = parse_benchmark_message(termination_message(bench_result(peak=None)))
    assert status is not None and status.mfu is None and status.step_time_p50_ms == pytest.approx(107.5)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "Traceback (most recent call last): boom",
        json.dumps(TRAINING_SUMMARY),
        json.dumps({"kind": "summary", "mfu": 0.5}),
        json.dumps({"kind": "benchmark"}),
        json.dumps({"kind": "benchmark", "mfu": "high"}),
        "[1, 2]",
    ],
)
def test_non_benchmark_messages_give_no_status(text: str | None) -> None:
    assert parse_benchmark_message(text) is None


def test_non_finite_values_are_dropped_not_written_to_status() -> None:
    text = json.dumps({"kind": "benchmark", "mfu": math.nan, "tokensPerSecond": 10.0})
    assert parse_benchmark_message(text) == BenchmarkStatus(tokens_per_second=10.0)


def test_benchmark_document_needs_its_kind() -> None:
    document = bench_result().to_json()
    document.pop("kind")
    assert parse_benchmark_document(document) is None
    assert parse_benchmark_document(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "no termination message"),
        ("oops: last log line", "not a JSON object"),
        (json.dumps(TRAINING_SUMMARY), "training summary"),
        (json.dumps({"kind": "summary"}), "kind 'summary'"),
        (json.dumps({"kind": "benchmark", "mfu": "x"}), "invalid benchmark values"),
    ],
)
def test_describe_message_says_why(text: str | None, expected: str) -> None:
    assert expected in describe_message(text)


# ---- the state machine --------------------------------------------------------------------------


def test_benchmark_run_has_no_checkpoint_status() -> None:
    body = started()
    assert body["status"]["phase"] == "Pending"
    assert "checkpoint" not in body["status"]


def test_success_fills_status_benchmark_from_the_termination_message() -> None:
    body = started()
    step(body, Observed(job=job(), pods=[pod()]), 5)
    assert body["status"]["phase"] == "Running"
    decision = step(body, finished(termination_message(bench_result())), 60)
    status = body["status"]
    assert status["phase"] == "Succeeded"
    assert status["completionTime"] == "2026-01-01T12:01:00Z"
    bench = status["benchmark"]
    assert bench["mfu"] == pytest.approx(bench_result().mfu, abs=1e-4)
    assert bench["tokensPerSecond"] == pytest.approx(81920.0)
    assert bench["stepTimeP50Ms"] == pytest.approx(107.5)
    assert bench["peakMemoryBytes"] == 5 * 1024**3
    for absent in ("summary", "progress", "checkpoint", "provenance"):
        assert absent not in status, absent
    assert "MFU" in status["message"] and "tokens/s" in status["message"]
    assert condition(body, "Succeeded")["status"] == "True"
    assert [e.reason for e in decision.events] == ["Succeeded"]
    assert decision.actions == []


def test_unusable_message_falls_back_to_benchmark_json() -> None:
    body = started()
    observed = finished(json.dumps(TRAINING_SUMMARY))
    document = bench_result().to_json()
    step(body, Observed(job=observed.job, pods=observed.pods, benchmark=document), 60)
    status = body["status"]
    assert status["phase"] == "Succeeded"
    assert status["benchmark"]["tokensPerSecond"] == pytest.approx(81920.0)
    assert "summary" not in status  # a training summary on a benchmark run is not taken


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (json.dumps(TRAINING_SUMMARY), "training summary"),
        ("{not json", "not a JSON object"),
        (None, "no termination message"),
    ],
)
def test_no_result_anywhere_fails_without_retry(message: str | None, why: str) -> None:
    """Exit 0 without numbers is not a usable benchmark: Failed NoBenchmarkResult, not retried."""
    body = started()
    decision = step(body, finished(message), 60)
    status = body["status"]
    assert status["phase"] == "Failed"
    assert why in status["message"]
    assert "s3://bucket/runs/ns/r1/benchmark.json is missing or unreadable" in status["message"]
    assert condition(body, "Failed")["reason"] == "NoBenchmarkResult"
    assert "benchmark" not in status and "summary" not in status
    assert not any(isinstance(a, (CreateAttempt, DeleteJob)) for a in decision.actions)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "NoBenchmarkResult")]
    assert (status["attempt"], status["restarts"]) == (0, 0)


def test_preempted_benchmark_simply_reruns() -> None:
    body = started()
    decision = step(body, Observed(job=job(), pods=[pod(phase="Failed", disruption="PreemptionByScheduler")]))
    status = body["status"]
    assert (status["phase"], status["attempt"], status["preemptions"], status["restarts"]) == (
        "Restarting",
        1,
        1,
        0,
    )
    assert CreateAttempt(1) in decision.actions
    preempted = next(e for e in decision.events if e.reason == "Preempted")
    assert "rerunning the benchmark" in preempted.message


def test_retryable_failure_spends_restarts() -> None:
    body = started()
    step(body, Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=1)]))
    assert (body["status"]["phase"], body["status"]["restarts"]) == ("Restarting", 1)


def test_reads_needed_in_benchmark_mode() -> None:
    body = started()
    assert reads_needed(body, job(), [pod()]) == (False, False)  # no progress.json to poll
    good = [pod(phase="Succeeded", exit_code=0, message=termination_message(bench_result()))]
    assert reads_needed(body, job(condition="Complete"), good) == (False, False)
    bad = [pod(phase="Succeeded", exit_code=0, message=json.dumps(TRAINING_SUMMARY))]
    assert reads_needed(body, job(condition="Complete"), bad) == (False, True)


def test_running_benchmark_does_not_poll_progress() -> None:
    body = started()
    decision = step(body, Observed(job=job(), pods=[pod()]), 5)
    assert decision.requeue_after is None
    assert "progress" not in body["status"]


# ---- the reconciler and storage -----------------------------------------------------------------


def test_reconciler_reads_benchmark_json_not_summary_json(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body(**BENCH)})
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    assert kube.calls == ["patch-status", "create-Job"]  # no PVC
    run_dir = tmp_path / "ns" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(TRAINING_SUMMARY))
    (run_dir / "benchmark.json").write_text(json.dumps(bench_result().to_json()))
    kube.jobs["r1-0"] = job(condition="Complete")
    kube.pods = [pod(phase="Succeeded", exit_code=0, message="last log line")]
    rec.reconcile("ns", "r1")
    status = kube.runs["r1"]["status"]
    assert status["phase"] == "Succeeded"
    assert status["benchmark"]["stepTimeP50Ms"] == pytest.approx(107.5)
    assert "summary" not in status


def test_artifact_reader_reads_benchmark_json(tmp_path: pathlib.Path) -> None:
    reader = ArtifactReader(tmp_path.as_uri(), StorageSpec(), None)
    assert reader.benchmark() is None
    (tmp_path / "benchmark.json").write_text(json.dumps({"kind": "benchmark", "mfu": 0.5}))
    assert reader.benchmark() == {"kind": "benchmark", "mfu": 0.5}
