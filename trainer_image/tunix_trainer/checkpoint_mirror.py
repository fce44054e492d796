"""The object-store mirror of a local Orbax checkpoint directory (for ``s3://`` and the like).

Orbax writes each step to a local staging directory; :class:`ObjectStoreMirror` copies finished
steps to ``<uri>/<step>/`` on a background thread, writes the ``_TUNIX_COMMITTED`` marker last
(only marked steps count) and prunes to ``max_to_keep``. Every storage call is retried with
backoff up to the deadline of :mod:`tunix_trainer.storage_retry`, so an outage shorter than that
delays uploads but loses none; a longer one fails the next ``drain`` with a clear message.
Restoring downloads a step into staging first; a step that proves damaged is set aside remotely
as ``<step>.corrupt-<n>`` (uncommitted first), never deleted.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from tunix_trainer.artifact_io import bounded, open_fs
from tunix_trainer.errors import TrainerError
from tunix_trainer.storage_retry import retrying

COMMIT_MARKER = "_TUNIX_COMMITTED"
T = TypeVar("T")


def upload_tree(
    fs: fsspec.AbstractFileSystem,
    local_dir: str,
    prefix: str,
    retry: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> None:
    """Copy every file under ``local_dir`` to ``prefix`` on ``fs``, keeping relative paths."""
    for dirpath, _, filenames in os.walk(local_dir):
        for filename in filenames:
            local = os.path.join(dirpath, filename)
            remote = f"{prefix.rstrip('/')}/{os.path.relpath(local, local_dir).replace(os.sep, '/')}"
            limit = bounded(fs, os.path.getsize(local))

            def put(local: str = local, remote: str = remote, limit: dict = limit) -> None:
                fs.put_file(local, remote, **limit)

            if retry is None:
                put()
            else:
                retry(f"upload of {remote}", put)


def set_aside_name(step: int, existing: set[str]) -> str:
    """``<step>.corrupt-<n>`` with the smallest n >= 1 not in ``existing``."""
    n = 1
    while f"{step}.corrupt-{n}" in existing:
        n += 1
    return f"{step}.corrupt-{n}"


class ObjectStoreMirror:
    """Copies finished checkpoint steps between the staging directory and an object store."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None, max_to_keep: int) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = open_fs(self.uri, storage_options)
        self.root = root.rstrip("/")  # the path as the filesystem spells it (no scheme)
        self.max_to_keep = max_to_keep
        self._uploaded: set[int] = set()
        self.last_committed: int | None = None  # the newest step whose upload committed (for progress)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-upload")
        self._pending: list[concurrent.futures.Future[None]] = []

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        return retrying(f"checkpoint {what}", call)

    def _names(self) -> list[str]:
        def ls() -> list[str]:
            self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=False, **bounded(self.fs))
            except FileNotFoundError:
                return []
            return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

        return self._retry(f"listing of {self.uri}", ls)

    def steps(self) -> list[int]:
        """Committed steps, oldest first."""
        steps = []
        for name in self._names():
            marker = f"{self._step_path(int(name))}/{COMMIT_MARKER}" if name.isdigit() else None
            if marker and self._retry(
                f"check of {marker}", lambda marker=marker: self.fs.exists(marker, **bounded(self.fs))
            ):
                steps.append(int(name))
        return sorted(steps)

    def set_aside_names(self) -> list[str]:
        """Names of the steps set aside as damaged."""
        return sorted(name for name in self._names() if ".corrupt-" in name)

    def upload(self, step: int, local_dir: str) -> None:
        if step in self._uploaded:
            return
        self._uploaded.add(step)
        self._pending.append(self._pool.submit(self._upload, step, local_dir))

    def drain(self) -> None:
        """Wait for queued uploads; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result()
            except TrainerError:
                raise
            except Exception as exc:
                raise TrainerError(f"checkpoint upload to {self.uri} failed: {exc}") from exc

    def download(self, step: int, staging: str) -> None:
        target = os.path.join(staging, str(step))
        if os.path.isdir(target):
            return
        partial = target + ".download"
        shutil.rmtree(partial, ignore_errors=True)
        prefix = self._step_path(step)
        for remote in self._retry(f"listing of {prefix}", lambda: self.fs.find(prefix, **bounded(self.fs))):
            rel = remote[len(prefix) :].lstrip("/")
            if rel == COMMIT_MARKER:
                continue
            local = os.path.join(partial, rel)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self._retry(
                f"download of {remote}", lambda remote=remote, local=local: self.fs.get_file(remote, local)
            )
        os.makedirs(partial, exist_ok=True)  # an empty remote step stays an (empty) local one
        os.rename(partial, target)
        self._uploaded.add(step)

    def set_aside(self, step: int) -> str:
        """Uncommit ``step`` and move it to ``<step>.corrupt-<n>``; returns the new URI."""
        path = self._step_path(step)
        marker = f"{path}/{COMMIT_MARKER}"
        self._uploaded.discard(step)
        if self._exists(marker):
            self._rm(marker)
        name = set_aside_name(step, set(self._names()))
        listing = self._retry(
            f"listing of {path}", lambda: self.fs.find(path, detail=True, **bounded(self.fs))
        )
        for remote, info in listing.items():
            dest = f"{self.root}/{name}/{remote[len(path) :].lstrip('/')}"
            limit = bounded(self.fs, int(info.get("size") or 0))
            self._retry(f"copy of {remote}", lambda r=remote, d=dest, t=limit: self.fs.copy(r, d, **t))
        self._remove(path)
        return f"{self.uri}/{name}"

    def delete(self, steps: list[int]) -> None:
        for step in steps:
            self._uploaded.discard(step)
            path = self._step_path(step)
            marker = f"{path}/{COMMIT_MARKER}"
            if self._retry(
                f"check of {marker}", lambda marker=marker: self.fs.exists(marker, **bounded(self.fs))
            ):
                # uncommit first: a half-deleted step is never restored
                self._retry(
                    f"removal of {marker}", lambda marker=marker: self.fs.rm(marker, **bounded(self.fs))
                )
            self._remove(path)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _exists(self, path: str) -> bool:
        return self._retry(f"check of {path}", lambda: self.fs.exists(path, **bounded(self.fs)))

    def _rm(self, path: str) -> None:
        self._retry(f"removal of {path}", lambda: self.fs.rm(path, **bounded(self.fs)))

    def _remove(self, path: str) -> None:
        def rm() -> None:
            if self.fs.exists(path, **bounded(self.fs)):
                self.fs.rm(path, recursive=True, **bounded(self.fs))

        self._retry(f"removal of {path}", rm)

    def _upload(self, step: int, local_dir: str) -> None:
        prefix = self._step_path(step)
        upload_tree(self.fs, local_dir, prefix, retry=self._retry)
        marker = f"{prefix}/{COMMIT_MARKER}"
        self._retry(f"commit of {prefix}", lambda: self.fs.pipe_file(marker, b"", **bounded(self.fs)))
        self.last_committed = max(step, self.last_committed or step)
        committed = self.steps()
        self.delete(committed[: max(len(committed) - self.max_to_keep, 0)])

    def _step_path(self, step: int) -> str:
        return f"{self.root}/{step}"
