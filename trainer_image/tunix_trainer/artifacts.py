"""The run's artifacts in object storage: metrics.jsonl, progress.json, summary.json.

The same code serves local paths, ``file://``, ``s3://``, ``gs://`` and ``memory://``
(through fsspec). Object stores have no append and show an object only once it is
closed, so metrics are written like this:

* **Chunks.** :meth:`RunArtifacts.log_step` buffers records; each flush writes the
  buffer as one immutable object ``metrics/chunk-<first_step:09d>-<last_step:09d>.jsonl``
  (a single PUT; temp file + ``os.replace`` on a local disk). A chunk is never
  appended to; it is only ever deleted or replaced by a shorter one at a resume.
  Flushes happen every ``flush_every_steps`` steps, on :meth:`RunArtifacts.flush`
  (the loop calls it whenever it saves a checkpoint) and on close.
* **Consolidation.** ``metrics.jsonl`` is rewritten as the union of all chunks at
  :meth:`RunArtifacts.close`, at :meth:`RunArtifacts.start`, and every
  ``consolidate_every_flushes`` flushes, so it is complete at the end of a run and
  at most a few flushes behind while it runs. It is a derived view: the chunks stay.
* **Reading.** :meth:`RunArtifacts.read_metrics` returns the union of
  ``metrics.jsonl`` and the chunks, one record per step (chunks win), in step order,
  so records are readable mid-run before any consolidation.

Exactly once across resumes: after a resume from checkpoint step S
(:meth:`RunArtifacts.start` with ``resume_step=S``), records of steps > S written by
the previous attempt are discarded (chunks after S are deleted, a chunk straddling S
is replaced by its part <= S, ``metrics.jsonl`` is rewritten); the resumed run
rewrites them. ``start`` is idempotent, so an attempt that dies inside it is
repaired by the next one. Steps are 1-based: the record of step k is logged after
the k-th optimizer update, and a checkpoint at step S holds S updates.

Gaps: if the durable records end at a step G before the last step <= S that should
have been logged (a crash lost the unflushed buffer after the checkpoint), steps
G+1..S cannot be re-created, because the resumed run starts after S. ``start`` then
logs a warning and sets :attr:`RunArtifacts.missing_steps` to ``(G + 1, S)``; the
metrics keep the hole and :func:`summarize` still counts those steps' tokens. The
loop avoids gaps by calling :meth:`RunArtifacts.flush` whenever it saves a checkpoint.

``progress.json`` and ``summary.json`` are replaced whole (single PUT, or temp file +
``os.replace``), so readers never see a partial document. Non-finite floats (a NaN
loss) are written as ``null`` so every artifact is strict JSON.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tunix_api.artifacts import METRICS_FILE, PROGRESS_FILE, SUMMARY_FILE, TERMINATION_MESSAGE_LIMIT
from tunix_api.run import Progress, Summary, provenance_strings
from tunix_api.training import StorageSpec
from tunix_trainer.termination import write_termination_message

log = logging.getLogger(__name__)

CHUNK_DIR = "metrics"
_CHUNK_RE = re.compile(r"^chunk-(\d{9,})-(\d{9,})\.jsonl$")


# --------------------------------------------------------------------------- pure helpers


def storage_options(storage: StorageSpec) -> dict:
    """fsspec keyword arguments for ``storage`` (credentials come from the AWS env vars).

    Endpoint and region apply to S3 only; for another explicit scheme they are dropped.
    With no ``uri`` (the operator supplies the base URI) they are kept if set.
    """
    scheme = storage.uri.split("://", 1)[0].lower() if storage.uri and "://" in storage.uri else None
    if storage.uri is not None and scheme not in ("s3", "s3a"):
        return {}
    client_kwargs = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
    if storage.region:
        client_kwargs["region_name"] = storage.region
    return {"client_kwargs": client_kwargs} if client_kwargs else {}


def chunk_name(first_step: int, last_step: int) -> str:
    """The object name of a chunk holding steps ``first_step..last_step``."""
    return f"chunk-{first_step:09d}-{last_step:09d}.jsonl"


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    """``(first_step, last_step)`` of a chunk object name, or None for other names."""
    match = _CHUNK_RE.match(name.rsplit("/", 1)[-1])
    return (int(match.group(1)), int(match.group(2))) if match else None


def _finite(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/JAX scalars unwrapped, non-finite floats None."""
    if hasattr(value, "item") and not isinstance(value, dict | list | tuple | str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps_record(record: dict) -> str:
    """One strict-JSON line (no trailing newline)."""
    return json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)


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
    """One record per step, later sources winning, sorted by step."""
    by_step: dict[int, dict] = {}
    for source in sources:
        for record in source:
            by_step[int(record["step"])] = record
    return [by_step[step] for step in sorted(by_step)]


