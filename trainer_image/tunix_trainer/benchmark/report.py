"""The benchmark result: derived figures, ``benchmark.json``, the status message and a table (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunix_api.artifacts import TERMINATION_MESSAGE_LIMIT
from tunix_api.run import BenchmarkStatus
from tunix_trainer.benchmark.checkpoint_cost import OVERHEAD_BUDGET_PERCENT, CheckpointCost
from tunix_trainer.benchmark.hardware import DeviceInfo, PeakLookup
from tunix_trainer.benchmark.mfu import mfu, model_flops_per_second
from tunix_trainer.benchmark.stats import StepTimes

STATUS_KIND = "benchmark"


@dataclass(frozen=True)
class Workload:
    """What one optimizer step computes."""

    model_name: str
    param_count: int
    flops_per_token: float
    vocab_size: int
    batch_size: int
    seq_len: int
    grad_accum_steps: int
    compute_dtype: str
    param_dtype: str
    synthetic_data: bool

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


@dataclass(frozen=True)
class Timings:
    """Raw measurements from the timing loop (seconds)."""

    compile_seconds: float
    warmup_steps: int
    step_times: StepTimes  # each step dispatched and awaited on its own
    window_seconds: float  # ``window_steps`` dispatched back to back, awaited once at the end
    window_steps: int


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything ``tunix-bench`` reports. Throughput and MFU use the back-to-back window."""

    run_name: str
    namespace: str | None
    config_hash: str | None
    workload: Workload
    timings: Timings
    devices: DeviceInfo
    peak: PeakLookup
    peak_memory_bytes: int | None
    versions: dict[str, str]
    profile_dir: str | None = None
    created_at: str | None = None
    checkpoint: CheckpointCost | None = None  # ``--checkpoint-cost``; benchmark.json and table only
    state_sizes: dict[str, int] | None = None  # ``lora.state_sizes``; benchmark.json and table only

    @property
    def steps_per_second(self) -> float:
        return self.timings.window_steps / self.timings.window_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.workload.tokens_per_step * self.steps_per_second

    @property
    def tokens_per_second_per_device(self) -> float:
        return self.tokens_per_second / self.devices.count

    @property
    def steady_step_seconds(self) -> float:
        return self.timings.window_seconds / self.timings.window_steps

    @property
    def model_flops_per_second(self) -> float:
        return model_flops_per_second(
            self.workload.flops_per_token, self.workload.tokens_per_step, self.steady_step_seconds
        )

    @property
    def mfu(self) -> float | None:
        return mfu(
            self.workload.flops_per_token,
            self.workload.tokens_per_step,
            self.steady_step_seconds,
            self.peak.flops,
            self.devices.count,
        )

    def to_json(self) -> dict[str, Any]:
        """The full ``benchmark.json`` document (camelCase keys)."""
        w, t, st = self.workload, self.timings, self.timings.step_times
        return {
            "kind": STATUS_KIND,
            "run": {"name": self.run_name, "namespace": self.namespace, "configHash": self.config_hash},
            "createdAt": self.created_at,
            "model": {
                "name": w.model_name,
                "paramCount": w.param_count,
                "flopsPerToken": w.flops_per_token,
                "vocabSize": w.vocab_size,
            },
            "workload": {
                "batchSize": w.batch_size,
                "seqLen": w.seq_len,
                "gradAccumSteps": w.grad_accum_steps,
                "tokensPerStep": w.tokens_per_step,
                "computeDtype": w.compute_dtype,
                "paramDtype": w.param_dtype,
                "syntheticData": w.synthetic_data,
            },
            "devices": {
                "platform": self.devices.platform,
                "kind": self.devices.kind,
                "count": self.devices.count,
                "localCount": self.devices.local_count,
                "processCount": self.devices.process_count,
            },
            "compileSeconds": t.compile_seconds,
            "warmupSteps": t.warmup_steps,
            "stepTime": {
                "note": "each step dispatched and awaited (block_until_ready) on its own",
                "count": st.count,
                "meanMs": st.mean * 1e3,
                "p50Ms": st.p50 * 1e3,
                "p90Ms": st.p90 * 1e3,
                "p99Ms": st.p99 * 1e3,
                "minMs": st.min * 1e3,
                "maxMs": st.max * 1e3,
                "stepsPerSecond": 1.0 / st.mean,
            },
            "steadyState": {
                "note": "steps dispatched back to back, awaited once; throughput and MFU use this",
                "steps": t.window_steps,
                "seconds": t.window_seconds,
                "stepTimeMs": self.steady_step_seconds * 1e3,
            },
            "stepsPerSecond": self.steps_per_second,
            "tokensPerSecond": self.tokens_per_second,
            "tokensPerSecondPerDevice": self.tokens_per_second_per_device,
            "modelFlopsPerSecond": self.model_flops_per_second,
            "peakFlopsPerDevice": self.peak.flops,
            "peakMatched": self.peak.matched,
            "mfu": self.mfu,
            "mfuNote": self.peak.note,
            "peakMemoryBytes": self.peak_memory_bytes,
            "profileDir": self.profile_dir,
            "checkpoint": self.checkpoint.to_json() if self.checkpoint is not None else None,
            "trainState": _train_state_json(self.state_sizes),
            "versions": dict(self.versions),
            "status": benchmark_status(self).to_wire(),  # what status.benchmark holds
        }


