"""The held-out split and finite evaluation batches.

``holdOutFraction`` splits a training dataset by record: ``held_out_indices`` picks the
``max(1, round(fraction * n))`` records whose index hashes lowest (splitmix64 of the record's
index in the dataset: shards sorted by name, lines in file order). The rule depends on nothing
but the record count and the fraction, not on the seed, the batch shape or the number of hosts,
so the training stream (``data.BatchIterator(hold_out_fraction=...)``) and ``EvalBatches`` always
agree and never share a record.

``EvalBatches`` reads records in order, once: no shuffle, no repeat. NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tunix_api.training import DatasetSpec
from tunix_trainer.data_records import DataError, encode_records
from tunix_trainer.data_sources import RecordSource

if TYPE_CHECKING:
    from tunix_trainer.data import Batch
    from tunix_trainer.tokenizer import Tokenizer

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of ``values`` (uint64, wrapping): a fixed, well-mixed bijection."""
    z = values.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def held_out_count(num_records: int, fraction: float) -> int:
    """How many of ``num_records`` records ``fraction`` holds out (at least 1 when positive)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdOutFraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return 0
    count = max(1, round(fraction * num_records))
    if count >= num_records:
        raise DataError(
            f"holdOutFraction {fraction} of {num_records} records holds out {count}: no training records left"
        )
    return count


def held_out_indices(num_records: int, fraction: float) -> np.ndarray:
    """The held-out record indices (sorted int64): the ``held_out_count`` lowest splitmix64 hashes."""
    count = held_out_count(num_records, fraction)
    if count == 0:
        return np.zeros(0, np.int64)
    hashes = splitmix64(np.arange(num_records, dtype=np.uint64))
    return np.sort(np.argpartition(hashes, count - 1)[:count]).astype(np.int64)


def training_indices(num_records: int, fraction: float) -> np.ndarray | None:
    """The record indices left for training (sorted int64), or None when nothing is held out."""
    held = held_out_indices(num_records, fraction)
    if held.size == 0:
        return None
    keep = np.ones(num_records, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep).astype(np.int64)


class EvalBatches:
    """Finite batches over a dataset's records in order, each record once (a fresh pass per ``iter``).

    ``hold_out_fraction=None``: every record of ``spec.uri`` (an evaluation dataset). A fraction:
    only the records that fraction holds out of the training dataset ``spec.uri`` (the ones
    ``BatchIterator`` with the same fraction never serves).

    Rows are built as for training: with ``spec.packing`` the records' tokens are concatenated and
    cut into rows of ``seq_len + 1`` tokens, the last row padded; otherwise one record per row,
    truncated or padded. The last batch is filled up with all-padding rows (``loss_mask`` 0), so
    every batch has ``batch_size`` rows and a masked mean over all batches weighs each evaluated
    token once. With several processes each yields its ``batch_size / process_count`` rows of every
    global batch (rows ``process_index * n : (process_index + 1) * n``), in the same number of
    batches on every process.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        seq_len: int,
        hold_out_fraction: float | None = None,
        storage_options: dict[str, Any] | None = None,
        base_dir: str | None = None,
        process_index: int = 0,
        process_count: int = 1,
        records_per_read: int = 256,
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        if batch_size % process_count or not 0 <= process_index < process_count:
            raise ValueError(f"batch_size {batch_size} must split over {process_count} processes")
        self.source = RecordSource(spec.uri, spec.format, storage_options=storage_options, base_dir=base_dir)
        self.uri = self.source.uri
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.packing = spec.packing
        self._rows = slice(
            process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count
        )
        self._per_read = records_per_read
        if hold_out_fraction is None:
            self.indices = np.arange(len(self.source), dtype=np.int64)
        else:
            self.indices = held_out_indices(len(self.source), hold_out_fraction)
            if self.indices.size == 0:
                raise ValueError("hold_out_fraction 0 holds out no records to evaluate on")
        self.num_records = int(self.indices.size)

    def __iter__(self) -> Iterator[Batch]:
        from tunix_trainer.data import Batch

        width = self.seq_len + 1
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        for rows, weights in self._row_blocks(width):
            pending.append((rows, weights))
            while sum(len(r) for r, _ in pending) >= self.batch_size:
                rows_all = np.concatenate([r for r, _ in pending])
                weights_all = np.concatenate([w for _, w in pending])
                batch_rows, batch_weights = rows_all[: self.batch_size], weights_all[: self.batch_size]
                pending = [(rows_all[self.batch_size :], weights_all[self.batch_size :])]
                yield _host_batch(Batch, batch_rows[self._rows], batch_weights[self._rows])
        left = sum(len(r) for r, _ in pending)
        if left:
            rows_all = np.concatenate([r for r, _ in pending])
            weights_all = np.concatenate([w for _, w in pending])
            fill = self.batch_size - left
            rows_all = np.concatenate([rows_all, np.full((fill, width), self.tokenizer.pad_id, np.int32)])
            weights_all = np.concatenate([weights_all, np.zeros((fill, width), np.uint8)])
            yield _host_batch(Batch, rows_all[self._rows], weights_all[self._rows])

    def _row_blocks(self, width: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """[rows, width] token and weight blocks, in record order."""
        pad = self.tokenizer.pad_id
        carry_t, carry_w = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        for start in range(0, self.num_records, self._per_read):
            records = self.source.records(self.indices[start : start + self._per_read])
            tokens, weights, lengths = encode_records(records, self.tokenizer)
            if self.packing:
                tokens, weights = np.concatenate([carry_t, tokens]), np.concatenate([carry_w, weights])
                full = tokens.size // width * width
                carry_t, carry_w = tokens[full:], weights[full:]
                if full:
                    yield tokens[:full].reshape(-1, width), weights[:full].reshape(-1, width)
            else:
                yield padded_documents(tokens, weights, lengths, width, pad)
        if carry_t.size:
            fill = width - carry_t.size
            yield (
                np.concatenate([carry_t, np.full(fill, pad, np.int32)])[None],
                np.concatenate([carry_w, np.zeros(fill, np.uint8)])[None],
            )


def padded_documents(
    tokens: np.ndarray, weights: np.ndarray, lengths: np.ndarray, width: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """One document per row, truncated to ``width`` tokens, padded with ``pad_id`` (weight 0)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    col = np.arange(width)
    valid = col[None, :] < lengths[:, None]
    index = np.where(valid, starts[:, None] + col[None, :], 0)
    rows = np.where(valid, tokens[index] if tokens.size else 0, pad_id).astype(np.int32)
    return rows, np.where(valid, weights[index] if weights.size else 0, 0).astype(np.uint8)


def _host_batch(batch_type: type, rows: np.ndarray, weights: np.ndarray) -> Batch:
    return batch_type(
        inputs=np.ascontiguousarray(rows[:, :-1], dtype=np.int32),
        targets=np.ascontiguousarray(rows[:, 1:], dtype=np.int32),
        loss_mask=np.ascontiguousarray(weights[:, 1:], dtype=np.float32),
    )
