"""Random access to the records of a dataset of any size: one file, a directory or a glob of shards.

A shard is JSONL (``.jsonl``, or any other name given as one file), compressed JSONL
(``.jsonl.gz``, ``.jsonl.zst``), Parquet (``.parquet``: a ``text`` column, or ``prompt`` and
``completion`` columns) or ArrayRecord (``.array_record``: a UTF-8 JSON object a record, read by
``data_array_record``), on any fsspec filesystem (local, file://, s3://, gs://, memory://).

JSONL is read through a line index: the byte offset of every non-blank line, found in one pass
over the shard (which also hashes it) and cached in a local directory keyed by the shard's URI,
size and modification stamp (``TUNIX_DATA_CACHE``, default ``~/.cache/tunix-rt/data``; point it
at the checkpoint volume to keep it across pod restarts). Record ``i`` is then one ranged read.
A compressed shard cannot be read at an offset, so it is decompressed once into that cache and
indexed there. Parquet needs no index (its row groups are counted in the footer); a record read
loads its row group (the last two are kept). ArrayRecord needs none either (its footer has the
record count); its reader opens local files only, so a remote shard is copied once into the cache.

``RecordSource`` is what Grain calls a random-access data source (``__len__``, ``__getitem__``)
and pickles into worker processes: open files are per process and never pickled. A shard that
changes or disappears while training is a ``DataError`` naming it, never a silent skip.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from tunix_api.training import DatasetFormat
from tunix_trainer import data_array_record as array_record
from tunix_trainer.artifact_io import is_local, open_fs, resolve_uri
from tunix_trainer.data_records import (
    LINE_BREAK,
    DataError,
    Record,
    decode_json,
    detect_format,
    record_values,
)

JSONL_SUFFIXES = (".jsonl", ".ndjson")  # a directory's shards (not .json: manifests are JSON)
COMPRESSED_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".ndjson.gz", ".ndjson.zst")
PARQUET_SUFFIXES = (".parquet",)
ARRAY_RECORD_SUFFIXES = (".array_record",)  # and TFDS's .array_record-00000-of-00004
SHARD_SUFFIXES = JSONL_SUFFIXES + COMPRESSED_SUFFIXES + PARQUET_SUFFIXES + ARRAY_RECORD_SUFFIXES
LINE_KINDS = ("jsonl", "gz", "zst")  # read through a line index
INDEX_VERSION = 2
_CHUNK = 1 << 20  # bytes scanned at a time: the line scan needs ~10x that
_BOM = b"\xef\xbb\xbf"
# Bytes that make a line blank: JSON whitespace and the other ASCII ones str.strip() drops.
_NOT_BLANK = np.ones(256, dtype=bool)
_NOT_BLANK[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = False
_ONE_OFFSET = struct.Struct("=Q")  # a line index's uint64, as saved
_JSON = json.JSONDecoder()  # json.loads of a str, a call shorter
_JSON_SPACE = " \t\r\n"  # the only whitespace JSON allows around a value


def cache_dir() -> str:
    """The local directory of line indexes and decompressed shards."""
    return os.environ.get("TUNIX_DATA_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tunix-rt", "data"
    )


def list_shards(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The shard URIs of ``uri``: the file itself, a directory's shard files (by suffix, sorted,
    recursively), or a glob's matches (sorted). ``DataError`` when there is none."""
    try:
        fs, path = open_fs(uri, storage_options)
        if any(ch in path for ch in "*?["):
            paths = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            paths = sorted(
                p for p in fs.find(path) if p.endswith(SHARD_SUFFIXES) or array_record.is_array_record(p)
            )
        elif fs.isfile(path):
            paths = [path]
        else:
            raise FileNotFoundError(path)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read dataset {uri}: {exc}") from exc
    if not paths:
        raise DataError(f"{uri}: no dataset shards (files ending in {', '.join(SHARD_SUFFIXES)})")
    return [p if is_local(fs) else fs.unstrip_protocol(p) for p in paths]


