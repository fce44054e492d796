"""Pure parsing of what the trainer reports: termination message, progress.json, summary.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tunix_api.run import Progress, Summary
from tunix_operator.conditions import parse_time


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
    provenance = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else None
    return summary, provenance


def parse_termination_message(text: str | None) -> tuple[Summary | None, dict[str, str] | None]:
    """The trainer's compact JSON summary from a termination message (None when it is a log tail)."""
    return parse_summary(_json_object(text))


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
    return progress


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` stripped and cut to ``limit`` characters (an ellipsis marks the cut)."""
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
