"""Where a Hugging Face-format model's files are: a local directory, any fsspec URI (s3://, gs://,
file://, memory://), or ``hf://org/name[@revision]`` on the Hugging Face Hub.

Files are fetched one at a time and only when asked for, so ``config.json`` is read (and the model
checked) before any weight is downloaded. Remote files land in a local cache directory (safetensors
memory-maps local files); local files are used in place. Every failure is a ``DataError`` naming the
file's URI (offline Hub access included).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from tunix_trainer.artifact_io import open_uri, resolve_uri
from tunix_trainer.data import DataError

HF_SCHEME = "hf://"


def parse_hf_uri(uri: str) -> tuple[str, str | None]:
    """``hf://org/name[@revision]`` -> (repo id, revision or None)."""
    rest = uri[len(HF_SCHEME) :].strip("/")
    repo, _, revision = rest.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DataError(f"{uri}: expected hf://<org>/<name>[@<revision>]")
    return repo, revision or None


class ModelFiles:
    """The files of one model directory, fetched lazily (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict[str, Any] | None = None,
        base_dir: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.uri = uri if uri.startswith(HF_SCHEME) else resolve_uri(uri, base_dir)
        self._options = storage_options or {}
        self._cache_dir = cache_dir
        self._owns_cache = False  # True once it made a temporary directory of its own
        self._hub = parse_hf_uri(self.uri) if self.uri.startswith(HF_SCHEME) else None
        local = self.uri.removeprefix("file://")
        self._local_dir = local if self._hub is None and "://" not in local else None

    def describe(self, name: str) -> str:
        """The URI of file ``name`` (for messages)."""
        return f"{self.uri.rstrip('/')}/{name}"

    def _cache(self) -> str:
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="tunix-model-")
            self._owns_cache = True
        return self._cache_dir

    def exists(self, name: str) -> bool:
        """Whether file ``name`` exists (for optional files; Hub: asks the Hub)."""
        try:
            self.local_path(name)
        except DataError:
            return False
        return True

    def local_path(self, name: str) -> str:
        """A local path of file ``name``, downloading it first when the model is remote."""
        if self._local_dir is not None:
            path = os.path.join(self._local_dir, name)
            if not os.path.isfile(path):
                raise DataError(f"{self.describe(name)}: no such file")
            return path
        if self._hub is not None:
            return self._from_hub(name)
        target = os.path.join(self._cache(), name)
        if not os.path.isfile(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                with (
                    open_uri(self.describe(name), "rb", self._options) as src,
                    open(target + ".part", "wb") as dst,
                ):
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.describe(name)}: cannot read: {exc}") from exc
            os.replace(target + ".part", target)
        return target

    def _from_hub(self, name: str) -> str:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise DataError(f"{self.uri}: hf:// models need the huggingface_hub package") from exc
        repo, revision = self._hub  # type: ignore[misc]
        try:
            return hf_hub_download(repo, name, revision=revision, cache_dir=self._cache_dir)
        except Exception as exc:  # offline, missing repo/file, auth: all mean the data is unavailable
            raise DataError(
                f"{self.describe(name)}: cannot download from the Hugging Face Hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc

    def cleanup(self) -> None:
        """Delete the local copies this object downloaded (not the Hub's cache, not local files)."""
        if self._cache_dir is not None and self._owns_cache:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def read_text(self, name: str) -> str:
        try:
            with open(self.local_path(name), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.describe(name)}: cannot read: {exc}") from exc

    def read_json(self, name: str, *, required: bool = True) -> dict[str, Any] | None:
        """The JSON object in file ``name``; None when it is missing and not ``required``."""
        if not required and not self.exists(name):
            return None
        text = self.read_text(name)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.describe(name)}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(document, dict):
            raise DataError(f"{self.describe(name)}: expected a JSON object")
        return document
