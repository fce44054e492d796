"""JSONL datasets from any fsspec URI, tokenized into deterministic, exactly resumable batches.

A dataset is a JSONL file of records ``{"text": ...}`` or ``{"prompt": ..., "completion": ...}``.
The whole file is read and tokenized once at start: right for the datasets this trainer targets
(megabytes to a few gigabytes). Huge corpora need a streaming loader over pre-tokenized shards
(e.g. Grain over ArrayRecord) with the same ``state()``/``restore()`` contract.

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
from tunix_trainer.data_records import DataError, parse_records, tokenize_documents

if TYPE_CHECKING:
    from tunix_trainer.tokenizer import Tokenizer

_CHUNK = 1 << 20
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


def epoch_order(n_docs: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Document order of an epoch: a permutation seeded by ``(seed, epoch)``, or file order."""
    if not shuffle:
        return np.arange(n_docs)
    return np.random.default_rng([seed, epoch]).permutation(n_docs)


def packed_rows(
    tokens: np.ndarray, weights: np.ndarray, offsets: np.ndarray, order: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Documents in ``order`` concatenated and cut into ``[rows, width]`` windows; the tail that
    does not fill a window is dropped."""
    lengths = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    index = (np.arange(total) + shift)[: (total // width) * width].reshape(-1, width)
    return tokens[index], weights[index]


def padded_rows(
    tokens: np.ndarray, weights: np.ndarray, offsets: np.ndarray, order: np.ndarray, width: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """One document per row, truncated to ``width`` tokens, padded with ``pad_id`` (weight 0)."""
    starts = offsets[:-1][order]
    lengths = np.diff(offsets)[order]
    col = np.arange(width)
    valid = col[None, :] < lengths[:, None]
    index = np.where(valid, starts[:, None] + col[None, :], 0)
    return np.where(valid, tokens[index], pad_id).astype(np.int32), np.where(valid, weights[index], 0)


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


def _read(uri: str, storage_options: dict[str, Any] | None) -> bytes:
    try:
        with open_uri(uri, "rb", storage_options) as f:
            return f.read()
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read dataset {uri}: {exc}") from exc


class BatchIterator:
    """Infinite iterator of ``Batch`` over a JSONL dataset; epochs repeat, reshuffled per epoch.

    Rows: with ``spec.packing`` the epoch's documents are concatenated and cut into windows of
    ``seq_len + 1`` tokens (the incomplete tail is dropped); otherwise each document is one row,
    truncated or padded. ``inputs = row[:-1]``, ``targets = row[1:]``; ``loss_mask`` is 0 where the
    target is a bos, a prompt token or padding. A row whose completion was truncated away entirely
    has an all-zero mask.

    Position: ``state()`` is ``{"epoch", "cursor", "rows_per_epoch"}``: the next row to serve is row
    ``cursor`` of epoch ``epoch``, whose rows are a pure function of (file, tokenizer, seq_len,
    packing, shuffle, seed, epoch). ``restore(state)`` jumps there directly, so the batches after a
    restore are exactly those the saved iterator would have produced next. Batches run across epoch
    boundaries without gaps. ``rows_per_epoch`` guards against resuming with a different dataset or
    shape (a mismatch is a ``DataError``).
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
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        self.uri = resolve_uri(spec.uri, base_dir)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.tokens_per_batch = batch_size * seq_len
        self._seed = seed
        self._packing = spec.packing
        self._shuffle = spec.shuffle
        self._pad_id = tokenizer.pad_id

        data = _read(self.uri, storage_options)
        self.checksum = "sha256:" + hashlib.sha256(data).hexdigest()
        records = parse_records(data, spec.format, self.uri)
        keep = training_indices(len(records), hold_out_fraction)  # data_eval.EvalBatches has the rest
        if keep is not None:
            records = [records[i] for i in keep]
        self._tokens, self._weights, self._offsets = tokenize_documents(records, tokenizer)
        self.num_documents = len(records)
        self.num_tokens = int(self._tokens.size)
        width = seq_len + 1
        self.rows_per_epoch = self.num_tokens // width if self._packing else self.num_documents
        if self.rows_per_epoch == 0:
            raise DataError(
                f"{self.uri}: {self.num_tokens} tokens in {self.num_documents} documents is fewer than "
                f"one packed row of seqLen + 1 = {width} tokens; add data or lower training.seqLen"
            )
        self._epoch = 0
        self._cursor = 0
        self._cached_epoch = -1
        self._rows, self._row_weights = self._epoch_rows(0)
        if not self._row_weights[:, 1:].any():
            raise DataError(
                f"{self.uri}: no trainable tokens (every completion is truncated away at seqLen {seq_len})"
            )

    def _epoch_rows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if epoch != self._cached_epoch:
            order = epoch_order(self.num_documents, self._seed, epoch, self._shuffle)
            width = self.seq_len + 1
            if self._packing:
                rows = packed_rows(self._tokens, self._weights, self._offsets, order, width)
            else:
                rows = padded_rows(self._tokens, self._weights, self._offsets, order, width, self._pad_id)
            self._rows, self._row_weights = rows
            self._cached_epoch = epoch
        return self._rows, self._row_weights

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        rows: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        needed = self.batch_size
        while needed:
            epoch_rows, epoch_weights = self._epoch_rows(self._epoch)
            take = min(needed, self.rows_per_epoch - self._cursor)
            rows.append(epoch_rows[self._cursor : self._cursor + take])
            weights.append(epoch_weights[self._cursor : self._cursor + take])
            needed -= take
            self._cursor += take
            if self._cursor == self.rows_per_epoch:
                self._epoch, self._cursor = self._epoch + 1, 0
        return _batch(np.concatenate(rows), np.concatenate(weights))

    def state(self) -> dict[str, int]:
        """The data position (JSON-serialisable); see the class docstring."""
        return {"epoch": self._epoch, "cursor": self._cursor, "rows_per_epoch": self.rows_per_epoch}

    def restore(self, state: dict[str, int]) -> None:
        """Continue exactly where ``state()`` was taken (constant time, no replay)."""
        try:
            epoch, cursor = int(state["epoch"]), int(state["cursor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid data state {state!r}: needs integer epoch and cursor") from exc
        saved_rows = state.get("rows_per_epoch", self.rows_per_epoch)
        if saved_rows != self.rows_per_epoch:
            raise DataError(
                f"cannot resume the data position: it was saved with {saved_rows} rows per epoch, "
                f"{self.uri} now gives {self.rows_per_epoch} (dataset, tokenizer, seqLen or packing changed)"
            )
        if epoch < 0 or not 0 <= cursor < self.rows_per_epoch:
            raise ValueError(f"invalid data state {state!r}: cursor must be in [0, {self.rows_per_epoch})")
        self._epoch, self._cursor = epoch, cursor


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
