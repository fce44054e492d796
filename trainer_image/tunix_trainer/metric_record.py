"""One line of metrics.jsonl: the typed record of one optimizer step, or of one evaluation."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricRecord:
    """The measurements of optimizer step ``step`` (1-based), as written to metrics.jsonl.

    ``includes_compile`` marks an attempt's first step, whose time includes tracing and
    compilation (left out of the summary's average throughput); ``restored_from`` is set on an
    attempt's first record when it resumed from a checkpoint (that step).
    """

    step: int
    loss: float
    learning_rate: float
    grad_norm: float
    tokens: int
    tokens_per_second: float | None
    step_time_seconds: float
    includes_compile: bool
    wall_time_seconds: float
    timestamp: str
    restored_from: int | None = None

    @classmethod
    def measure(
        cls,
        *,
        step: int,
        values: dict[str, float],
        tokens: int,
        step_time: float,
        wall_time: float,
        now: dt.datetime,
        includes_compile: bool = False,
        restored_from: int | None = None,
    ) -> MetricRecord:
        """The record of ``step`` from the train step's ``values`` (loss, learning_rate, grad_norm)."""
        return cls(
            step=step,
            loss=values["loss"],
            learning_rate=values["learning_rate"],
            grad_norm=values["grad_norm"],
            tokens=tokens,
            tokens_per_second=tokens / step_time if step_time > 0 else None,
            step_time_seconds=step_time,
            includes_compile=includes_compile,
            wall_time_seconds=wall_time,
            timestamp=now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            restored_from=restored_from,
        )

    def to_json(self) -> dict[str, Any]:
        """The metrics.jsonl object (``restored_from`` only when set)."""
        doc = dataclasses.asdict(self)
        if doc["restored_from"] is None:
            del doc["restored_from"]
        return doc


EVAL_KIND = "eval"


def is_eval(record: dict[str, Any]) -> bool:
    """Whether a metrics.jsonl record is an evaluation's (step records carry no ``kind``)."""
    return record.get("kind") == EVAL_KIND


@dataclass(frozen=True)
class EvalRecord:
    """A held-out evaluation after optimizer step ``step``: the mean ``loss`` over ``tokens`` target
    tokens (``perplexity`` = exp(loss)) of ``batches`` batches, which took ``seconds``."""

    step: int
    loss: float
    perplexity: float
    tokens: int
    batches: int
    seconds: float
    timestamp: str
    kind: str = EVAL_KIND

    @classmethod
    def measure(cls, *, step: int, result: Any, now: dt.datetime) -> EvalRecord:
        """The record of ``result`` (an ``evaluation.EvalResult``) taken after ``step``."""
        return cls(
            step=step,
            loss=result.loss,
            perplexity=result.perplexity,
            tokens=result.tokens,
            batches=result.batches,
            seconds=result.seconds,
            timestamp=now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
