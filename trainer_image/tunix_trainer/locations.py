"""Where a run's artifacts and checkpoints go: one rule for tunix-train in a pod and the local CLI."""

from __future__ import annotations

import os

from tunix_api.artifacts import join_uri
from tunix_trainer.artifact_io import resolve_uri
from tunix_trainer.config import LoadedRun

CHECKPOINT_SUBDIR = "checkpoints"
DEFAULT_ARTIFACTS_DIR = "artifacts"


def absolute_uri(uri: str, base_dir: str | None = None) -> str:
    """A URI without its trailing slash; a plain path made absolute against ``base_dir`` (or the cwd)."""
    return uri.rstrip("/") if "://" in uri else resolve_uri(uri, base_dir)


def run_locations(
    run: LoadedRun, artifacts_uri: str | None = None, checkpoint_uri: str | None = None
) -> tuple[str, str]:
    """(artifacts URI, checkpoint URI), plain paths made absolute against the cwd.

    Artifacts: ``artifacts_uri`` (a flag; the operator passes it), else ``spec.storage.uri``, else
    ``./artifacts/<name>``. Checkpoints: ``checkpoint_uri``, else ``spec.checkpoint.uri``, else
    ``<artifacts>/checkpoints``.
    """
    spec = run.spec
    artifacts = absolute_uri(
        artifacts_uri or spec.storage.uri or os.path.join(DEFAULT_ARTIFACTS_DIR, run.name)
    )
    checkpoints = checkpoint_uri or spec.checkpoint.uri
    return artifacts, absolute_uri(checkpoints) if checkpoints else join_uri(artifacts, CHECKPOINT_SUBDIR)
