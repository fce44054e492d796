"""Training batches from datasets of any size: streamed, deterministic, exactly resumable.

A dataset is JSONL records ``{"text": ...}`` or ``{"prompt": ..., "completion": ...}`` (or Parquet
with those columns) in one file, a directory or a glob of shards, on any fsspec URI
(``data_sources``). Records are read and tokenized as training consumes them, never all at once
(``data_stream``: the order, the lanes that make the global batch independent of the number of
hosts, the worker processes). ``data_eval`` holds the held-out split and evaluation batches.

This module needs NumPy and fsspec only (no JAX).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tunix_api.training import DatasetSpec
from tunix_trainer.artifact_io import open_uri, resolve_uri
from tunix_trainer.data_eval import EvalBatches, held_out_indices, training_indices
from tunix_trainer.data_records import DataError, parse_records
from tunix_trainer.data_sources import RecordSource
from tunix_trainer.data_stream import (
    STATE_VERSION,
    ChunkReader,
    Gather,
    LaneStream,
    RecordOrder,
    StreamShape,
    check_positions,
    host_lanes,
    tokenizer_identity,
)

if TYPE_CHECKING:
    from tunix_trainer.tokenizer import Tokenizer

_CHUNK = 1 << 20
CHUNK_BYTES = 1 << 16  # dataset bytes of a work item (one batched tokenizer call) at most
READ_AHEAD_BYTES = 1 << 25  # dataset bytes of all the work items in flight at most
MAX_RECORDS_PER_CHUNK = 4096
__all__ = [
    "Batch",
    "BatchIterator",
    "DataError",
    "EvalBatches",
    "SyntheticBatches",
    "dataset_checksum",
    "held_out_indices",
    "open_uri",
    "parse_records",
    "resolve_uri",
]


def dataset_checksum(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """``"sha256:<hex>"`` of the file's bytes."""
    digest = hashlib.sha256()
    with open_uri(uri, "rb", storage_options) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --- batches -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Batch:
    inputs: np.ndarray  # int32 [B, T]
    targets: np.ndarray  # int32 [B, T]
    loss_mask: np.ndarray  # float32 [B, T]: 0 on prompt tokens (SFT) and padding


def _batch(rows: np.ndarray, weights: np.ndarray) -> Batch:
    return Batch(
        inputs=np.ascontiguousarray(rows[:, :-1], dtype=np.int32),
        targets=np.ascontiguousarray(rows[:, 1:], dtype=np.int32),
        loss_mask=np.ascontiguousarray(weights[:, 1:], dtype=np.float32),
    )


