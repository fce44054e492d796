"""The operator's only door to object storage: read small JSON files the trainer writes.

Cheap at scale: one client per (protocol, options: endpoint, region, credentials) is built once and
reused (:class:`FilesystemPool`): for S3 an :class:`~tunix_operator.s3.S3Client` (botocore's signer
over a pooled HTTP session, a fraction of the CPU of an s3fs or botocore client request), for every
other protocol an fsspec filesystem. A file is re-read only when it changed (S3: a conditional GET,
``If-None-Match`` its last ETag, answered 304 without a body; other filesystems: its ETag or mtime
and size) (:class:`JsonReads`); credentials Secrets are read through the API once and cached
(:class:`CredentialsCache`). Credentials go straight into the client's options; they are never
logged, put in status or in events.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from tunix_api import artifacts
from tunix_api.storage import S3_SCHEMES, fsspec_options
from tunix_api.training import StorageSpec
from tunix_operator.s3 import NotModified, S3Client, TooLarge

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20  # progress/summary/benchmark files are tiny; refuse anything large
MAX_FILESYSTEMS = 64  # distinct (endpoint, region, credentials) kept open
MAX_REMEMBERED_FILES = 100_000  # (uri -> ETag, value) kept for conditional reads


# ---- filesystems ---------------------------------------------------------------------------------


Client = fsspec.AbstractFileSystem | S3Client


class FilesystemPool:
    """One client per (protocol, options), reused across reads: an :class:`S3Client` for s3:// and
    s3a://, else an fsspec filesystem; least recently used ones beyond ``size`` are dropped.
    Thread-safe (reconciles run in a worker pool)."""

    def __init__(self, size: int = MAX_FILESYSTEMS) -> None:
        self._size = size
        self._filesystems: collections.OrderedDict[str, Client] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.created = 0

    def open(self, uri: str, options: Mapping[str, Any]) -> tuple[Client, str]:
        """(client, path inside it: ``bucket/key`` for S3) for ``uri``."""
        protocol, path = fsspec.core.split_protocol(uri)
        protocol = (protocol or "file").lower()
        s3 = protocol in S3_SCHEMES
        cls = None if s3 else fsspec.get_filesystem_class(protocol)
        key = _options_key(protocol, options)
        with self._lock:
            fs = self._filesystems.get(key)
            if fs is None:
                fs = S3Client(options) if cls is None else cls(skip_instance_cache=True, **options)
                self._filesystems[key] = fs
                self.created += 1
                while len(self._filesystems) > self._size:
                    self._filesystems.popitem(last=False)
            else:
                self._filesystems.move_to_end(key)
        return fs, path.lstrip("/") if cls is None else cls._strip_protocol(uri)


def _options_key(protocol: str, options: Mapping[str, Any]) -> str:
    """A digest, so that credentials are not kept a second time in the key."""
    text = json.dumps([protocol, options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- conditional reads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    tag: str  # ETag, or mtime and size
    value: dict[str, Any] | None


class JsonReads:
    """Reads JSON objects, skipping the transfer when an object did not change since the last read.

    Counts reads by outcome (``read``, ``unchanged``, ``missing``, ``error``) in ``counts``.
    """

    def __init__(
        self,
        pool: FilesystemPool | None = None,
        size: int = MAX_REMEMBERED_FILES,
        observer: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool or FilesystemPool()
        self.observer = observer
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def read(self, uri: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
        """The JSON object at ``uri``; None when missing, unreadable or not an object.

        Raises PermissionError when the storage refuses the credentials (the caller may re-read them).
        """
        with self._lock:
            seen = self._seen.get(uri)
        try:
            fs, path = self.pool.open(uri, options)
            data, tag = _fetch(fs, path, seen.tag if seen else None)
        except NotModified:
            self._count("unchanged")
            assert seen is not None
            return seen.value
        except FileNotFoundError:
            self._count("missing")
            self._forget(uri)
            return None
        except PermissionError:
            self._count("error")
            raise
        except Exception as exc:  # storage errors must not break reconciliation
            self._count("error")
            logger.warning("cannot read %s: %s", uri, type(exc).__name__)
            return None
        self._count("read")
        value = _parse(uri, data)
        if tag:
            with self._lock:
                self._seen[uri] = _Seen(tag, value)
                self._seen.move_to_end(uri)
                while len(self._seen) > self._size:
                    self._seen.popitem(last=False)
        return value

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if self.observer is not None:
            self.observer(result)

    def _forget(self, uri: str) -> None:
        with self._lock:
            self._seen.pop(uri, None)


def _parse(uri: str, data: bytes) -> dict[str, Any] | None:
    if len(data) > MAX_JSON_BYTES:
        logger.warning("ignoring %s: larger than %d bytes", uri, MAX_JSON_BYTES)
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _fetch(fs: Client, path: str, tag: str | None) -> tuple[bytes, str | None]:
    """(content, tag) of ``path``; NotModified when its tag is still ``tag``."""
    if isinstance(fs, S3Client):  # one conditional GET
        bucket, _, key = path.partition("/")
        try:
            return fs.get(bucket, key, tag, limit=MAX_JSON_BYTES)
        except TooLarge:
            return b"\0" * (MAX_JSON_BYTES + 1), None
    info = fs.info(path)
    current = _tag(info)
    if tag is not None and current == tag:
        raise NotModified(path)
    if (info.get("size") or 0) > MAX_JSON_BYTES:
        return b"\0" * (MAX_JSON_BYTES + 1), None
    return fs.cat_file(path), current


def _tag(info: Mapping[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if etag:
        return str(etag)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated")
    return f"{mtime}:{info.get('size')}:{info.get('ino')}" if mtime is not None else None


_DEFAULT_READS = JsonReads()


def read_json(uri: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON object at ``uri`` (through a process-wide :class:`JsonReads`)."""
    try:
        return _DEFAULT_READS.read(uri, options)
    except PermissionError:
        logger.warning("cannot read %s: access denied", uri)
        return None