def _train_state_json(sizes: dict[str, int] | None) -> dict[str, int] | None:
    if sizes is None:
        return None
    return {
        "parameters": sizes["parameters"],
        "trainedParameters": sizes["trained_parameters"],
        "parameterBytes": sizes["parameter_bytes"],
        "optimizerBytes": sizes["optimizer_bytes"],
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def benchmark_status(result: BenchmarkResult) -> BenchmarkStatus:
    """What the operator writes into ``status.benchmark`` (rounded for people)."""
    st = result.timings.step_times
    return BenchmarkStatus(
        compile_seconds=_round(result.timings.compile_seconds, 3),
        step_time_p50_ms=_round(st.p50 * 1e3, 3),
        step_time_p90_ms=_round(st.p90 * 1e3, 3),
        step_time_p99_ms=_round(st.p99 * 1e3, 3),
        steps_per_second=_round(result.steps_per_second, 4),
        tokens_per_second=_round(result.tokens_per_second, 1),
        tokens_per_second_per_device=_round(result.tokens_per_second_per_device, 1),
        mfu=_round(result.mfu, 4),
        peak_memory_bytes=result.peak_memory_bytes,
    )


def status_payload(result: BenchmarkResult) -> dict[str, Any]:
    """:func:`benchmark_status` (camelCase, every field) plus ``"kind": "benchmark"``."""
    return {"kind": STATUS_KIND, **benchmark_status(result).model_dump(by_alias=True)}


def termination_message(result: BenchmarkResult) -> str:
    """Compact JSON of :func:`status_payload`, within the kubelet's termination-message limit."""
    text = json.dumps(status_payload(result), separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:  # cannot happen with fixed keys; guard anyway
        raise ValueError("benchmark status message exceeds the termination-message limit")
    return text


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def format_bytes(n: int | None) -> str:
    """``n`` bytes in binary units (``n/a`` for ``None``)."""
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_checkpoint_cost(cost: CheckpointCost) -> str:
    """One table line: blocking, stall and durable save times, size, and the amortised overhead."""
    verdict = "within" if cost.within_budget else "OVER"
    return (
        f"{cost.saves} saves of {format_bytes(cost.checkpoint_bytes)}: "
        f"blocking p50 {cost.blocking_p50 * 1e3:.1f} ms (max {cost.blocking_max * 1e3:.1f} ms), "
        f"stall p50 {cost.stall_p50 * 1e3:.1f} ms over {cost.steps_during_save} steps, "
        f"durable p50 {cost.save_p50:.3f} s; "
        f"every {cost.save_interval_steps} steps = {cost.amortized_overhead_percent:.3f}% of training time "
        f"({verdict} the {OVERHEAD_BUDGET_PERCENT:g}% budget)"
    )


def format_table(result: BenchmarkResult) -> str:
    """A readable two-column summary for the terminal."""
    w, t, st, d = result.workload, result.timings, result.timings.step_times, result.devices
    mfu_text = _fmt(result.mfu, ".2%") if result.mfu is not None else f"n/a ({result.peak.note})"
    rows = [
        ("run", result.run_name),
        ("devices", f"{d.count} x {d.kind} ({d.platform}, {d.process_count} process(es))"),
        ("model", f"{w.model_name}, {w.param_count:,} params, {w.flops_per_token:.4g} FLOP/token"),
        (
            "batch x seq",
            f"{w.batch_size} x {w.seq_len} = {w.tokens_per_step:,} tokens/step"
            f" (grad accum {w.grad_accum_steps})",
        ),
        ("precision", f"compute {w.compute_dtype}, params {w.param_dtype}"),
        ("data", "synthetic (full vocabulary)" if w.synthetic_data else "dataset"),
        ("compile", f"{t.compile_seconds:.3f} s (first step)"),
        ("warm-up", f"{t.warmup_steps} steps (not timed)"),
        (
            "step time (synced)",
            f"p50 {st.p50 * 1e3:.2f} ms, p90 {st.p90 * 1e3:.2f} ms, "
            f"p99 {st.p99 * 1e3:.2f} ms, mean {st.mean * 1e3:.2f} ms over {st.count}",
        ),
        (
            "steady state",
            f"{t.window_steps} steps in {t.window_seconds:.3f} s "
            f"({result.steady_step_seconds * 1e3:.2f} ms/step, back to back)",
        ),
        ("steps/s", f"{result.steps_per_second:.3f}"),
        (
            "tokens/s",
            f"{result.tokens_per_second:,.0f} ({result.tokens_per_second_per_device:,.0f} per device)",
        ),
        ("model FLOP/s", f"{result.model_flops_per_second:.4g}"),
        ("MFU", mfu_text),
        ("peak memory", format_bytes(result.peak_memory_bytes)),
        ("versions", ", ".join(f"{k} {v}" for k, v in result.versions.items())),
    ]
    if result.profile_dir:
        rows.append(("profile", result.profile_dir))
    if result.checkpoint is not None:
        rows.append(("checkpoint save", format_checkpoint_cost(result.checkpoint)))
    if result.state_sizes is not None:
        sizes = result.state_sizes
        rows.append(
            (
                "train state",
                f"{sizes['trained_parameters']:,} of {sizes['parameters']:,} params trained; "
                f"params {format_bytes(sizes['parameter_bytes'])}, "
                f"optimizer state {format_bytes(sizes['optimizer_bytes'])}",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
