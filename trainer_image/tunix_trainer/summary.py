"""summary.json and the termination message: what a finished run reports.

``summary.json`` (snake_case keys) is written once at the end of training; the termination
message holds its compact camelCase form (``tunix_api.run.Summary`` plus provenance), always under
the kubelet's 4 KiB limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from tunix_api.artifacts import TERMINATION_MESSAGE_LIMIT
from tunix_api.run import Summary, provenance_strings
from tunix_trainer.artifact_io import json_safe
from tunix_trainer.metric_record import is_eval
from tunix_trainer.metric_store import merge_records


def _num(record: dict, key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def summarize(records: list[dict], *, wall_time_seconds: float, provenance: dict) -> dict:
    """The summary.json document (snake_case keys) for a run's metric records.

    * ``final_loss``: the loss of the last record; ``best_loss``/``best_step``: the
      lowest finite loss and its step; ``total_steps``: the last record's step.
    * ``total_tokens``: ``tokens`` is the count of the logged step; steps between two
      records (``logEverySteps`` > 1, or a gap) are taken to have the count of the
      record that ends the interval, so the total covers every step 1..total_steps.
    * ``avg_tokens_per_second``: tokens over step time summed across the records that
      have both, leaving out the steps marked ``includes_compile`` (each attempt's first
      step); ``total_tokens / wall_time_seconds`` when no record qualifies.
    * ``final_eval_loss``: the loss of the last evaluation record (``"kind": "eval"``), the one after
      the last step; ``best_eval_loss``/``best_eval_step``: the lowest finite evaluation loss and its
      step (absent without evaluation).
    """
    merged = merge_records(records)
    ordered = [r for r in merged if not is_eval(r)]
    evals = [(int(r["step"]), _num(r, "loss")) for r in merged if is_eval(r)]
    finite_evals = [(step, loss) for step, loss in evals if loss is not None]
    best_eval_step, best_eval_loss = (
        min(finite_evals, key=lambda item: item[1]) if finite_evals else (None, None)
    )
    losses = [(r["step"], _num(r, "loss")) for r in ordered]
    finite = [(step, loss) for step, loss in losses if loss is not None]
    best_step, best_loss = min(finite, key=lambda item: item[1]) if finite else (None, None)

    total_tokens, previous = 0, 0
    step_tokens = step_time = 0.0
    for record in ordered:
        tokens = _num(record, "tokens")
        seconds = _num(record, "step_time_seconds")
        if tokens is not None:
            total_tokens += int(tokens) * max(int(record["step"]) - previous, 1)
            if seconds is not None and seconds > 0 and not record.get("includes_compile"):
                step_tokens += tokens
                step_time += seconds
        previous = int(record["step"])
    if step_time > 0:
        avg_tps: float | None = step_tokens / step_time
    elif wall_time_seconds > 0 and total_tokens:
        avg_tps = total_tokens / wall_time_seconds
    else:
        avg_tps = None

    return json_safe(
        {
            "final_loss": losses[-1][1] if losses else None,
            "best_loss": best_loss,
            "best_step": best_step,
            "total_steps": int(ordered[-1]["step"]) if ordered else 0,
            "total_tokens": total_tokens,
            "avg_tokens_per_second": avg_tps,
            "wall_time_seconds": float(wall_time_seconds),
            "provenance": dict(provenance),
            **(
                {
                    "final_eval_loss": evals[-1][1],
                    "best_eval_loss": best_eval_loss,
                    "best_eval_step": best_eval_step,
                }
                if evals
                else {}
            ),
        }
    )


def compact_summary(summary: dict, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The summary as compact JSON for the termination message, always < ``limit`` bytes.

    Keys are camelCase as in ``tunix_api.run.Summary`` plus ``provenance`` (string
    values). Provenance is trimmed to fit: long values are shortened (ending in
    ``...``), then keys are dropped from the end, then provenance goes altogether.
    """
    summary = json_safe(summary)
    core = Summary.model_validate(summary).to_wire()
    provenance = provenance_strings(summary.get("provenance") or {})

    def encode(prov: dict[str, str] | None) -> str:
        doc = dict(core) if prov is None else {**core, "provenance": prov}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    def fits(text: str) -> bool:
        return len(text.encode()) < limit

    text = encode(provenance)
    if fits(text):
        return text
    longest = max((len(v) for v in provenance.values()), default=0)
    for width in _shrinking(longest):
        trimmed = {k: v if len(v) <= width else v[: max(width - 3, 0)] + "..." for k, v in provenance.items()}
        text = encode(trimmed)
        if fits(text):
            return text
    trimmed = {k: v[:16] for k, v in provenance.items()}
    while trimmed:
        trimmed.pop(next(reversed(trimmed)))
        text = encode(trimmed)
        if fits(text):
            return text
    text = encode(None)
    if fits(text):
        return text
    raise ValueError(f"a summary cannot fit in {limit} bytes")


def _shrinking(start: int) -> Iterable[int]:
    width = start
    while width > 16:
        width = width * 3 // 4
        yield width