# ---- credentials ---------------------------------------------------------------------------------


class CredentialsCache:
    """Credentials Secrets' data by (namespace, name), read through the API once, then kept.

    An entry is read again when ``max_age_seconds`` passed (a missing Secret: ``missing_seconds``),
    or at once after :meth:`invalidate` (a storage read refused the credentials: rotated keys).
    The data stays in memory only; it is never logged.
    """

    def __init__(
        self,
        read: Callable[[str, str], dict[str, str] | None],
        max_age_seconds: float = 300.0,
        missing_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age = max_age_seconds
        self._missing = missing_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        self._lock = threading.Lock()
        self.reads = 0

    def get(self, namespace: str, name: str) -> dict[str, str] | None:
        key = (namespace, name)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            read_at, data = entry
            if now - read_at < (self._max_age if data is not None else self._missing):
                return data
        data = self._read(namespace, name)
        self.reads += 1
        with self._lock:
            self._entries[key] = (now, data)
        return data

    def invalidate(self, namespace: str, name: str) -> None:
        with self._lock:
            self._entries.pop((namespace, name), None)


# ---- a run's files -------------------------------------------------------------------------------


class ArtifactReader:
    """Reads progress.json, summary.json and benchmark.json of one run's artifact directory."""

    def __init__(
        self,
        base_uri: str,
        storage: StorageSpec,
        credentials: Mapping[str, str] | None,
        reads: JsonReads | None = None,
    ) -> None:
        self._base = base_uri
        self._options = fsspec_options(base_uri, storage, credentials)
        self._reads = reads or _DEFAULT_READS
        self.denied = False  # a read was refused for its credentials

    def _read(self, name: str) -> dict[str, Any] | None:
        uri = artifacts.join_uri(self._base, name)
        try:
            return self._reads.read(uri, self._options)
        except PermissionError:
            logger.warning("cannot read %s: access denied", uri)
            self.denied = True
            return None

    def progress(self) -> dict[str, Any] | None:
        return self._read(artifacts.PROGRESS_FILE)

    def summary(self) -> dict[str, Any] | None:
        return self._read(artifacts.SUMMARY_FILE)

    def benchmark(self) -> dict[str, Any] | None:
        return self._read(artifacts.BENCHMARK_FILE)
