"""Where the benchmark's results go: ``benchmark.json``, the profile trace, the termination log."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tunix_api.artifacts import BENCHMARK_FILE, join_uri

log = logging.getLogger(__name__)


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local ``uri`` (``file://`` stripped)."""
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def write_benchmark_json(uri: str, document: dict[str, Any], storage_options: dict | None = None) -> str:
    """Write ``document`` as ``<uri>/benchmark.json`` (replaced whole) and return its URI."""
    target = join_uri(uri, BENCHMARK_FILE)
    data = (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
    fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)
    return target


def upload_directory(local_dir: str, uri: str, storage_options: dict | None = None) -> None:
    """Copy the tree ``local_dir`` to ``uri`` (an object-store prefix)."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    for directory, _, files in os.walk(local_dir):
        for name in files:
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, local_dir).replace(os.sep, "/")
            fs.put_file(source, root.rstrip("/") + "/" + relative)


def write_termination_message(path: str | None, text: str) -> None:
    """Write ``text`` to the termination log; a failure is logged, never raised."""
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)
