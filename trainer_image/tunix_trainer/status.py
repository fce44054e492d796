"""Map the trainer's summary.json onto the TunixRun status (pure; pydantic only).

The operator builds ``.status.summary`` with :func:`summary_to_status_summary`, and
the local CLI prints :func:`status_from_summary`, so a local run shows the same
status block a cluster run would get.
"""

from __future__ import annotations

import json
from typing import Any

from tunix_api.run import CheckpointStatus, Phase, Summary, TunixRunStatus

_SUMMARY_KEYS = tuple(Summary.model_fields)


def summary_to_status_summary(summary: dict[str, Any]) -> Summary:
    """``.status.summary`` from summary.json (snake_case) or the termination message (camelCase).

    Keys outside ``tunix_api.run.Summary`` (provenance, extras of newer trainers) are ignored.
    """
    fields = {}
    for name in _SUMMARY_KEYS:
        alias = Summary.model_fields[name].alias or name
        if summary.get(name) is not None:
            fields[name] = summary[name]
        elif summary.get(alias) is not None:
            fields[name] = summary[alias]
    return Summary(**fields)


def provenance_strings(provenance: dict[str, Any]) -> dict[str, str]:
    """Provenance with string values (as ``.status.provenance`` needs): others as compact JSON."""
    return {
        str(key): value if isinstance(value, str) else _compact_json(value)
        for key, value in provenance.items()
    }


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def status_from_summary(
    summary: dict[str, Any], *, metrics_uri: str, checkpoint_uri: str, latest_checkpoint_step: int | None
) -> dict:
    """The ``.status`` of a run that succeeded with ``summary``, as it appears on the wire."""
    status = TunixRunStatus(
        phase=Phase.SUCCEEDED,
        summary=summary_to_status_summary(summary),
        metrics_uri=metrics_uri,
        checkpoint=CheckpointStatus(latest_step=latest_checkpoint_step, uri=checkpoint_uri),
        provenance=provenance_strings(summary.get("provenance") or {}) or None,
    )
    return status.to_wire()
