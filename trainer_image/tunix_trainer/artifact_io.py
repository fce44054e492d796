"""Storage I/O for the run's artifacts: fsspec options, whole-object writes, JSON, retries.

Objects are replaced whole (temp file + ``os.replace`` on a local disk, one PUT elsewhere), so a
reader never sees a partial document. Calls on object stores go through
:func:`tunix_trainer.storage_retry.retrying` (local disks are not retried), and S3 filesystems get
bounded connect/read timeouts (``storage_retry.s3_config``) so a black-holed connection fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from tunix_trainer.storage_retry import call_timeout, retrying, s3_config

T = TypeVar("T")


def resolve_uri(uri: str, base_dir: str | None = None) -> str:
    """``uri`` unchanged when it has a scheme (s3://, file://, memory://...); a plain path made
    absolute against ``base_dir`` (itself a path or URI) or the current directory."""
    if "://" in uri:
        return uri
    path = os.path.expanduser(uri)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if base_dir and "://" in base_dir:
        return base_dir.rstrip("/") + "/" + path
    return os.path.normpath(os.path.join(base_dir or os.getcwd(), path))


def open_uri(
    uri: str, mode: str = "rb", storage_options: dict[str, Any] | None = None
) -> fsspec.core.OpenFile:
    """``fsspec.open`` for paths and URIs alike; use as a context manager."""
    return fsspec.open(uri, mode, **(storage_options or {}))


def open_fs(uri: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for ``uri``; S3 gets bounded timeouts and leaves retrying to us."""
    options = dict(options or {})
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("s3", "s3a"):
        options["config_kwargs"] = {**s3_config(), **options.get("config_kwargs", {})}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if scheme in ("s3", "s3a"):
        fs.retries = 1  # s3fs would retry a timed-out call 5 times; storage_retry owns the deadline
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def bounded(fs: fsspec.AbstractFileSystem, nbytes: int = 0) -> dict[str, float]:
    """``timeout=`` for a call on an asynchronous filesystem (fsspec cancels it after that long)."""
    return {"timeout": call_timeout(nbytes)} if isinstance(fs, AsyncFileSystem) else {}


def with_retries(fs: fsspec.AbstractFileSystem, what: str, call: Callable[[], T]) -> T:
    """``call()``, retried on transient errors unless ``fs`` is a local disk."""
    return call() if is_local(fs) else retrying(what, call)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/JAX scalars unwrapped, non-finite floats None."""
    if hasattr(value, "item") and not isinstance(value, dict | list | tuple | str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace ``path`` whole: temp file + ``os.replace`` locally, one PUT elsewhere (retried)."""
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.filename is None:  # e.g. a full disk: say which file
                raise OSError(exc.errno, exc.strerror, path) from exc
            raise
    else:
        retrying(f"write of {path}", lambda: fs.pipe_file(path, data, **bounded(fs, len(data))))


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """Contents of ``path``, or None if it does not exist (retried on object stores)."""

    def read() -> bytes | None:
        fs.invalidate_cache(path)
        try:
            return fs.cat_file(path, **bounded(fs))
        except FileNotFoundError:
            return None

    return with_retries(fs, f"read of {path}", read)


def write_json(uri: str, document: dict, storage_options: dict | None = None) -> None:
    """Replace the JSON object at ``uri`` whole (atomically on local disk, one PUT elsewhere)."""
    fs, path = open_fs(uri, storage_options)
    write_atomic(fs, path, (json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n").encode())


def read_json(uri: str, storage_options: dict | None = None) -> dict | None:
    """The JSON object at ``uri`` (progress.json, summary.json...), or None if missing."""
    fs, path = open_fs(uri, storage_options)
    data = read_bytes(fs, path)
    if data is None:
        return None
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError(f"{uri}: expected a JSON object, found {type(doc).__name__}")
    return doc
