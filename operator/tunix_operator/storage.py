"""The operator's only door to object storage: read small JSON files the trainer writes.

Credentials come from the run's ``spec.storage.credentialsSecret`` (read by the caller
through the API each time) and go straight into fsspec's options; they are never
logged, put in status or in events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import fsspec

from tunix_api import artifacts
from tunix_api.storage import fsspec_options
from tunix_api.training import StorageSpec

logger = logging.getLogger(__name__)

# Secret key -> s3fs option.
MAX_JSON_BYTES = 1 << 20  # progress/summary/benchmark files are tiny; refuse anything large


def read_json(uri: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON object at ``uri``; None when missing, unreadable or not an object."""
    try:
        fs, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True, **options)
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # storage errors must not break reconciliation
        logger.warning("cannot read %s: %s", uri, type(exc).__name__)
        return None
    if len(data) > MAX_JSON_BYTES:
        logger.warning("ignoring %s: larger than %d bytes", uri, MAX_JSON_BYTES)
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class ArtifactReader:
    """Reads progress.json, summary.json and benchmark.json of one run's artifact directory."""

    def __init__(self, base_uri: str, storage: StorageSpec, credentials: Mapping[str, str] | None) -> None:
        self._base = base_uri
        self._options = fsspec_options(base_uri, storage, credentials)

    def progress(self) -> dict[str, Any] | None:
        return read_json(artifacts.join_uri(self._base, artifacts.PROGRESS_FILE), self._options)

    def summary(self) -> dict[str, Any] | None:
        return read_json(artifacts.join_uri(self._base, artifacts.SUMMARY_FILE), self._options)

    def benchmark(self) -> dict[str, Any] | None:
        return read_json(artifacts.join_uri(self._base, artifacts.BENCHMARK_FILE), self._options)