def chunk_records(source: RecordSource, lanes: int, prefetch: int) -> int:
    """Records per work item: about ``CHUNK_BYTES`` of the dataset (fewer when ``lanes`` lanes each
    holding ``prefetch + 1`` chunks would pass ``READ_AHEAD_BYTES``), from its mean record size.
    Long documents make small chunks (a quick first batch), short ones big chunks (the per-chunk
    work amortised). Only the work is grouped by it: the batches do not depend on it."""
    mean = sum(shard.size for shard in source.shards) / max(len(source), 1)
    budget = min(CHUNK_BYTES, READ_AHEAD_BYTES // max(lanes * (prefetch + 1), 1))
    return int(np.clip(budget // max(mean, 1.0), 1, MAX_RECORDS_PER_CHUNK))


class BatchIterator:
    """Endless iterator of this host's rows of each global ``Batch`` over a dataset (``data_stream``).

    Rows: with ``spec.packing`` a lane's documents are concatenated and cut into rows of
    ``seq_len + 1`` tokens; otherwise each document is one row, truncated or padded.
    ``inputs = row[:-1]``, ``targets = row[1:]``; ``loss_mask`` is 0 where the target is a bos, a
    prompt token or padding. Epochs run on without gaps, reshuffled each epoch.

    A host gets the rows ``host_lanes(batch_size, grad_accum_steps, process_index,
    process_count)`` of every global batch of ``batch_size`` rows (all of them with one process).
    ``hold_out_fraction`` leaves out the records ``data_eval.EvalBatches`` evaluates on.

    Position: ``state()`` is ``{"version", "lanes", "shape"}``: every lane's (document, token
    offset), gathered from all hosts by ``gather`` (a collective: call it on every process, as
    checkpoints are), and what it is valid for. ``restore(state)`` jumps there directly, so the
    batches after a restore are exactly those the saved iterator would have produced next, on any
    number of hosts; a state saved for another dataset or shape is a ``DataError`` naming what
    changed. ``workers`` processes read and tokenize ahead (0: one thread of this process).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        seq_len: int,
        seed: int,
        storage_options: dict[str, Any] | None = None,
        base_dir: str | None = None,
        hold_out_fraction: float = 0.0,
        grad_accum_steps: int = 1,
        process_index: int = 0,
        process_count: int = 1,
        gather: Gather | None = None,
        workers: int = 0,
        prefetch: int = 2,
        records_per_chunk: int | None = None,
        threads: int = 1,
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        self.source = RecordSource(spec.uri, spec.format, storage_options=storage_options, base_dir=base_dir)
        self.uri = self.source.uri
        self.checksum = self.source.checksum
        self.batch_size = batch_size
        self.seq_len = seq_len
        training = training_indices(len(self.source), hold_out_fraction)  # data_eval has the rest
        self.num_records = len(self.source) if training is None else int(training.size)
        self.lanes = host_lanes(batch_size, grad_accum_steps, process_index, process_count)
        self.tokens_per_batch = len(self.lanes) * seq_len
        self.shape = StreamShape(
            dataset=self.checksum,
            records=self.num_records,
            batch_size=batch_size,
            seq_len=seq_len,
            packing=spec.packing,
            tokenizer=tokenizer_identity(tokenizer),
            hold_out_fraction=float(hold_out_fraction),
        )
        order = RecordOrder(self.num_records, seed, spec.shuffle, training)
        reader = ChunkReader(
            self.source,
            order,
            tokenizer,
            lanes=self.lanes,
            batch_size=batch_size,
            records_per_chunk=records_per_chunk or chunk_records(self.source, len(self.lanes), prefetch),
        )
        self._stream = LaneStream(
            reader,
            seq_len=seq_len,
            packing=spec.packing,
            pad_id=tokenizer.pad_id,
            workers=workers,
            prefetch=prefetch,
            threads=threads,
        )
        self._gather = gather
        self._served = 0

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        rows, weights = self._stream.next_rows()
        if self._served == 0 and not weights[:, 1:].any():
            self.close()
            raise DataError(
                f"{self.uri}: no trainable tokens in this host's rows of the first batch (every "
                f"completion truncated away at seqLen {self.seq_len}?)"
            )
        self._served += 1
        return _batch(rows, weights)

    def state(self) -> dict[str, Any]:
        """The data position (JSON-serialisable); see the class docstring."""
        local = np.column_stack([self.lanes, self._stream.positions()])  # [lanes, (lane, doc, offset)]
        every = self._gather(local) if self._gather is not None else local
        every = every[np.argsort(every[:, 0], kind="stable")]
        return {"version": STATE_VERSION, "lanes": every[:, 1:].tolist(), "shape": self.shape.as_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state()`` was taken (no replay)."""
        positions = check_positions(state, self.shape, self.uri)
        self._stream.seek(positions[self.lanes])
        self._served = 1  # the saved run already checked its first batch

    def close(self) -> None:
        """Stop the worker processes (iterating again restarts them)."""
        self._stream.close()


class SyntheticBatches:
    """Benchmark data: uniform random tokens in ``[0, vocab_size)``, mask all ones.

    Batch ``i`` is drawn from a generator seeded by ``(seed, i)``, so ``state()`` is ``{"step": i}``
    and ``restore`` is exact and constant time.
    """

    def __init__(self, vocab_size: int, *, batch_size: int, seq_len: int, seed: int):
        if vocab_size < 1 or batch_size < 1 or seq_len < 1:
            raise ValueError("vocab_size, batch_size and seq_len must be positive")
        self.vocab_size = vocab_size
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.tokens_per_batch = batch_size * seq_len
        self._seed = seed
        self._step = 0
        self._mask = np.ones((batch_size, seq_len), dtype=np.float32)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        rng = np.random.default_rng([self._seed, self._step])
        rows = rng.integers(0, self.vocab_size, size=(self.batch_size, self.seq_len + 1), dtype=np.int32)
        self._step += 1
        return Batch(
            inputs=np.ascontiguousarray(rows[:, :-1]),
            targets=np.ascontiguousarray(rows[:, 1:]),
            loss_mask=self._mask.copy(),
        )

    def state(self) -> dict[str, int]:
        return {"step": self._step}

    def restore(self, state: dict[str, int]) -> None:
        try:
            step = int(state["step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid synthetic data state {state!r}: needs an integer step") from exc
        if step < 0:
            raise ValueError(f"invalid synthetic data state {state!r}: step must be >= 0")
        self._step = step
