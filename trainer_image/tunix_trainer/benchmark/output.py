"""Where the benchmark's profile trace goes: local paths as they are, object stores by upload."""

from __future__ import annotations

import os

import fsspec


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local ``uri`` (``file://`` stripped)."""
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def upload_directory(local_dir: str, uri: str, storage_options: dict | None = None) -> None:
    """Copy the tree ``local_dir`` to ``uri`` (an object-store prefix)."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    for directory, _, files in os.walk(local_dir):
        for name in files:
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, local_dir).replace(os.sep, "/")
            fs.put_file(source, root.rstrip("/") + "/" + relative)