def shard_kind(uri: str) -> str:
    """``parquet``, ``array_record``, ``gz``, ``zst`` or ``jsonl`` (any other name is read as JSONL)."""
    name = uri.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if array_record.is_array_record(name):
        return "array_record"
    for suffix in ("gz", "zst"):
        if name.endswith("." + suffix):
            if not name.endswith(COMPRESSED_SUFFIXES):
                raise DataError(f"{uri}: compressed shards must be JSONL ({', '.join(COMPRESSED_SUFFIXES)})")
            return suffix
    if name.endswith((".bz2", ".xz", ".lz4", ".zip", ".tar", ".tgz")):
        raise DataError(f"{uri}: compression {name.rsplit('.', 1)[-1]!r} is not supported; use .gz or .zst")
    return "jsonl"


# --- the line index ----------------------------------------------------------------------------------


def line_starts(chunks: Iterable[bytes]) -> tuple[np.ndarray, int, str]:
    """(offsets of the non-blank lines, total bytes, sha256 hex) of a byte stream given as chunks.

    Lines end at LF, CRLF or CR (as ``data_records.parse_records`` splits them); a leading UTF-8
    byte-order mark is skipped. Flat memory: one chunk at a time.
    """
    digest = hashlib.sha256()
    scan = _LineScan()
    carry, at_start = b"", True
    for raw in chunks:
        digest.update(raw)
        data = carry + raw
        if at_start:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                carry = data
                continue
            if data.startswith(_BOM):
                scan.line_start = len(_BOM)
            at_start = False
        carry = b""
        if data.endswith(b"\r"):  # maybe the first half of a CRLF: decide with the next chunk
            data, carry = data[:-1], b"\r"
        scan.feed(data)
    scan.feed(carry)  # at the end a lone CR is a line break
    return scan.finish(), scan.base, digest.hexdigest()


@dataclass
class _LineScan:
    """The state of ``line_starts`` between chunks."""

    base: int = 0  # absolute offset of the next chunk
    line_start: int = 0  # absolute offset of the line that runs into the next chunk
    line_filled: bool = False  # whether that line has a non-blank byte so far
    starts: list[np.ndarray] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        b = np.frombuffer(data, dtype=np.uint8)
        lf = b == 10
        breaks = np.flatnonzero(lf | ((b == 13) & ~np.append(lf[1:], False)))
        filled = _NOT_BLANK[b].view(np.uint8)
        first = max(self.line_start - self.base, 0)
        if breaks.size:
            # segment k runs from its line's start through its break (never empty): any filled byte?
            seg_starts = np.concatenate([[first], breaks[:-1] + 1])
            nonblank = np.maximum.reduceat(filled[: breaks[-1] + 1], seg_starts) > 0
            nonblank[0] |= self.line_filled
            absolute = (seg_starts + self.base).astype(np.uint64)
            absolute[0] = self.line_start
            self.starts.append(absolute[nonblank])
            self.line_start = self.base + int(breaks[-1]) + 1
            self.line_filled = bool(filled[breaks[-1] + 1 :].any())
        else:
            self.line_filled |= bool(filled[first:].any())
        self.base += b.size

    def finish(self) -> np.ndarray:
        if self.line_filled:
            self.starts.append(np.asarray([self.line_start], dtype=np.uint64))
        return np.concatenate(self.starts).astype(np.uint64) if self.starts else np.zeros(0, np.uint64)


# --- shards --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard as indexed: where its records are read from and what it held."""

    uri: str  # the shard as named by the dataset
    kind: str  # jsonl | gz | zst | parquet | array_record
    read_uri: str  # what is read: the shard, or its (decompressed) copy in the cache
    size: int  # bytes of read_uri when indexed
    sha256: str  # hex digest of the shard's own bytes (compressed, for a compressed shard)
    num_records: int
    starts: np.ndarray | None  # JSONL: offset of each record's line, when not read from index_file
    row_groups: tuple[int, ...] = ()  # Parquet: rows per row group
    index_file: str | None = None  # JSONL: the cached offsets (.npy), read 16 bytes per record