def _num(record: dict, key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def summarize(records: list[dict], *, wall_time_seconds: float, provenance: dict) -> dict:
    """The summary.json document (snake_case keys) for a run's metric records.

    * ``final_loss``: the loss of the last record; ``best_loss``/``best_step``: the
      lowest finite loss and its step; ``total_steps``: the last record's step.
    * ``total_tokens``: ``tokens`` is the count of the logged step; steps between two
      records (``logEverySteps`` > 1, or a gap) are taken to have the count of the
      record that ends the interval, so the total covers every step 1..total_steps.
    * ``avg_tokens_per_second``: tokens over step time summed across the records that
      have both, leaving out the steps marked ``includes_compile`` (each attempt's first
      step); ``total_tokens / wall_time_seconds`` when no record qualifies.
    """
    ordered = merge_records(records)
    losses = [(r["step"], _num(r, "loss")) for r in ordered]
    finite = [(step, loss) for step, loss in losses if loss is not None]
    best_step, best_loss = min(finite, key=lambda item: item[1]) if finite else (None, None)

    total_tokens, previous = 0, 0
    step_tokens = step_time = 0.0
    for record in ordered:
        tokens = _num(record, "tokens")
        seconds = _num(record, "step_time_seconds")
        if tokens is not None:
            total_tokens += int(tokens) * max(int(record["step"]) - previous, 1)
            if seconds is not None and seconds > 0 and not record.get("includes_compile"):
                step_tokens += tokens
                step_time += seconds
        previous = int(record["step"])
    if step_time > 0:
        avg_tps: float | None = step_tokens / step_time
    elif wall_time_seconds > 0 and total_tokens:
        avg_tps = total_tokens / wall_time_seconds
    else:
        avg_tps = None

    return _finite(
        {
            "final_loss": losses[-1][1] if losses else None,
            "best_loss": best_loss,
            "best_step": best_step,
            "total_steps": int(ordered[-1]["step"]) if ordered else 0,
            "total_tokens": total_tokens,
            "avg_tokens_per_second": avg_tps,
            "wall_time_seconds": float(wall_time_seconds),
            "provenance": dict(provenance),
        }
    )


def compact_summary(summary: dict, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The summary as compact JSON for the termination message, always < ``limit`` bytes.

    Keys are camelCase as in ``tunix_api.run.Summary`` plus ``provenance`` (string
    values). Provenance is trimmed to fit: long values are shortened (ending in
    ``...``), then keys are dropped from the end, then provenance goes altogether.
    """
    summary = _finite(summary)
    core = Summary.model_validate(summary).to_wire()
    provenance = provenance_strings(summary.get("provenance") or {})

    def encode(prov: dict[str, str] | None) -> str:
        doc = dict(core) if prov is None else {**core, "provenance": prov}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    def fits(text: str) -> bool:
        return len(text.encode()) < limit

    text = encode(provenance)
    if fits(text):
        return text
    longest = max((len(v) for v in provenance.values()), default=0)
    for width in _shrinking(longest):
        trimmed = {k: v if len(v) <= width else v[: max(width - 3, 0)] + "..." for k, v in provenance.items()}
        text = encode(trimmed)
        if fits(text):
            return text
    trimmed = {k: v[:16] for k, v in provenance.items()}
    while trimmed:
        trimmed.pop(next(reversed(trimmed)))
        text = encode(trimmed)
        if fits(text):
            return text
    text = encode(None)
    if fits(text):
        return text
    raise ValueError(f"a summary cannot fit in {limit} bytes")


def _shrinking(start: int) -> Iterable[int]:
    width = start
    while width > 16:
        width = width * 3 // 4
        yield width


def progress_document(
    *,
    step: int,
    total_steps: int,
    loss: float,
    tokens_per_second: float,
    eta_seconds: float | None,
    updated_at: dt.datetime | None = None,
) -> dict:
    """progress.json: camelCase, as ``tunix_api.run.Progress``; unknown values omitted."""
    when = updated_at or dt.datetime.now(dt.UTC)
    progress = Progress(
        step=step,
        total_steps=total_steps,
        loss=_finite(float(loss)) if loss is not None else None,
        tokens_per_second=_finite(float(tokens_per_second)) if tokens_per_second is not None else None,
        eta_seconds=_finite(float(eta_seconds)) if eta_seconds is not None else None,
        updated_at=when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return progress.to_wire()


# --------------------------------------------------------------------------- storage I/O


def _write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace ``path`` whole: temp file + ``os.replace`` locally, one PUT elsewhere."""
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def _read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """Contents of ``path``, or None if it does not exist."""
    fs.invalidate_cache(path)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def write_json(uri: str, document: dict, storage_options: dict | None = None) -> None:
    """Replace the JSON object at ``uri`` whole (atomically on local disk, one PUT elsewhere)."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    _write_atomic(fs, path, (json.dumps(_finite(document), indent=2, allow_nan=False) + "\n").encode())


def read_json(uri: str, storage_options: dict | None = None) -> dict | None:
    """The JSON object at ``uri`` (progress.json, summary.json...), or None if missing."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    data = _read_bytes(fs, path)
    if data is None:
        return None
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError(f"{uri}: expected a JSON object, found {type(doc).__name__}")
    return doc


class RunArtifacts:
    """Writes one run's metrics, progress and summary under ``uri`` (see module doc).

    Not safe for concurrent writers: one trainer process (host 0) owns a run's
    artifacts. Methods may be called from several threads of that process.
    """

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict | None = None,
        flush_every_steps: int = 50,
        progress_interval_seconds: float = 5.0,
        termination_log: str | None = None,
        log_every_steps: int = 1,
        consolidate_every_flushes: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_every_steps < 1 or log_every_steps < 1 or consolidate_every_flushes < 1:
            raise ValueError("flush_every_steps, log_every_steps and consolidate_every_flushes must be >= 1")
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.flush_every_steps = flush_every_steps
        self.progress_interval_seconds = progress_interval_seconds
        self.termination_log = termination_log
        self.log_every_steps = log_every_steps
        self.consolidate_every_flushes = consolidate_every_flushes
        self.missing_steps: tuple[int, int] | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self._buffer: list[dict] = []
        self._durable: list[dict] = []  # every durable record, in step order
        self._last_step: int | None = None  # last step logged (None before start)
        self._last_flushed_step = 0
        self._flushes_since_consolidation = 0
        self._last_progress: float | None = None

    # ---- paths

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def metrics_uri(self) -> str:
        """Where the consolidated metrics.jsonl lives."""
        return f"{self.uri}/{METRICS_FILE}"

    def _chunk_paths(self) -> list[tuple[int, int, str]]:
        directory = self._path(CHUNK_DIR)
        self.fs.invalidate_cache(directory)
        try:
            names = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return []
        chunks = []
        for name in names:
            steps = parse_chunk_name(name)
            if steps is not None:
                chunks.append((steps[0], steps[1], name))
        return sorted(chunks)

    # ---- metrics

    def read_metrics(self) -> list[dict]:
        """Every durable record, one per step, in step order."""
        consolidated = _read_bytes(self.fs, self._path(METRICS_FILE))
        sources = [decode_records(consolidated)] if consolidated else []
        for _, _, path in self._chunk_paths():
            data = _read_bytes(self.fs, path)
            if data:
                sources.append(decode_records(data))
        return merge_records(*sources)

    def start(self, resume_step: int) -> None:
        """Begin an attempt resuming after ``resume_step`` (0: from scratch).

        Afterwards the durable metrics hold only steps <= ``resume_step``.
        """
        if resume_step < 0:
            raise ValueError("resume_step must be >= 0")
        with self._lock:
            for first, last, path in self._chunk_paths():
                if last <= resume_step:
                    continue
                if first <= resume_step:
                    kept = [r for r in decode_records(self.fs.cat_file(path)) if r["step"] <= resume_step]
                    if kept:
                        name = chunk_name(first, max(r["step"] for r in kept))
                        _write_atomic(self.fs, self._path(CHUNK_DIR, name), encode_records(kept))
                self.fs.rm_file(path)
            self._durable = [r for r in self.read_metrics() if r["step"] <= resume_step]
            self._consolidate()
            self._buffer = []
            self._last_step = resume_step
            self._last_flushed_step = resume_step
            self._last_progress = None
            last_durable = self._durable[-1]["step"] if self._durable else 0
            expected = resume_step - resume_step % self.log_every_steps
            self.missing_steps = (last_durable + 1, resume_step) if last_durable < expected else None
            if self.missing_steps:
                log.warning(
                    "metrics of steps %d..%d were lost before the resume from step %d; they stay missing",
                    *self.missing_steps,
                    resume_step,
                )

    def log_step(self, record: dict) -> None:
        """Buffer the record of one step; flushes every ``flush_every_steps`` steps."""
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"a metrics record needs an int 'step', got {step!r}")
        with self._lock:
            if self._last_step is None:
                raise RuntimeError("RunArtifacts.start() must be called before log_step()")
            if step <= self._last_step:
                raise ValueError(f"step {step} logged after step {self._last_step}")
            self._buffer.append(dict(record))
            self._last_step = step
            if step - self._last_flushed_step >= self.flush_every_steps:
                self.flush()

    def flush(self) -> None:
        """Make buffered records durable as one chunk (call it at every checkpoint save)."""
        with self._lock:
            if not self._buffer:
                return
            records, first, last = self._buffer, self._buffer[0]["step"], self._buffer[-1]["step"]
            _write_atomic(self.fs, self._path(CHUNK_DIR, chunk_name(first, last)), encode_records(records))
            self._durable.extend(records)
            self._buffer = []
            self._last_flushed_step = last
            self._flushes_since_consolidation += 1
            if self._flushes_since_consolidation >= self.consolidate_every_flushes:
                self._consolidate()

    def _consolidate(self) -> None:
        _write_atomic(self.fs, self._path(METRICS_FILE), encode_records(self._durable))
        self._flushes_since_consolidation = 0

    def close(self) -> None:
        """Flush and write the final, complete metrics.jsonl (a no-op when nothing changed)."""
        with self._lock:
            self.flush()
            if self._flushes_since_consolidation:
                self._consolidate()

    # ---- progress and summary

    def progress(
        self,
        *,
        step: int,
        total_steps: int,
        loss: float,
        tokens_per_second: float,
        eta_seconds: float | None,
        force: bool = False,
    ) -> None:
        """Rewrite progress.json, at most once per ``progress_interval_seconds`` unless ``force``."""
        with self._lock:
            now = self._clock()
            if (
                not force
                and self._last_progress is not None
                and now - self._last_progress < self.progress_interval_seconds
            ):
                return
            doc = progress_document(
                step=step,
                total_steps=total_steps,
                loss=loss,
                tokens_per_second=tokens_per_second,
                eta_seconds=eta_seconds,
            )
            _write_atomic(self.fs, self._path(PROGRESS_FILE), json.dumps(doc).encode())
            self._last_progress = now

    def write_summary(self, summary: dict) -> None:
        """Write summary.json, and the compact summary to the termination log if set."""
        doc = _finite(summary)
        _write_atomic(self.fs, self._path(SUMMARY_FILE), json.dumps(doc, indent=2, allow_nan=False).encode())
        write_termination_message(self.termination_log, compact_summary(doc))
