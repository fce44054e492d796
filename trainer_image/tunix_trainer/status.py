"""The ``.status`` block of a finished local run (pure; pydantic only).

``Summary.model_validate`` reads summary.json (snake_case) and the termination message
(camelCase) alike, and ``provenance_strings`` is the contract's: the operator maps what it reads
back the same way, so a local run shows the status block a cluster run would get.
"""

from __future__ import annotations

from typing import Any

from tunix_api.run import CheckpointStatus, ModelStatus, Phase, Summary, TunixRunStatus, provenance_strings


def status_from_summary(
    summary: dict[str, Any], *, metrics_uri: str, checkpoint_uri: str, latest_checkpoint_step: int | None
) -> dict:
    """The ``.status`` of a run that succeeded with ``summary``, as it appears on the wire."""
    status = TunixRunStatus(
        phase=Phase.SUCCEEDED,
        summary=Summary.model_validate(summary),
        metrics_uri=metrics_uri,
        checkpoint=CheckpointStatus(latest_step=latest_checkpoint_step, uri=checkpoint_uri),
        provenance=provenance_strings(summary.get("provenance") or {}) or None,
        model=ModelStatus(uri=summary["model_uri"]) if summary.get("model_uri") else None,
    )
    return status.to_wire()
