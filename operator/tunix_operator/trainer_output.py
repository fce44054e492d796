"""Pure parsing of what the trainer reports: termination message, progress.json, summary.json,
and (Benchmark mode) the benchmark termination message and benchmark.json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tunix_api.run import BenchmarkStatus, Progress, Summary, provenance_strings
from tunix_operator.conditions import parse_time

# The "kind" of tunix-bench's termination message and of benchmark.json.
BENCHMARK_KIND = "benchmark"


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_summary(data: Mapping[str, Any] | None) -> tuple[Summary | None, dict[str, str] | None]:
    """(summary, provenance) from a camelCase summary object; (None, None) if unusable."""
    if not data:
        return None, None
    try:
        summary = Summary.model_validate(dict(data))
    except ValidationError:
        return None, None
    if summary == Summary():
        return None, None
    raw = data.get("provenance")
    provenance = provenance_strings(raw) if isinstance(raw, dict) else None
    return summary, provenance


def parse_termination_message(text: str | None) -> tuple[Summary | None, dict[str, str] | None]:
    """The trainer's compact JSON summary from a termination message (None when it is a log tail)."""
    return parse_summary(_json_object(text))


def _benchmark_status(values: Mapping[str, Any]) -> BenchmarkStatus | None:
    """A BenchmarkStatus from camelCase values; non-finite numbers dropped; None if empty or invalid."""
    finite = {k: v for k, v in values.items() if not (isinstance(v, float) and not math.isfinite(v))}
    try:
        status = BenchmarkStatus.model_validate(finite)
    except ValidationError:
        return None
    return None if status == BenchmarkStatus() else status


def parse_benchmark_message(text: str | None) -> BenchmarkStatus | None:
    """status.benchmark from tunix-bench's termination message (compact JSON, ``"kind": "benchmark"``).

    None when the message is not a benchmark result (empty, a log tail, a training summary) or
    when its values do not fit ``BenchmarkStatus``.
    """
    data = _json_object(text)
    if data is None or data.get("kind") != BENCHMARK_KIND:
        return None
    return _benchmark_status({k: v for k, v in data.items() if k != "kind"})


def parse_benchmark_document(data: Mapping[str, Any] | None) -> BenchmarkStatus | None:
    """status.benchmark from the ``benchmark.json`` document (its ``status`` object); None if unusable."""
    if not data or data.get("kind") != BENCHMARK_KIND:
        return None
    status = data.get("status")
    return _benchmark_status(status) if isinstance(status, Mapping) else None


def describe_message(text: str | None, limit: int = 120) -> str:
    """Why a termination message is not a benchmark result, for status.message."""
    if not text or not text.strip():
        return "no termination message"
    data = _json_object(text)
    if data is None:
        return f"the termination message is not a JSON object: {truncate(text, limit)!r}"
    kind = data.get("kind")
    if kind == BENCHMARK_KIND:
        return "the termination message has invalid benchmark values"
    if kind is not None:
        return f"the termination message is not a benchmark result (kind {kind!r})"
    if parse_summary(data)[0] is not None:
        return "the termination message is a training summary, not a benchmark result"
    return "the termination message is not a benchmark result (no kind)"


def step_of_total(step: int | None, total: int | None) -> str | None:
    if step is None:
        return None
    return f"{step}/{total}" if total is not None else str(step)


def parse_progress(data: Mapping[str, Any] | None, not_before: datetime | None = None) -> Progress | None:
    """status.progress from progress.json; None if unusable or written before ``not_before``
    (a leftover of an earlier run with the same name)."""
    if not data:
        return None
    try:
        progress = Progress.model_validate(dict(data))
    except ValidationError:
        return None
    updated = parse_time(progress.updated_at)
    if not_before is not None and updated is not None and updated < not_before:
        return None
    progress.step_of_total = step_of_total(progress.step, progress.total_steps)
    return for_people(progress)


def significant(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None and non-finite values pass through)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def for_people(progress: Progress) -> Progress:
    """Progress as the printer columns show it: loss and eval loss to 4 significant digits,
    throughput to whole tokens/s (4 significant digits below 1000), the ETA to whole seconds, MFU to
    4 decimals. Full precision stays in metrics.jsonl and status.summary."""
    tokens, eta, mfu = progress.tokens_per_second, progress.eta_seconds, progress.mfu
    return progress.model_copy(
        update={
            "loss": significant(progress.loss),
            "eval_loss": significant(progress.eval_loss),
            "tokens_per_second": _whole(tokens)
            if tokens is not None and tokens >= 1000
            else significant(tokens),
            "eta_seconds": _whole(eta),
            "mfu": round(mfu, 4) if mfu is not None and math.isfinite(mfu) else mfu,
        }
    )


def _whole(value: float | None) -> float | None:
    return float(round(value)) if value is not None and math.isfinite(value) else value


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` stripped and cut to ``limit`` characters (an ellipsis marks the cut)."""
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
