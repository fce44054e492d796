"""tunix-bench: the pure helpers (statistics, peaks, MFU, report) and the real entry point on CPU."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest

from tunix_api.artifacts import TERMINATION_MESSAGE_LIMIT
from tunix_api.run import BenchmarkStatus
from tunix_trainer.benchmark.checkpoint_cost import (
    OVERHEAD_BUDGET_PERCENT,
    CheckpointCost,
    amortized_overhead_percent,
)
from tunix_trainer.benchmark.hardware import (
    DeviceInfo,
    PeakLookup,
    describe_devices,
    peak_flops,
    peak_memory_bytes,
)
from tunix_trainer.benchmark.mfu import mfu, model_flops_per_second
from tunix_trainer.benchmark.report import (
    BenchmarkResult,
    Timings,
    Workload,
    format_bytes,
    format_checkpoint_cost,
    format_table,
    status_payload,
    termination_message,
)
from tunix_trainer.benchmark.stats import percentile, summarize_step_times

# --------------------------------------------------------------------------- statistics


def test_percentile_interpolates_like_numpy_linear():
    values = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)  # rank 2.7 -> 3 + 0.7 * (4 - 3)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("bad", [-1, 100.5])
def test_percentile_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        percentile([1.0], bad)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_step_times_orders_percentiles():
    times = [0.010, 0.011, 0.012, 0.013, 0.050]  # one slow outlier
    st = summarize_step_times(times)
    assert st.count == 5
    assert st.min == 0.010 and st.max == 0.050
    assert st.mean == pytest.approx(sum(times) / 5)
    assert st.p50 == pytest.approx(0.012)
    assert st.min <= st.p50 <= st.p90 <= st.p99 <= st.max
    assert st.p99 == pytest.approx(0.013 + 0.96 * 0.037)
    with pytest.raises(ValueError):
        summarize_step_times([0.01, 0.0])
    with pytest.raises(ValueError):
        summarize_step_times([])


# --------------------------------------------------------------------------- peak FLOP/s


@pytest.mark.parametrize(
    ("kind", "dtype", "expected", "name"),
    [
        ("NVIDIA H200", "bfloat16", 989.4e12, "H200 SXM"),
        ("NVIDIA GH200 480GB", "bfloat16", 989.4e12, "H200 SXM"),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12, "H100 SXM"),
        ("NVIDIA H100 PCIe", "bfloat16", 756.5e12, "H100 PCIe"),
        ("NVIDIA H100 80GB HBM3", "float32", 494.7e12, "H100 SXM"),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12, "A100"),
        ("NVIDIA L4", "bfloat16", 121e12, "L4"),
        ("NVIDIA L40S", "bfloat16", 362.05e12, "L40S"),
        ("TPU v4", "bfloat16", 275e12, "TPU v4"),
        ("TPU v5 lite", "bfloat16", 197e12, "TPU v5e"),
        ("TPU v5", "bfloat16", 459e12, "TPU v5p"),
        ("TPU v5p", "bfloat16", 459e12, "TPU v5p"),
        ("TPU v6 lite", "bfloat16", 918e12, "TPU v6e"),
    ],
)
def test_peak_lookup_matches_device_kind(kind, dtype, expected, name):
    peak = peak_flops(kind, dtype, platform="gpu" if "NVIDIA" in kind else "tpu")
    assert peak == PeakLookup(expected, name)


def test_peak_lookup_unknown_and_cpu_give_none_with_a_note():
    cpu = peak_flops("cpu", "bfloat16", platform="cpu")
    assert cpu.flops is None and "CPU" in cpu.note
    unknown = peak_flops("Imaginary Accelerator 9000", "bfloat16", platform="gpu")
    assert unknown.flops is None and "unknown device kind" in unknown.note
    tpu_f32 = peak_flops("TPU v4", "float32", platform="tpu")
    assert tpu_f32.flops is None and tpu_f32.matched == "TPU v4" and "float32" in tpu_f32.note


def test_describe_devices_and_peak_memory_duck_typed():
    class Dev:
        def __init__(self, peak):
            self.platform, self.device_kind, self._peak = "gpu", "NVIDIA H200", peak

        def memory_stats(self):
            return None if self._peak is None else {"peak_bytes_in_use": self._peak, "bytes_in_use": 1}

    devices = [Dev(10), Dev(30), Dev(None)]
    info = describe_devices(devices, devices[:1], process_count=3)
    assert info == DeviceInfo(platform="gpu", kind="NVIDIA H200", count=3, local_count=1, process_count=3)
    assert peak_memory_bytes(devices) == 30
    assert peak_memory_bytes([Dev(None)]) is None
    assert peak_memory_bytes([SimpleNamespace()]) is None  # no memory_stats at all


# --------------------------------------------------------------------------- MFU


def test_mfu_hand_computed_case():
    # 6 * 1e9 FLOP/token, 8 x 1024 tokens per step, 0.5 s per step on 2 devices of 1e15 FLOP/s:
    # achieved = 6e9 * 8192 / 0.5 = 9.8304e13 FLOP/s; MFU = 9.8304e13 / 2e15 = 0.049152.
    assert model_flops_per_second(6e9, 8192, 0.5) == pytest.approx(9.8304e13)
    assert mfu(6e9, 8192, 0.5, 1e15, 2) == pytest.approx(0.049152)
    assert mfu(6e9, 8192, 0.5, None, 2) is None
    with pytest.raises(ValueError):
        mfu(6e9, 8192, 0.0, 1e15, 1)


def test_mfu_with_the_model_flops_formula():
    from tunix_trainer.model import ModelConfig, count_params, flops_per_token

    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128)
    # matmul params per layer: qkv 64*12*16 + out 4*16*64 + mlp 3*64*128 = 12288 + 4096 + 24576
    n_matmul = 2 * (12288 + 4096 + 24576) + 256 * 64
    assert count_params(cfg) == 256 * 64 + 2 * (2 * 64 + 12288 + 4096 + 24576) + 64
    seq = 32
    expected = 6 * n_matmul + 6 * 2 * seq * 4 * 16  # attention counted once (causal)
    assert flops_per_token(cfg, seq) == expected
    assert mfu(flops_per_token(cfg, seq), 4 * seq, 0.001, 1e12, 1) == pytest.approx(
        expected * 4 * seq / 0.001 / 1e12
    )


# --------------------------------------------------------------------------- report


def _result(peak: PeakLookup, count: int = 2) -> BenchmarkResult:
    return BenchmarkResult(
        run_name="r",
        namespace="ns",
        config_hash="abc",
        workload=Workload(
            model_name="tiny",
            param_count=1000,
            flops_per_token=6000.0,
            vocab_size=384,
            batch_size=4,
            seq_len=16,
            grad_accum_steps=1,
            compute_dtype="bfloat16",
            param_dtype="float32",
            synthetic_data=True,
        ),
        timings=Timings(
            compile_seconds=1.5,
            warmup_steps=2,
            step_times=summarize_step_times([0.010, 0.012, 0.011, 0.020]),
            window_seconds=0.04,
            window_steps=4,
        ),
        devices=DeviceInfo(
            platform="gpu", kind="NVIDIA H200", count=count, local_count=count, process_count=1
        ),
        peak=peak,
        peak_memory_bytes=3 * 1024**3,
        versions={"jax": "0.0", "flax": "0.0"},
    )


def test_result_throughput_uses_the_back_to_back_window():
    r = _result(PeakLookup(1e9, "X"))
    assert r.steps_per_second == pytest.approx(100.0)  # 4 steps in 0.04 s
    assert r.tokens_per_second == pytest.approx(64 * 100.0)
    assert r.tokens_per_second_per_device == pytest.approx(3200.0)
    assert r.mfu == pytest.approx(6000.0 * 64 / 0.01 / (1e9 * 2))
    doc = r.to_json()
    assert doc["stepTime"]["p50Ms"] == pytest.approx(11.5)
    assert doc["stepTime"]["stepsPerSecond"] == pytest.approx(1 / 0.01325)
    assert doc["steadyState"]["stepTimeMs"] == pytest.approx(10.0)
    json.dumps(doc)  # serialisable


def test_status_payload_matches_benchmark_status_and_fits_the_termination_log():
    r = _result(PeakLookup(None, None, "unknown"))
    payload = status_payload(r)
    assert payload.pop("kind") == "benchmark"
    status = BenchmarkStatus.model_validate(payload)
    assert set(payload) == set(BenchmarkStatus().model_dump(by_alias=True))
    assert status.mfu is None and status.peak_memory_bytes == 3 * 1024**3
    assert status.step_time_p50_ms == pytest.approx(11.5)
    text = termination_message(r)
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT and "\n" not in text
    assert json.loads(text)["kind"] == "benchmark"


def test_format_table_shows_figures_and_mfu_note():
    text = format_table(_result(PeakLookup(None, None, "unknown device kind 'x': MFU not reported")))
    assert "p50 11.50 ms" in text
    assert "6,400" in text  # tokens/s
    assert "n/a (unknown device kind" in text
    assert "3.00 GiB" in text
    assert "MFU" in format_table(_result(PeakLookup(1e9, "X")))
    assert format_bytes(None) == "n/a" and format_bytes(512) == "512 B" and format_bytes(2048) == "2.00 KiB"
    assert not math.isnan(_result(PeakLookup(1e9, "X")).model_flops_per_second)


# --------------------------------------------------------------------------- checkpoint cost


def _cost(**changes) -> CheckpointCost:
    values = {
        "blocking_seconds": (0.04, 0.05, 0.30),  # first save slow (one-time set-up)
        "stall_seconds": (0.06, 0.07, 0.50),  # blocking + what the background save slowed the steps by
        "save_seconds": (1.0, 1.2, 1.5),
        "checkpoint_bytes": 4 * 1024**3,
        "save_interval_steps": 100,
        "step_seconds": 0.25,
        "steps_during_save": 2,
    }
    values.update(changes)
    return CheckpointCost(**values)


def test_amortized_overhead_formula():
    # 50 ms blocked once per 100 steps of 250 ms: 0.05 / 25 s = 0.2 % of training time.
    assert amortized_overhead_percent(0.05, 100, 0.25) == pytest.approx(0.2)
    assert amortized_overhead_percent(0.0, 1, 1.0) == 0.0
    assert amortized_overhead_percent(0.5, 10, 0.5) == pytest.approx(10.0)
    for bad in [(0.05, 0, 0.25), (0.05, 100, 0.0), (-0.01, 100, 0.25), (math.inf, 100, 0.25)]:
        with pytest.raises(ValueError):
            amortized_overhead_percent(*bad)


def test_checkpoint_cost_summary_json_and_budget():
    cost = _cost()
    assert cost.saves == 3
    assert cost.blocking_p50 == pytest.approx(0.05) and cost.blocking_max == pytest.approx(0.30)
    assert cost.save_p50 == pytest.approx(1.2) and cost.stall_p50 == pytest.approx(0.07)
    # The larger of the median blocking and stall times, not the slow first save: 0.07 s / 25 s.
    assert cost.amortized_overhead_percent == pytest.approx(0.28)
    assert _cost(stall_seconds=(0.0, -0.01, 0.01)).amortized_overhead_percent == pytest.approx(0.2)
    assert cost.within_budget
    doc = cost.to_json()
    assert doc["blockingSecondsP50"] == pytest.approx(0.05) and doc["blockingSecondsMax"] == pytest.approx(
        0.3
    )
    assert doc["saveSecondsP50"] == pytest.approx(1.2) and doc["checkpointBytes"] == 4 * 1024**3
    assert doc["saveIntervalSteps"] == 100 and doc["stepTimeSeconds"] == 0.25
    assert doc["stallSecondsP50"] == pytest.approx(0.07) and doc["stepsDuringSave"] == 2
    assert doc["amortizedOverheadPercent"] == pytest.approx(0.28)
    assert doc["budgetPercent"] == OVERHEAD_BUDGET_PERCENT and doc["withinBudget"] is True
    # 70 ms every 10 steps of 100 ms: 7 % -> over the 2 % budget.
    slow = _cost(save_interval_steps=10, step_seconds=0.1)
    assert slow.amortized_overhead_percent == pytest.approx(7.0) and not slow.within_budget
    assert "OVER the 2% budget" in format_checkpoint_cost(slow)


@pytest.mark.parametrize(
    "changes",
    [
        {"blocking_seconds": (), "stall_seconds": (), "save_seconds": ()},
        {"blocking_seconds": (0.1,), "stall_seconds": (0.1,), "save_seconds": (0.1, 0.2)},
        {"blocking_seconds": (0.1,), "stall_seconds": (0.1, 0.2), "save_seconds": (0.2,)},
        {"blocking_seconds": (0.3,), "stall_seconds": (0.3,), "save_seconds": (0.2,)},  # blocked > save
        {"blocking_seconds": (-0.1,), "stall_seconds": (0.1,), "save_seconds": (0.2,)},
        {"blocking_seconds": (0.1,), "stall_seconds": (math.nan,), "save_seconds": (0.2,)},
        {"checkpoint_bytes": -1},
    ],
)
def test_checkpoint_cost_rejects_inconsistent_samples(changes):
    with pytest.raises(ValueError):
        _cost(**changes)


def test_checkpoint_cost_in_benchmark_json_and_table_not_in_status():
    plain = _result(PeakLookup(None, None, "unknown"))
    assert plain.to_json()["checkpoint"] is None
    assert "checkpoint" not in format_table(plain)
    with_cost = dataclasses.replace(plain, checkpoint=_cost())
    assert with_cost.to_json()["checkpoint"] == _cost().to_json()
    json.dumps(with_cost.to_json())
    line = next(row for row in format_table(with_cost).splitlines() if row.startswith("checkpoint save"))
    assert "blocking p50 50.0 ms (max 300.0 ms)" in line and "durable p50 1.200 s" in line
    assert "stall p50 70.0 ms over 2 steps" in line
    assert "4.00 GiB" in line and "every 100 steps = 0.280%" in line and "within the 2% budget" in line
    assert termination_message(with_cost) == termination_message(plain)  # status payload unchanged


def test_measure_checkpoint_cost_with_a_fake_clock(tmp_path, monkeypatch):
    import tempfile

    import jax
    import jax.numpy as jnp

    from tunix_trainer.benchmark.checkpoint_probe import measure_checkpoint_cost

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ticks = iter(range(1_000_000))
    seen: list[int] = []

    def step(state, batch):
        seen.append(batch)
        return {"w": state["w"] + 1.0, "b": state["b"] * 2}, None

    state = {"w": jax.random.normal(jax.random.key(0), (64, 64)), "b": jnp.ones((8,), jnp.int32)}
    final, cost = measure_checkpoint_cost(
        step,
        state,
        [0, 1, 2],
        saves=3,
        save_interval_steps=50,
        step_seconds=0.25,
        meta={"config_hash": "x"},
        steps_during_save=2,
        clock=lambda: float(next(ticks)),
    )
    assert seen == [0, 1, 2, 0, 1, 2]  # two steps during each of the three saves, batches cycled
    assert float(final["w"][0, 0]) == pytest.approx(float(state["w"][0, 0]) + 6.0)
    # Clock reads per save: start, save returned, steps done, wait returned -> 1 tick blocked,
    # 2 ticks for save + steps (minus 2 x 0.25 s of steady-state steps = 1.5 s stall), 3 durable.
    assert cost.blocking_seconds == (1.0, 1.0, 1.0) and cost.save_seconds == (3.0, 3.0, 3.0)
    assert cost.stall_seconds == (1.5, 1.5, 1.5)
    assert cost.checkpoint_bytes >= 64 * 64 * 4 * 0.5  # random float32 data barely compresses
    assert cost.amortized_overhead_percent == pytest.approx(100 * 1.5 / (50 * 0.25))
    assert list(scratch.iterdir()) == []  # the temporary checkpoint directory is gone
    with pytest.raises(ValueError):
        measure_checkpoint_cost(step, state, [0], saves=0, save_interval_steps=1, step_seconds=1.0)


# --------------------------------------------------------------------------- the timing loop


def test_run_loop_phases_and_timings_with_a_fake_clock():
    from tunix_trainer.benchmark.runner import LoopPlan, run_loop

    ticks = iter(range(1_000_000))
    seen: list[str] = []

    def step(state: int, batch: str) -> tuple[int, dict]:
        seen.append(batch)
        return state + 1, {"loss": 0.0}

    plan = LoopPlan(warmup_steps=2, measure_steps=3)
    state, timings = run_loop(step, 0, ["a", "b"], plan, clock=lambda: float(next(ticks)))
    assert state == 1 + 2 + 3 + 3  # compile step, warm-up, per-step window, back-to-back window
    assert seen[:4] == ["a", "b", "a", "b"]  # staged batches cycled
    # Each synchronised step spans two clock reads (start, end) -> 1 tick each.
    assert timings.step_times.count == 3 and timings.step_times.p50 == 1.0
    assert timings.compile_seconds == 1.0
    # Back to back: the clock is read only before the first dispatch and after the final wait.
    assert timings.window_steps == 3 and timings.window_seconds == 1.0
    assert timings.warmup_steps == 2


def test_run_loop_stops_when_asked():
    from tunix_trainer.benchmark.runner import LoopPlan, run_loop

    class Stop(Exception):
        pass

    def check_stop(done: int) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        run_loop(lambda s, b: (s, None), 0, [0], LoopPlan(5, 5), check_stop=check_stop)
    with pytest.raises(ValueError):
        LoopPlan(0, 0)
    with pytest.raises(ValueError):
        LoopPlan(0, 1, profile_steps=2)  # profiling needs a directory


# --------------------------------------------------------------------------- the entry point (CPU)

TINY_BENCH: dict = {
    "apiVersion": "tunix.dev/v1alpha1",
    "kind": "TunixRun",
    "metadata": {"name": "bench-unit"},
    "spec": {
        "mode": "Benchmark",
        "model": {"preset": "tiny"},
        "training": {"steps": 50, "batchSize": 4, "seqLen": 64},
        "benchmark": {"warmupSteps": 1, "measureSteps": 4, "profileSteps": 2},
    },
}


def _write(tmp_path, doc: dict, name: str = "bench.yaml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_bench_end_to_end_json_profile_and_termination_log(tmp_path, monkeypatch, capsys):
    from tunix_trainer.bench import main

    monkeypatch.chdir(tmp_path)
    config = _write(tmp_path, TINY_BENCH)
    artifacts = tmp_path / "out"
    term = tmp_path / "termination-log"
    argv = ["--config", str(config), "--artifacts-uri", str(artifacts), "--termination-log", str(term)]
    assert main([*argv, "--json", "--profile", "--steps", "5"]) == 0

    doc = json.loads((artifacts / "benchmark.json").read_text())
    assert json.loads(capsys.readouterr().out) == doc  # --json prints the same document
    assert doc["kind"] == "benchmark" and doc["run"]["name"] == "bench-unit"
    assert doc["workload"]["tokensPerStep"] == 4 * 64 and doc["workload"]["syntheticData"] is True
    assert doc["model"]["vocabSize"] == 384 and doc["model"]["paramCount"] > 0
    assert doc["devices"]["platform"] == "cpu" and doc["devices"]["count"] >= 1
    st = doc["stepTime"]
    assert st["count"] == 5  # --steps overrides measureSteps
    assert 0 < st["minMs"] <= st["p50Ms"] <= st["p90Ms"] <= st["p99Ms"] <= st["maxMs"]
    assert doc["compileSeconds"] > 0 and doc["warmupSteps"] == 1
    assert doc["steadyState"]["steps"] == 5 and doc["steadyState"]["seconds"] > 0
    assert doc["tokensPerSecond"] == pytest.approx(256 * doc["stepsPerSecond"], rel=1e-9)
    assert doc["tokensPerSecondPerDevice"] == pytest.approx(doc["tokensPerSecond"] / doc["devices"]["count"])
    assert doc["mfu"] is None and "CPU" in doc["mfuNote"]  # no peak for CPU
    assert doc["peakMemoryBytes"] is None or doc["peakMemoryBytes"] > 0
    assert doc["modelFlopsPerSecond"] == pytest.approx(
        doc["model"]["flopsPerToken"] * 256 * doc["stepsPerSecond"], rel=1e-9
    )
    assert set(doc["versions"]) >= {"jax", "flax"}

    # --profile: a trace of the extra window under <artifacts>/profile
    traces = list((artifacts / "profile").rglob("*.xplane.pb"))
    assert traces, "no profiler trace written"
    # No checkpoints anywhere: not in the artifacts, not in the working directory.
    assert not list(tmp_path.rglob("checkpoints")) and not (tmp_path / "artifacts").exists()

    message = term.read_text()
    assert len(message.encode()) < TERMINATION_MESSAGE_LIMIT
    payload = json.loads(message)
    assert payload.pop("kind") == "benchmark"
    status = BenchmarkStatus.model_validate(payload)
    assert status.step_time_p50_ms == pytest.approx(st["p50Ms"], abs=1e-3)
    assert status.tokens_per_second == pytest.approx(doc["tokensPerSecond"], abs=0.1)
    assert status.mfu is None


def test_bench_checkpoint_cost_on_cpu(tmp_path, monkeypatch, capsys):
    """--checkpoint-cost 2: real async Orbax saves of the tiny state, in a removed temporary dir."""
    import tempfile

    from tunix_trainer.bench import main

    monkeypatch.chdir(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    doc = json.loads(json.dumps(TINY_BENCH))
    doc["spec"]["checkpoint"] = {"saveIntervalSteps": 25}
    artifacts, term = tmp_path / "out", tmp_path / "term"
    argv = ["--config", str(_write(tmp_path, doc)), "--artifacts-uri", str(artifacts)]
    rc = main(
        [*argv, "--warmup", "0", "--steps", "2", "--checkpoint-cost", "2", "--termination-log", str(term)]
    )
    assert rc == 0
    assert "checkpoint save" in capsys.readouterr().out

    result = json.loads((artifacts / "benchmark.json").read_text())
    cost = result["checkpoint"]
    assert cost["saves"] == 2 and cost["saveIntervalSteps"] == 25
    assert 0 < cost["blockingSecondsP50"] <= cost["blockingSecondsMax"]
    assert cost["blockingSecondsP50"] <= cost["saveSecondsP50"]
    # The saved state holds the float32 parameters (+ Adam moments): at least the parameters.
    assert cost["checkpointBytes"] >= 4 * result["model"]["paramCount"] * 0.5
    assert cost["stepTimeSeconds"] == pytest.approx(result["steadyState"]["stepTimeMs"] / 1e3)
    assert cost["stepsDuringSave"] == 20
    lost = max(cost["blockingSecondsP50"], cost["stallSecondsP50"], 0.0)
    assert cost["amortizedOverheadPercent"] == pytest.approx(100 * lost / (25 * cost["stepTimeSeconds"]))
    assert list(scratch.iterdir()) == []  # temporary checkpoints removed
    assert [p.name for p in artifacts.iterdir()] == ["benchmark.json"]  # no checkpoints in the artifacts
    assert not (tmp_path / "artifacts").exists()
    assert "checkpoint" not in json.loads(term.read_text())  # the status payload is unchanged


def test_bench_train_mode_dataset_to_object_store(tmp_path, monkeypatch, capsys, dataset):
    """A Train-mode spec benchmarked on its dataset, with the results in an object store (memory://)."""
    import fsspec

    from tunix_trainer.bench import main

    monkeypatch.chdir(tmp_path)
    doc = json.loads(json.dumps(TINY_BENCH))
    doc["spec"].update(mode="Train", dataset={"uri": str(dataset)}, benchmark={"syntheticData": False})
    config = _write(tmp_path, doc)
    assert (
        main(
            [
                "--config",
                str(config),
                "--artifacts-uri",
                "memory://bench/unit",
                "--warmup",
                "0",
                "--steps",
                "2",
                "--termination-log",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "step time (synced)" in table and "dataset" in table

    fs = fsspec.filesystem("memory")
    result = json.loads(fs.cat_file("/bench/unit/benchmark.json"))
    assert result["workload"]["syntheticData"] is False and result["stepTime"]["count"] == 2
    assert result["profileDir"] is None and not fs.exists("/bench/unit/profile")
    fs.rm("/bench", recursive=True)


def test_bench_profile_uploaded_to_object_store(tmp_path, monkeypatch):
    import fsspec

    from tunix_trainer.benchmark.output import upload_directory

    (tmp_path / "p" / "plugins").mkdir(parents=True)
    (tmp_path / "p" / "plugins" / "x.pb").write_bytes(b"trace")
    upload_directory(str(tmp_path / "p"), "memory://up/profile")
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/up/profile/plugins/x.pb") == b"trace"
    fs.rm("/up", recursive=True)


def test_resolve_settings_defaults_and_overrides():
    from tunix_api.training import BenchmarkSpec
    from tunix_trainer.bench import resolve_settings
    from tunix_trainer.errors import ConfigError

    assert resolve_settings(None, warmup=None, steps=None, profile=None) == BenchmarkSpec()
    spec = BenchmarkSpec(warmup_steps=7, measure_steps=9, synthetic_data=False)
    merged = resolve_settings(spec, warmup=0, steps=3, profile=True)
    assert (merged.warmup_steps, merged.measure_steps, merged.profile, merged.synthetic_data) == (
        0,
        3,
        True,
        False,
    )
    with pytest.raises(ConfigError, match=r"spec\.benchmark\.warmupSteps"):
        resolve_settings(None, warmup=-1, steps=None, profile=None)


@pytest.mark.parametrize(
    ("change", "extra_args", "needle"),
    [
        ({"training": {"steps": 0}}, [], "spec.training.steps"),
        ({"benchmark": {"syntheticData": False}}, [], "spec.benchmark.syntheticData"),
        ({}, ["--steps", "0"], "spec.benchmark.measureSteps"),
        ({}, ["--checkpoint-cost", "-1"], "--checkpoint-cost"),
        ({"model": {"preset": "tiny", "nHeads": 3}}, [], "spec.model"),
    ],
)
def test_bench_invalid_config_exits_2(tmp_path, monkeypatch, capsys, change, extra_args, needle):
    from tunix_trainer.bench import main

    monkeypatch.chdir(tmp_path)
    doc = json.loads(json.dumps(TINY_BENCH))
    doc["spec"].update(change)
    term = tmp_path / "term"
    rc = main(["--config", str(_write(tmp_path, doc)), "--termination-log", str(term), *extra_args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tunix-bench: invalid config:") and needle in err
    assert term.read_text().startswith("InvalidConfig: ")
    assert not (tmp_path / "artifacts").exists()


def test_bench_stops_on_signal_with_preempted(tmp_path, monkeypatch):
    import threading

    from tunix_trainer.bench import main

    monkeypatch.chdir(tmp_path)
    stop = threading.Event()
    stop.set()
    rc = main(
        ["--config", str(_write(tmp_path, TINY_BENCH)), "--termination-log", str(tmp_path / "t")],
        stop_event=stop,
    )
    assert rc == 75
    assert not (tmp_path / "artifacts" / "bench-unit" / "benchmark.json").exists()