def _stat(uri: str, storage_options: dict[str, Any] | None) -> tuple[int, str]:
    """(size, modification stamp) of a shard."""
    fs, path = open_fs(uri, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise DataError(f"{uri}: dataset shard not found") from None
    except OSError as exc:
        raise DataError(f"{uri}: cannot read dataset shard: {exc}") from exc
    stamp = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("ETag") or ""
    return int(info.get("size") or 0), str(stamp)


def _cache_key(uri: str, size: int, stamp: str) -> str:
    return hashlib.sha256(json.dumps([INDEX_VERSION, uri, size, stamp]).encode()).hexdigest()[:32]


def _chunks(f: Any) -> Iterable[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _decompressed_chunks(kind: str, f: Any, digest: Any) -> Iterable[bytes]:
    """The decompressed bytes of ``f``, hashing the compressed bytes into ``digest`` on the way."""

    class _Hashing:
        def read(self, n: int = -1) -> bytes:
            data = f.read(n)
            digest.update(data)
            return data

    if kind == "gz":
        stream: Any = gzip.GzipFile(fileobj=_Hashing(), mode="rb")
    else:
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(_Hashing(), read_across_frames=True)
    with stream:
        yield from _chunks(stream)


def index_shard(uri: str, storage_options: dict[str, Any] | None = None) -> ShardInfo:
    """The shard's index: read from the cache, or built in one pass and cached."""
    kind = shard_kind(uri)
    size, stamp = _stat(uri, storage_options)
    key = _cache_key(uri, size, stamp)
    directory = cache_dir()
    index_path = os.path.join(directory, key + ".index")
    data_path = None
    if kind in ("gz", "zst"):
        data_path = os.path.join(directory, key + ".jsonl")
    elif kind == "array_record" and not is_local(open_fs(uri, storage_options)[0]):
        data_path = os.path.join(directory, key + ".array_record")
    cached = _load_index(index_path, uri, kind, data_path)
    if cached is not None:
        return cached
    try:
        if kind == "parquet":
            info = _index_parquet(uri, storage_options, size)
        elif kind == "array_record":
            info = _index_array_record(uri, storage_options, size, data_path)
        elif data_path is not None:
            info = _index_compressed(uri, kind, storage_options, data_path)
        else:
            fs, path = open_fs(uri, storage_options)
            with fs.open(path, "rb") as f:
                starts, total, sha = line_starts(_chunks(f))
            info = ShardInfo(uri, kind, uri, total, sha, len(starts), starts)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{uri}: cannot read dataset shard: {exc}") from exc
    return _save_index(index_path, info)


@contextlib.contextmanager
def _cache_file(uri: str, data_path: str, verb: str) -> Iterator[tuple[BinaryIO, str]]:
    """(a new file of the data cache, its temporary path): in place at ``data_path`` once the block
    succeeds, removed if it fails."""
    try:
        os.makedirs(os.path.dirname(data_path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(data_path), prefix=".tmp-", suffix=".part")
    except OSError as exc:
        raise DataError(
            f"{uri}: cannot {verb} into the data cache {os.path.dirname(data_path)} ({exc}); "
            "set TUNIX_DATA_CACHE to a writable directory"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
        os.replace(tmp, data_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _index_compressed(
    uri: str, kind: str, storage_options: dict[str, Any] | None, data_path: str
) -> ShardInfo:
    """Decompress ``uri`` into ``data_path`` (the cache) and index the decompressed lines."""
    digest = hashlib.sha256()
    fs, path = open_fs(uri, storage_options)
    with _cache_file(uri, data_path, "decompress") as (out, _), fs.open(path, "rb") as f:

        def copied() -> Iterable[bytes]:
            for chunk in _decompressed_chunks(kind, f, digest):
                out.write(chunk)
                yield chunk

        try:
            starts, total, _ = line_starts(copied())
        except (OSError, EOFError, ValueError) as exc:
            raise DataError(f"{uri}: not a valid .{kind} file ({exc})") from exc
        except Exception as exc:  # zstandard.ZstdError
            raise DataError(f"{uri}: not a valid .{kind} file ({exc})") from exc
    return ShardInfo(uri, kind, data_path, total, digest.hexdigest(), len(starts), starts)


def _index_array_record(
    uri: str, storage_options: dict[str, Any] | None, size: int, data_path: str | None
) -> ShardInfo:
    """Hash the shard and count its records (from its footer); a remote shard is copied into
    ``data_path`` (the cache) on the way, since the reader opens local files only."""
    digest = hashlib.sha256()
    fs, path = open_fs(uri, storage_options)
    if data_path is None:
        with fs.open(path, "rb") as f:
            for chunk in _chunks(f):
                digest.update(chunk)
        count = array_record.count_records(path, uri)
        return ShardInfo(uri, "array_record", uri, size, digest.hexdigest(), count, None)
    with _cache_file(uri, data_path, "copy") as (out, tmp), fs.open(path, "rb") as f:
        for chunk in _chunks(f):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        count = array_record.count_records(tmp, uri)
    return ShardInfo(uri, "array_record", data_path, size, digest.hexdigest(), count, None)


def _index_parquet(uri: str, storage_options: dict[str, Any] | None, size: int) -> ShardInfo:
    import pyarrow.parquet as pq

    fs, path = open_fs(uri, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in _chunks(f):
            digest.update(chunk)
    with fs.open(path, "rb") as f:
        try:
            meta = pq.ParquetFile(f).metadata
        except Exception as exc:  # pyarrow.ArrowInvalid
            raise DataError(f"{uri}: not a Parquet file ({exc})") from exc
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return ShardInfo(uri, "parquet", uri, size, digest.hexdigest(), sum(groups), None, groups)


def _load_index(index_path: str, uri: str, kind: str, data_path: str | None) -> ShardInfo | None:
    """The cached index (its offsets stay in the file, read per record), or None."""
    meta_path, starts_path = index_path + ".json", index_path + ".npy"
    if not os.path.exists(meta_path) or (data_path is not None and not os.path.exists(data_path)):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if kind in LINE_KINDS:
            header = np.load(starts_path, mmap_mode="r")  # the header only: no offset is read
            if header.dtype != np.uint64 or header.shape != (meta["num_records"],):
                return None
            del header
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is rebuilt
    return ShardInfo(
        uri,
        kind,
        data_path or uri,
        meta["size"],
        meta["sha256"],
        meta["num_records"],
        None,
        tuple(meta["row_groups"]),
        starts_path if kind in LINE_KINDS else None,
    )


def _save_index(index_path: str, info: ShardInfo) -> ShardInfo:
    """Cache the index (best effort: an unwritable cache only costs the next start a rebuild); the
    offsets file first, the metadata that makes the entry valid last."""
    meta = {
        "size": info.size,
        "sha256": info.sha256,
        "num_records": info.num_records,
        "row_groups": list(info.row_groups),
    }
    directory = os.path.dirname(index_path)
    try:
        os.makedirs(directory, exist_ok=True)
        if info.starts is not None:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(info.starts, dtype=np.uint64))
            os.replace(tmp, index_path + ".npy")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, index_path + ".json")
    except OSError:
        return info
    if info.starts is None:
        return info
    return dataclasses.replace(info, starts=None, index_file=index_path + ".npy")  # memory back


# --- reading records ---------------------------------------------------------------------------------


class RecordSource:
    """The records of a dataset in order: shards sorted by name, lines in file order.

    ``source[i]`` is record ``i`` as ``(prompt, completion)``; errors name ``shard:line`` (JSONL),
    ``shard:row N`` (Parquet) or ``shard:record N`` (ArrayRecord), counted from 1. ``checksum``
    identifies the content: the sha256 of the file for a one-file dataset (as
    ``data.dataset_checksum``), else of the shards' names and digests.
    """

    def __init__(
        self,
        uri: str,
        fmt: DatasetFormat = DatasetFormat.AUTO,
        *,
        storage_options: dict[str, Any] | None = None,
        base_dir: str | None = None,
    ):
        self.uri = resolve_uri(uri, base_dir)
        self._options = storage_options
        self.shards = [index_shard(s, storage_options) for s in list_shards(self.uri, storage_options)]
        empty = [s.uri for s in self.shards if s.num_records == 0]
        if empty:
            raise DataError(f"{empty[0]}: the dataset shard has no records")
        counts = np.asarray([s.num_records for s in self.shards], dtype=np.int64)
        self._ends = np.cumsum(counts).tolist()
        self._firsts = np.cumsum(counts) - counts  # each shard's first record
        if len(self.shards) == 1:
            self.checksum = "sha256:" + self.shards[0].sha256
        else:
            listing = "".join(f"{_relative(s.uri, self.uri)} {s.sha256}\n" for s in self.shards)
            self.checksum = "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
        self._handles: dict[int, Any] = {}  # open shards, per process
        self._index: dict[int, tuple[int, int]] = {}  # open index files, per process
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._lock = threading.RLock()  # opening files, and seek + read of a shared remote file
        self.format = DatasetFormat.AUTO
        self._origin = "from dataset.format"
        if fmt != DatasetFormat.AUTO:
            self.format = DatasetFormat(fmt)
        else:
            raw, where = self._raw(0)
            self.format = detect_format(raw, where)
            self._origin = f"detected from {where}"
        self._keys = ("text",) if self.format == DatasetFormat.TEXT else ("prompt", "completion")

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> Record:
        raw, where = self._raw(int(index))
        if type(raw) is dict:  # the common case, checked without building error context
            values = _plain_values(raw, self._keys)
            if values is not None:
                return values
        return record_values(raw, self.format, where, self._origin)  # raises, naming the line

    def records(self, indices: Sequence[int] | np.ndarray) -> list[Record]:
        """``[self[i] for i in indices]``, with the per-record work of a JSONL shard kept lean (what a
        chunk of the training stream reads): records located by one array search, each line read
        with one ``pread`` and decoded by the JSON scanner; anything unusual (a malformed line, a
        non-string value, a lone surrogate) goes through ``self[i]``, which names the line."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IndexError(f"record {bad} of {len(self)}")
        shard_of = np.searchsorted(self._firsts, index, side="right") - 1
        local = index - self._firsts[shard_of]
        out: list[Any] = [None] * index.size
        for shard_index in np.unique(shard_of).tolist():
            at = np.flatnonzero(shard_of == shard_index) if len(self.shards) > 1 else np.arange(index.size)
            if self.shards[shard_index].kind in LINE_KINDS:
                self._lines(shard_index, at.tolist(), local[at], out)
            for k in at.tolist():
                if out[k] is None:
                    out[k] = self[int(index[k])]  # the slow path: raises, naming the line
        return out

    def _lines(self, shard_index: int, at: list[int], local: np.ndarray, out: list[Any]) -> None:
        """``out[at[j]]`` = the record on line ``local[j]`` of a JSONL shard, where it is a plain
        object with string values of valid Unicode (else left None for the slow path)."""
        shard = self.shards[shard_index]
        starts, ends = self._spans(shard_index, local)
        handle = self._handle(shard_index)
        if isinstance(handle, int):
            pread = os.pread
            try:
                lines = [pread(handle, e - s, s) for s, e in zip(starts, ends, strict=True)]
            except OSError as exc:
                raise DataError(f"{shard.uri}: cannot read dataset shard: {exc}") from exc
        else:
            lines = [self._read(shard_index, s, e - s) for s, e in zip(starts, ends, strict=True)]
        scan, keys = _JSON.scan_once, self._keys
        first, second = keys[0], keys[-1]
        for k, data, s, e in zip(at, lines, starts, ends, strict=True):
            if len(data) != e - s:
                raise DataError(_changed_while_training(shard, len(data), e - s, s))
            try:
                line = data.decode("utf-8")
                raw, stop = scan(line, 0)
            except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
                continue
            if type(raw) is not dict or (stop != len(line) and line[stop:].strip(_JSON_SPACE)):
                continue
            if b"\\u" in data:  # a lone surrogate can only come from a \\u escape: check then
                out[k] = _plain_values(raw, keys)
            elif len(keys) == 1:
                value = raw.get(first)
                if type(value) is str:
                    out[k] = ("", value)
            else:
                prompt, completion = raw.get(first), raw.get(second)
                if type(prompt) is str and type(completion) is str:
                    out[k] = (prompt, completion)

    def _spans(self, shard_index: int, local: np.ndarray) -> tuple[list[int], list[int]]:
        """(first bytes, ends) of lines ``local`` of a JSONL shard: from its offsets in memory, or 16
        bytes of the cached index file a line (so memory does not grow with the record count)."""
        shard = self.shards[shard_index]
        if shard.starts is not None:
            following = np.minimum(local + 1, shard.num_records - 1)
            ends = np.where(local + 1 == shard.num_records, shard.size, shard.starts[following])
            return shard.starts[local].tolist(), ends.tolist()
        fd, data_offset = self._index_file(shard_index)
        pread, last, size = os.pread, shard.num_records - 1, _ONE_OFFSET.pack(shard.size)
        raw = b"".join(
            pread(fd, 16, data_offset + 8 * i) if i < last else pread(fd, 8, data_offset + 8 * i) + size
            for i in local.tolist()
        )
        if len(raw) != 16 * local.size:
            raise DataError(_truncated_index(shard))
        pairs = np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)
        return pairs[:, 0].tolist(), pairs[:, 1].tolist()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}, "_groups": OrderedDict(), "_index": {}, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def close(self) -> None:
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close() if hasattr(handle, "close") else os.close(handle)
        for fd, _ in self._index.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._handles.clear()
        self._index.clear()
        self._groups.clear()

    # -- raw access --------------------------------------------------------------------------------
    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        shard = bisect.bisect_right(self._ends, index)
        return shard, index - (self._ends[shard - 1] if shard else 0)

    def _raw(self, index: int) -> tuple[Any, str]:
        """The decoded record ``index`` (JSON value or Parquet row) and where it came from."""
        shard_index, local = self._locate(index)
        shard = self.shards[shard_index]
        if shard.kind == "parquet":
            with self._lock:  # its row-group cache is shared by the threads of a process
                return self._parquet_row(shard_index, local)
        if shard.kind == "array_record":
            return self._handle(shard_index).read(local)
        start, end = self._span(shard_index, local)
        data = self._read(shard_index, start, end - start)
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self._where(shard, start)}: not UTF-8 text ({exc})") from None
        where = self._where(shard, start)
        try:
            return json.loads(line), where  # JSON allows the line break and blank lines after it
        except (ValueError, RecursionError):
            line = LINE_BREAK.split(line, maxsplit=1)[0]
            return decode_json(line, where), where  # raises, naming the line

    def _span(self, shard_index: int, local: int) -> tuple[int, int]:
        """(first byte, end) of line ``local`` of a JSONL shard (see ``_spans``)."""
        starts, ends = self._spans(shard_index, np.asarray([local], dtype=np.int64))
        return starts[0], ends[0]

    def _index_file(self, shard_index: int) -> tuple[int, int]:
        """(descriptor, offset of the first offset) of a shard's open index file (this process's)."""
        index = self._index.get(shard_index)
        if index is None:
            with self._lock:
                index = self._index.get(shard_index)
                if index is None:
                    index = self._index[shard_index] = _open_index(self.shards[shard_index])
        return index

    def _where(self, shard: ShardInfo, offset: int) -> str:
        """``shard:line`` of the line at ``offset`` (counted only when an error needs it)."""
        return _LazyWhere(shard, offset, self._options)  # type: ignore[return-value]

    def _handle(self, shard_index: int) -> Any:
        """The shard's open file (this process's): a descriptor, an fsspec file or a ShardReader."""
        handle = self._handles.get(shard_index)
        if handle is None:
            with self._lock:
                handle = self._handles.get(shard_index)
                if handle is None:
                    handle = self._handles[shard_index] = self._open(self.shards[shard_index])
        return handle

    def _read(self, shard_index: int, offset: int, length: int) -> bytes:
        shard = self.shards[shard_index]
        try:
            handle = self._handle(shard_index)
            if isinstance(handle, int):
                data = os.pread(handle, length, offset)
            else:
                with self._lock:
                    handle.seek(offset)
                    data = handle.read(length)
        except FileNotFoundError:
            raise DataError(f"{shard.uri}: the dataset shard disappeared while training") from None
        except OSError as exc:
            raise DataError(f"{shard.uri}: cannot read dataset shard: {exc}") from exc
        if len(data) != length:
            raise DataError(_changed_while_training(shard, len(data), length, offset))
        return data

    def _open(self, shard: ShardInfo) -> Any:
        fs, path = open_fs(shard.read_uri, None if shard.read_uri != shard.uri else self._options)
        if shard.kind == "array_record":  # a local file (a remote shard is read from its copy)
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                what = "the dataset shard" if shard.read_uri == shard.uri else f"its copy {path}"
                raise DataError(f"{shard.uri}: {what} disappeared while training") from None
            if size == shard.size:
                reader = array_record.ShardReader(path, shard.uri)
                if reader.num_records == shard.num_records:
                    return reader
                reader.close()
            raise DataError(f"{shard.uri}: the dataset shard changed since it was indexed; restart the run")
        if is_local(fs):
            fd = os.open(path, os.O_RDONLY)
            if os.fstat(fd).st_size != shard.size:
                os.close(fd)
                raise DataError(
                    f"{shard.uri}: the dataset shard changed since it was indexed; restart the run"
                )
            return fd
        if fs.size(path) != shard.size:
            raise DataError(f"{shard.uri}: the dataset shard changed since it was indexed; restart the run")
        return fs.open(path, "rb", block_size=1 << 16, cache_type="readahead")

    def _parquet_row(self, shard_index: int, local: int) -> tuple[Any, str]:
        shard = self.shards[shard_index]
        bounds = np.cumsum((0, *shard.row_groups))
        group = int(np.searchsorted(bounds, local, side="right")) - 1
        key = (shard_index, group)
        table = self._groups.get(key)
        if table is None:
            import pyarrow.parquet as pq

            try:
                handle = self._handles.get(shard_index)
                if handle is None:
                    fs, path = open_fs(shard.uri, self._options)
                    handle = self._handles[shard_index] = pq.ParquetFile(fs.open(path, "rb"))
                table = handle.read_row_group(group).to_pydict()
            except FileNotFoundError:
                raise DataError(f"{shard.uri}: the dataset shard disappeared while training") from None
            except Exception as exc:  # pyarrow errors
                raise DataError(f"{shard.uri}: cannot read row group {group}: {exc}") from exc
            self._groups[key] = table
            while len(self._groups) > 2:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(key)
        row = local - int(bounds[group])
        return {name: values[row] for name, values in table.items()}, f"{shard.uri}:row {local + 1}"


def _changed_while_training(shard: ShardInfo, got: int, length: int, offset: int) -> str:
    return (
        f"{shard.uri}: the dataset shard changed while training (read {got} of {length} bytes at "
        f"offset {offset}); restart the run to re-index it"
    )


def _truncated_index(shard: ShardInfo) -> str:
    return f"{shard.uri}: its line index {shard.index_file} is truncated; delete it to rebuild"


def _open_index(shard: ShardInfo) -> tuple[int, int]:
    """(file descriptor, offset of the first offset) of a shard's cached .npy index."""
    assert shard.index_file is not None
    try:
        fd = os.open(shard.index_file, os.O_RDONLY)
    except OSError as exc:
        raise DataError(
            f"{shard.uri}: its line index {shard.index_file} is gone ({exc}); restart the run"
        ) from exc
    with os.fdopen(os.dup(fd), "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return fd, f.tell()


def _plain_values(record: dict[str, Any], keys: tuple[str, ...]) -> Record | None:
    """``(prompt, completion)`` when the record's ``keys`` are strings of valid Unicode, else None
    (then ``data_records.record_values`` says what is wrong)."""
    values = [record.get(key) for key in keys]
    for value in values:
        if type(value) is not str:
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return None
    return ("", values[0]) if len(values) == 1 else (values[0], values[1])


class _LazyWhere(str):
    """``shard:line`` whose line number is counted from the file only when the text is used."""

    def __new__(cls, shard: ShardInfo, offset: int, options: dict[str, Any] | None) -> _LazyWhere:
        obj = super().__new__(cls, "")
        obj._args = (shard, offset, options)  # type: ignore[attr-defined]
        return obj

    def __str__(self) -> str:
        shard, offset, options = self._args  # type: ignore[attr-defined]
        return f"{shard.uri}:{_line_number(shard, offset, options)}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _line_number(shard: ShardInfo, offset: int, options: dict[str, Any] | None) -> int:
    """1-based line number of the line starting at ``offset`` (LF, CRLF or CR breaks)."""
    fs, path = open_fs(shard.read_uri, None if shard.read_uri != shard.uri else options)
    count, prev_cr = 0, False
    with fs.open(path, "rb") as f:
        remaining = offset
        while remaining > 0 and (chunk := f.read(min(_CHUNK, remaining))):
            remaining -= len(chunk)
            count += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            count -= prev_cr and chunk.startswith(b"\n")
            prev_cr = chunk.endswith(b"\r")
    return count + 1


def _relative(shard_uri: str, dataset_uri: str) -> str:
    prefix = dataset_uri.rstrip("/") + "/"
    return shard_uri[len(prefix) :] if shard_uri.startswith(prefix) else os.path.basename(shard_uri)
