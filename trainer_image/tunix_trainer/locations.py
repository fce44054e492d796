"""Where a run's artifacts and checkpoints go: one rule for tunix-train in a pod and the local CLI."""

from __future__ import annotations

import os

from tunix_api.artifacts import join_uri
from tunix_trainer.config import LoadedRun

CHECKPOINT_SUBDIR = "checkpoints"
DEFAULT_ARTIFACTS_DIR = "artifacts"


def absolute_uri(uri: str, base_dir: str | None = None) -> str:
    """A URI unchanged; a plain path made absolute against ``base_dir`` (default: the cwd)."""
    if "://" in uri:
        return uri.rstrip("/")
    path = os.path.expanduser(uri)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir or os.getcwd(), path))


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
