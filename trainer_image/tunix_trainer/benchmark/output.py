"""Where the benchmark's profile trace goes when the artifacts live in an object store."""

from __future__ import annotations

import fsspec

from tunix_trainer.checkpoint_mirror import upload_tree


def upload_directory(local_dir: str, uri: str, storage_options: dict | None = None) -> None:
    """Copy the tree ``local_dir`` to ``uri`` (an object-store prefix)."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    upload_tree(fs, local_dir, root)
