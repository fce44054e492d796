"""The exactly-once metrics chunk store: ``metrics/chunk-*.jsonl`` and ``metrics.jsonl``.

Object stores have no append and show an object only once it is closed, so metrics are written
like this:

* **Chunks.** :meth:`MetricStore.log_step` buffers records; each flush writes the buffer as one
  immutable object ``metrics/chunk-<first_step:09d>-<last_step:09d>.jsonl`` (a single PUT; temp
  file + ``os.replace`` on a local disk). A chunk is never appended to; it is only ever deleted or
  replaced by a shorter one at a resume. Flushes happen every ``flush_every_steps`` steps, on
  :meth:`MetricStore.flush` (the loop calls it before it saves a checkpoint, so a checkpoint never
  exists without the records up to its step) and on close.
* **Consolidation.** ``metrics.jsonl`` is rewritten as the union of all chunks at
  :meth:`MetricStore.close`, at :meth:`MetricStore.start`, and every ``consolidate_every_flushes``
  flushes, so it is complete at the end of a run and at most a few flushes behind while it runs.
  It is a derived view: the chunks stay.
* **Reading.** :meth:`MetricStore.read_metrics` returns the union of ``metrics.jsonl`` and the
  chunks, one record per step (chunks win), in step order.
* **Outages.** On an object store every call is retried with backoff
  (:mod:`tunix_trainer.storage_retry`) while the loop waits: the buffer keeps at most
  ``flush_every_steps`` records (a few hundred bytes each), nothing is dropped, and an outage
  longer than the retry deadline fails the run with a message naming the object.

Exactly once across resumes: after a resume from checkpoint step S (:meth:`MetricStore.start`
with ``resume_step=S``), records of steps > S written by the previous attempt are discarded
(chunks after S are deleted, a chunk straddling S is replaced by its part <= S, ``metrics.jsonl``
is rewritten); the resumed run rewrites them. ``start`` is idempotent, so an attempt that dies
inside it is repaired by the next one. Steps are 1-based: the record of step k is logged after the
k-th optimizer update, and a checkpoint at step S holds S updates.

Gaps: if the durable records end at a step G before the last step <= S that should have been
logged (only possible for checkpoints written before metrics were flushed first), steps G+1..S
cannot be re-created. ``start`` then logs a warning and sets :attr:`MetricStore.missing_steps` to
``(G + 1, S)``; the training loop then fails the run instead of exiting 0 with a gap.
Non-finite floats (a NaN loss) are written as ``null`` so every line is strict JSON.

Evaluation records (``"kind": "eval"``, ``metric_record.EvalRecord``) live beside the step
records: a record is identified by ``(step, kind)``, the evaluation after step k comes right after
step k's record. A resume from S keeps them up to step S's own record: the evaluation after S is
dropped too, since the resumed attempt evaluates its restored state again (exactly once). A chunk
that begins with an evaluation record is named ``chunk-<first>-<last>e.jsonl``, so it never
shares a name with the chunk that ended with that step's own record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterable

import fsspec

from tunix_api.artifacts import METRICS_FILE
from tunix_trainer.artifact_io import bounded, json_safe, read_bytes, with_retries, write_atomic
from tunix_trainer.metric_record import is_eval

log = logging.getLogger(__name__)

CHUNK_DIR = "metrics"
_CHUNK_RE = re.compile(r"^chunk-(\d{9,})-(\d{9,})e?\.jsonl$")


def chunk_name(first_step: int, last_step: int, eval_first: bool = False) -> str:
    """The object name of a chunk holding steps ``first_step..last_step`` (``eval_first``: its
    first record is the evaluation after ``first_step``)."""
    return f"chunk-{first_step:09d}-{last_step:09d}{'e' if eval_first else ''}.jsonl"


def record_key(record: dict) -> tuple[int, int]:
    """The order of records: by step, a step's evaluation after its step record."""
    return int(record["step"]), int(is_eval(record))


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    """``(first_step, last_step)`` of a chunk object name, or None for other names."""
    match = _CHUNK_RE.match(name.rsplit("/", 1)[-1])
    return (int(match.group(1)), int(match.group(2))) if match else None


def dumps_record(record: dict) -> str:
    """One strict-JSON line (no trailing newline)."""
    return json.dumps(json_safe(record), separators=(",", ":"), allow_nan=False)


def encode_records(records: Iterable[dict]) -> bytes:
    """JSON Lines for ``records``."""
    return "".join(dumps_record(r) + "\n" for r in records).encode()


