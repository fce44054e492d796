"""ArrayRecord shards (``.array_record``): one UTF-8 JSON object a record, read by index.

An ArrayRecord file (the ``array_record`` package: Riegeli chunks and a footer of chunk offsets)
knows its record count and reads record ``i`` with one ranged read of its chunk, so it needs no
line index. Its records hold what a JSONL line holds: ``{"text": ...}`` or ``{"prompt": ...,
"completion": ...}``, as UTF-8 JSON. A file written with ``group_size:1`` (one record a chunk: what
``tools/seed_dataset.py`` and Grain write) costs one decompression per record read at random; a
larger group decompresses the whole group for each record, which is logged once per shard.

``ArrayRecordReader`` reads local files only: ``data_sources`` copies a shard on an object store
into the data cache once (as it decompresses a ``.jsonl.gz``) and passes the copy's path here.
Errors are ``DataError`` naming the shard, and the record (1-based) when one record is bad.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

from tunix_trainer.data_records import DataError, decode_json

log = logging.getLogger(__name__)

# x.array_record, or TFDS's x.array_record-00000-of-00004
SHARD_NAME = re.compile(r"\.array_record(-\d+-of-\d+)?$")
# Records are read at random: no read-ahead of chunks, no thread pool (a record is one seek + read).
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
_BUFFER = 1 << 14  # bytes read at a time: 16 KiB read random records faster here than 4 or 32 KiB
_warned: set[str] = set()


def is_array_record(uri: str) -> bool:
    """Whether ``uri`` names an ArrayRecord shard."""
    return SHARD_NAME.search(uri.lower()) is not None


def open_reader(path: str, uri: str) -> Any:
    """An ``ArrayRecordReader`` of the local file ``path`` (shard ``uri``); ``DataError`` when it is
    not a complete ArrayRecord file (truncated, or not one at all)."""
    try:
        from array_record.python.array_record_module import ArrayRecordReader
    except ImportError as exc:
        raise DataError(f"{uri}: reading ArrayRecord shards needs the array-record package ({exc})") from None
    try:
        reader = ArrayRecordReader(path, READER_OPTIONS, file_reader_buffer_size=_BUFFER)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{uri}: not a valid ArrayRecord file ({exc})") from None
    if not reader.ok():
        raise DataError(f"{uri}: not a valid ArrayRecord file ({_failure(reader)})")
    size = group_size(reader.writer_options_string())
    if size is not None and size > 1 and uri not in _warned:
        _warned.add(uri)
        log.warning(
            "%s: written with group_size:%d, so each record read at random decompresses %d records; "
            "rewrite it with group_size:1 for speed",
            uri,
            size,
            size,
        )
    return reader


def _failure(reader: Any) -> str:
    """Why a reader that is not ``ok()`` failed (the library says so when it is closed)."""
    try:
        reader.close()
    except (RuntimeError, ValueError) as exc:
        return str(exc)
    return "unreadable"


def count_records(path: str, uri: str) -> int:
    """The number of records of the ArrayRecord file ``path`` (from its footer)."""
    reader = open_reader(path, uri)
    try:
        return int(reader.num_records())
    finally:
        reader.close()


def group_size(writer_options: str) -> int | None:
    """The ``group_size`` a file was written with (None: not recorded, as in files before 2022)."""
    match = re.search(r"(?:^|,)group_size:(\d+)", writer_options or "")
    return int(match.group(1)) if match else None


class ShardReader:
    """This process's reader of one ArrayRecord shard: record ``i`` by ``seek(i)`` and ``read()``.

    That is a few microseconds a record; the library's ``read([i])`` goes through its thread pool
    (0.5-1 ms a record on this machine). A seek and its read are one step under a lock (threads
    share the reader); a reader that failed stays failed, so it is reopened for the next record.
    """

    def __init__(self, path: str, uri: str):
        self.path, self.uri = path, uri
        self._lock = threading.Lock()
        self._reader: Any = open_reader(path, uri)
        self.num_records = int(self._reader.num_records())

    def read(self, local: int) -> tuple[Any, str]:
        """(record ``local`` decoded from JSON, ``shard:record N`` naming it)."""
        where = f"{self.uri}:record {local + 1}"
        with self._lock:
            try:
                if self._reader is None:
                    self._reader = open_reader(self.path, self.uri)
                self._reader.seek(local)
                data = self._reader.read()
            except (RuntimeError, IndexError, ValueError) as exc:  # a corrupt chunk: Riegeli's hash
                self._discard()
                raise DataError(f"{where}: cannot read the record ({exc})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}: not UTF-8 text ({exc})") from None
        return decode_json(text, where), where

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # a failed reader re-raises on close
                reader.close()