def decode_records(data: bytes) -> list[dict]:
    """Records of a JSON Lines document; a torn last line (no newline) is ignored."""
    text = data.decode()
    lines = text.split("\n")
    if lines and lines[-1] and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines = lines[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def merge_records(*sources: Iterable[dict]) -> list[dict]:
    """One record per step (and one evaluation per step), later sources winning, in order."""
    by_key: dict[tuple[int, int], dict] = {}
    for source in sources:
        for record in source:
            by_key[record_key(record)] = record
    return [by_key[key] for key in sorted(by_key)]


class MetricStore:
    """Writes one run's metric records under ``root`` on ``fs`` (see module doc).

    Not safe for concurrent writers: one trainer process (host 0) owns a run's metrics.
    Methods may be called from several threads of that process.
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        *,
        flush_every_steps: int = 50,
        log_every_steps: int = 1,
        consolidate_every_flushes: int = 10,
    ) -> None:
        if flush_every_steps < 1 or log_every_steps < 1 or consolidate_every_flushes < 1:
            raise ValueError("flush_every_steps, log_every_steps and consolidate_every_flushes must be >= 1")
        self.fs, self.root = fs, root.rstrip("/")
        self.flush_every_steps = flush_every_steps
        self.log_every_steps = log_every_steps
        self.consolidate_every_flushes = consolidate_every_flushes
        self.missing_steps: tuple[int, int] | None = None
        self._lock = threading.RLock()
        self._buffer: list[dict] = []
        self._durable: list[dict] = []  # every durable record, in step order
        self._last_key: tuple[int, int] | None = None  # record_key of the last record (None before start)
        self._last_flushed_step = 0
        self._flushes_since_consolidation = 0

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _chunk_paths(self) -> list[tuple[int, int, str]]:
        directory = self._path(CHUNK_DIR)

        def ls() -> list[str]:
            self.fs.invalidate_cache(directory)
            try:
                return self.fs.ls(directory, detail=False, **bounded(self.fs))
            except FileNotFoundError:
                return []

        names = with_retries(self.fs, f"listing of {directory}", ls)
        chunks = []
        for name in names:
            steps = parse_chunk_name(name)
            if steps is not None:
                chunks.append((steps[0], steps[1], name))
        return sorted(chunks)

    def read_metrics(self) -> list[dict]:
        """Every durable record, one per step, in step order."""
        consolidated = read_bytes(self.fs, self._path(METRICS_FILE))
        sources = [decode_records(consolidated)] if consolidated else []
        for _, _, path in self._chunk_paths():
            data = read_bytes(self.fs, path)
            if data:
                sources.append(decode_records(data))
        return merge_records(*sources)

    def start(self, resume_step: int) -> None:
        """Begin an attempt resuming after ``resume_step`` (0: from scratch).

        Afterwards the durable metrics hold only steps <= ``resume_step``, less the evaluation after
        ``resume_step`` (the resumed attempt evaluates its restored state again).
        """
        if resume_step < 0:
            raise ValueError("resume_step must be >= 0")
        keep_to = (resume_step, 0)
        with self._lock:
            for first, last, path in self._chunk_paths():
                if last < resume_step:
                    continue
                records = decode_records(read_bytes(self.fs, path) or b"") if first <= resume_step else []
                kept = [r for r in records if record_key(r) <= keep_to]
                if kept and len(kept) == len(records):
                    continue  # nothing after resume_step in it
                name = None
                if kept:
                    name = chunk_name(first, max(r["step"] for r in kept), is_eval(kept[0]))
                    write_atomic(self.fs, self._path(CHUNK_DIR, name), encode_records(kept))
                if name != path.rsplit("/", 1)[-1]:
                    with_retries(self.fs, f"removal of {path}", lambda path=path: self._remove(path))
            self._durable = [r for r in self.read_metrics() if record_key(r) <= keep_to]
            self._consolidate()
            self._buffer = []
            self._last_key = keep_to
            self._last_flushed_step = resume_step
            last_durable = max((r["step"] for r in self._durable if not is_eval(r)), default=0)
            expected = resume_step - resume_step % self.log_every_steps
            self.missing_steps = (last_durable + 1, resume_step) if last_durable < expected else None
            if self.missing_steps:
                log.warning(
                    "metrics of steps %d..%d were lost before the resume from step %d; they stay missing",
                    *self.missing_steps,
                    resume_step,
                )

    def log_step(self, record: dict) -> None:
        """Buffer the record of one step (or evaluation); flushes every ``flush_every_steps`` steps."""
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"a metrics record needs an int 'step', got {step!r}")
        with self._lock:
            if self._last_key is None:
                raise RuntimeError("MetricStore.start() must be called before log_step()")
            key = record_key(record)
            if key <= self._last_key:
                what = "evaluation" if is_eval(record) else "step"
                raise ValueError(f"{what} {step} logged after step {self._last_key[0]}")
            self._buffer.append(dict(record))
            self._last_key = key
            if step - self._last_flushed_step >= self.flush_every_steps:
                self.flush()

    def flush(self) -> None:
        """Make buffered records durable as one chunk (call it at every checkpoint save)."""
        with self._lock:
            if not self._buffer:
                return
            records, first, last = self._buffer, self._buffer[0]["step"], self._buffer[-1]["step"]
            name = chunk_name(first, last, is_eval(records[0]))
            write_atomic(self.fs, self._path(CHUNK_DIR, name), encode_records(records))
            self._durable.extend(records)
            self._buffer = []
            self._last_flushed_step = last
            self._flushes_since_consolidation += 1
            if self._flushes_since_consolidation >= self.consolidate_every_flushes:
                self._consolidate()

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # a retried removal that had succeeded
            self.fs.rm_file(path, **bounded(self.fs))

    def _consolidate(self) -> None:
        write_atomic(self.fs, self._path(METRICS_FILE), encode_records(self._durable))
        self._flushes_since_consolidation = 0

    def close(self) -> None:
        """Flush and write the final, complete metrics.jsonl (a no-op when nothing changed)."""
        with self._lock:
            self.flush()
            if self._flushes_since_consolidation:
                self._consolidate()
