"""The streaming training pipeline: shuffled records -> tokens (worker processes) -> rows in lanes.

**Order.** The training records (all records less the held-out ones, ``data_eval``) form an
endless stream of positions ``p = 0, 1, 2, ...``: position ``p`` is record ``perm_e(k)`` with
``(e, k) = divmod(p, n)``, where ``perm_e`` (``permute``) is a pseudo-random permutation of the
``n`` records drawn from ``(training.seed, e)``: a 4-round Feistel network evaluated per index, in
O(1) memory, as Grain's ``index_shuffle`` is. Every record is seen exactly once per epoch, in a new
order each epoch, whatever the dataset's size; ``shuffle: false`` makes ``perm_e`` the identity.

**Lanes.** Row ``r`` of every global batch (``r < batchSize``) is served by lane ``r``, which
reads the positions ``r, r + B, r + 2B, ...`` (``B = batchSize``) and packs their documents into
rows of ``seqLen + 1`` tokens (without packing: one document per row, truncated or padded). A lane
is a pure function of (dataset, tokenizer, seqLen, packing, batchSize, seed), so the global batch
sequence does not depend on the number of hosts, devices or workers; a host reads and tokenizes
only the records of its own lanes (``host_lanes``: the rows its devices hold).

**Work.** A lane's documents are read and tokenized in chunks of ``records_per_chunk`` records
(one batched tokenizer call each; ``data.chunk_records`` sizes them by the dataset's bytes) by
worker processes, or by ``threads`` threads of the trainer when ``workers`` is 0. Each lane keeps
its next ``prefetch`` chunks in flight, so the work runs ahead of the device and host memory stays
``lanes x (prefetch + 1)`` chunks however long the run; the chunk every lane needs next is queued
before any read-ahead, so the first batch waits for one chunk a lane. Chunks only group the work:
the batches do not depend on their size or on the threads. Packing happens in the trainer
process: a cut of NumPy arrays.

**Position.** A lane's position is ``(document, token offset)``; the data state holds those of
all lanes (gathered from every host), so a restore continues exactly, on any number of hosts,
with no replay, and a different dataset or shape is refused by name (``check_positions``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tunix_trainer.data_eval import splitmix64
from tunix_trainer.data_records import DataError, encode_records
from tunix_trainer.data_sources import RecordSource

if TYPE_CHECKING:
    from tunix_trainer.tokenizer import Tokenizer

STATE_VERSION = 2
Gather = Callable[[np.ndarray], np.ndarray]  # this host's [n, k] rows -> every host's, concatenated


def host_lanes(batch_size: int, grad_accum_steps: int, process_index: int, process_count: int) -> np.ndarray:
    """The global rows (lanes) one host serves: within every micro-batch of ``batch_size /
    grad_accum_steps`` rows, its ``1 / process_count`` contiguous share (the rows its devices hold
    when the micro-batch is split over the "data" axis in process order)."""
    micro = batch_size // grad_accum_steps
    if batch_size % grad_accum_steps or micro % process_count:
        raise ValueError(
            f"batch_size {batch_size} / grad_accum_steps {grad_accum_steps} must split over "
            f"{process_count} processes"
        )
    share = micro // process_count
    first = process_index * share
    return np.concatenate([a * micro + np.arange(first, first + share) for a in range(grad_accum_steps)])


def permute(indices: np.ndarray, n: int, seed: int, epoch: int, rounds: int = 4) -> np.ndarray:
    """Position ``indices`` (int64, each in ``[0, n)``) of a pseudo-random permutation of ``[0, n)``
    drawn from ``(seed, epoch)``: a ``rounds``-round Feistel network over the smallest even-bit
    domain ``>= n`` (round keys and function: splitmix64), cycle-walked back into ``[0, n)``.
    O(1) memory per index and vectorised; the same inputs give the same output on any machine."""
    if n <= 1:
        return indices.astype(np.int64)
    half, mask, keys = _feistel_keys(n, seed, epoch, rounds)
    x = indices.astype(np.uint64)
    todo = np.ones(x.shape, dtype=bool)
    while todo.any():
        y = x[todo]
        left, right = y >> half, y & mask
        for key in keys:
            left, right = right, left ^ (splitmix64(right ^ key) & mask)
        y = (left << half) | right
        x[todo] = y
        todo[todo] = y >= np.uint64(n)
    return x.astype(np.int64)


@functools.lru_cache(maxsize=64)
def _feistel_keys(
    n: int, seed: int, epoch: int, rounds: int
) -> tuple[np.uint64, np.uint64, tuple[np.uint64, ...]]:
    """(half width in bits, half mask, round keys) of ``permute``'s network for ``n`` records."""
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1
    seeds = splitmix64(np.asarray([seed & (2**64 - 1), epoch], np.uint64))
    keys = splitmix64(np.arange(rounds, dtype=np.uint64) + (seeds[0] ^ seeds[1]))
    return np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1), tuple(keys)


@dataclass(frozen=True)
class RecordOrder:
    """Stream position -> record index (see the module docstring)."""

    num_records: int  # training records
    seed: int
    shuffle: bool
    training: np.ndarray | None = None  # record indices of the training records (None: all)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        epochs, within = np.divmod(positions.astype(np.int64), self.num_records)
        if self.shuffle:
            for epoch in np.unique(epochs):
                at = epochs == epoch
                within[at] = permute(within[at], self.num_records, self.seed, int(epoch))
        return within if self.training is None else self.training[within]


@dataclass(frozen=True)
class Chunk:
    """The tokenized documents of one work item: ``records_per_chunk`` consecutive documents of a lane."""

    tokens: np.ndarray  # int32, the documents concatenated
    weights: np.ndarray  # uint8, per token: 1 where predicting it is trained
    starts: np.ndarray  # int64 [docs + 1]: document boundaries


class ChunkReader:
    """Work item ``(slot, chunk)`` -> ``Chunk``: chunk ``chunk`` of lane ``lanes[slot]``.

    Picklable (sent once to each worker process); the same item gives the same chunk in any
    process."""

    def __init__(
        self,
        source: RecordSource,
        order: RecordOrder,
        tokenizer: Tokenizer,
        *,
        lanes: Sequence[int],
        batch_size: int,
        records_per_chunk: int,
    ):
        self.source = source
        self.order = order
        self.tokenizer = tokenizer
        self.lanes = np.asarray(lanes, dtype=np.int64)
        self.batch_size = batch_size
        self.records_per_chunk = records_per_chunk

    def positions(self, lane: int, chunk: int) -> np.ndarray:
        """Stream positions of a lane's chunk: documents ``chunk * C ... (chunk + 1) * C - 1`` of it."""
        docs = chunk * self.records_per_chunk + np.arange(self.records_per_chunk, dtype=np.int64)
        return lane + self.batch_size * docs

    def __call__(self, slot: int, chunk: int) -> Chunk:
        records = self.source.records(self.order(self.positions(int(self.lanes[slot]), chunk)))
        tokens, weights, lengths = encode_records(records, self.tokenizer)
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        return Chunk(tokens, weights, starts)


class Lane:
    """One lane's cursor: the chunk being read and the next token (or document) in it."""

    def __init__(self, records_per_chunk: int, doc: int = 0, offset: int = 0):
        self.per_chunk = records_per_chunk
        self.chunk_index = doc // records_per_chunk
        self._restore = (doc % records_per_chunk, offset)  # applied once the chunk is loaded
        self.chunk: Chunk | None = None
        self.pos = 0  # token offset in the chunk

    def load(self, chunk: Chunk) -> None:
        self.chunk = chunk
        if self._restore is not None:
            doc, offset = self._restore
            self.pos = int(chunk.starts[doc]) + offset
            self._restore = None
        else:
            self.pos = 0

    def position(self) -> tuple[int, int]:
        """(document index in the lane, token offset in that document)."""
        if self.chunk is None or self._restore is not None:
            doc, offset = self._restore or (0, 0)
            return self.chunk_index * self.per_chunk + doc, offset
        doc = int(np.searchsorted(self.chunk.starts, self.pos, side="right")) - 1
        return self.chunk_index * self.per_chunk + doc, self.pos - int(self.chunk.starts[doc])

    def advance(self) -> None:
        """Past the end of the chunk: on to the next one (loaded by the caller)."""
        self.chunk_index += 1
        self.chunk = None
        self.pos = 0


@dataclass(frozen=True)
class StreamShape:
    """What a saved position is valid for: a resume with anything else is refused."""

    dataset: str  # checksum
    records: int  # training records
    batch_size: int
    seq_len: int
    packing: bool
    tokenizer: str
    hold_out_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "records": self.records,
            "batchSize": self.batch_size,
            "seqLen": self.seq_len,
            "packing": self.packing,
            "tokenizer": self.tokenizer,
            "holdOutFraction": self.hold_out_fraction,
        }


def tokenizer_identity(tokenizer: Tokenizer) -> str:
    """A tokenizer's kind and vocabulary size (a different tokenizer invalidates a data position)."""
    return f"{type(tokenizer).__name__}:{tokenizer.vocab_size}"


class LaneStream:
    """The rows of this host's lanes, batch by batch (see the module docstring)."""

    def __init__(
        self,
        reader: ChunkReader,
        *,
        seq_len: int,
        packing: bool,
        pad_id: int,
        workers: int = 0,
        prefetch: int = 4,
        threads: int = 1,
    ):
        self.reader = reader
        self.width = seq_len + 1
        self.packing = packing
        self.pad_id = pad_id
        self.workers = workers
        self.threads = threads
        self.prefetch = prefetch
        self.lanes = [Lane(reader.records_per_chunk) for _ in reader.lanes]
        self._pool: concurrent.futures.Executor | None = None
        self._pending: dict[tuple[int, int], concurrent.futures.Future[Chunk]] = {}

    # -- positions --------------------------------------------------------------------------------
    def positions(self) -> np.ndarray:
        """[lanes, 2] int64: each lane's (document, token offset)."""
        return np.asarray([lane.position() for lane in self.lanes], dtype=np.int64).reshape(-1, 2)

    def seek(self, positions: np.ndarray) -> None:
        """Put each lane at its saved (document, token offset); work restarts at the first chunk needed."""
        self.close()
        per = self.reader.records_per_chunk
        self.lanes = [Lane(per, int(doc), int(offset)) for doc, offset in positions]

    # -- rows -------------------------------------------------------------------------------------
    def next_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """([lanes, width] int32 tokens, [lanes, width] uint8 weights): one row of every lane."""
        rows = np.empty((len(self.lanes), self.width), dtype=np.int32)
        weights = np.empty((len(self.lanes), self.width), dtype=np.uint8)
        for slot, lane in enumerate(self.lanes):
            if self.packing:
                self._packed_row(slot, lane, rows[slot], weights[slot])
            else:
                self._padded_row(slot, lane, rows[slot], weights[slot])
        return rows, weights

    def _chunk(self, slot: int, lane: Lane) -> Chunk:
        if lane.chunk is None:
            lane.load(self._fetch(slot, lane.chunk_index))
        assert lane.chunk is not None
        return lane.chunk

    def _packed_row(self, slot: int, lane: Lane, row: np.ndarray, weight: np.ndarray) -> None:
        filled = 0
        while filled < self.width:
            chunk = self._chunk(slot, lane)
            take = min(self.width - filled, chunk.tokens.size - lane.pos)
            row[filled : filled + take] = chunk.tokens[lane.pos : lane.pos + take]
            weight[filled : filled + take] = chunk.weights[lane.pos : lane.pos + take]
            filled += take
            lane.pos += take
            if lane.pos == chunk.tokens.size:
                lane.advance()

    def _padded_row(self, slot: int, lane: Lane, row: np.ndarray, weight: np.ndarray) -> None:
        chunk = self._chunk(slot, lane)
        doc = int(np.searchsorted(chunk.starts, lane.pos, side="right")) - 1
        start, end = lane.pos, int(chunk.starts[doc + 1])
        n = min(end - start, self.width)
        row[:n], row[n:] = chunk.tokens[start : start + n], self.pad_id
        weight[:n], weight[n:] = chunk.weights[start : start + n], 0
        lane.pos = end
        if lane.pos == chunk.tokens.size:
            lane.advance()

    # -- work items -------------------------------------------------------------------------------
    def _fetch(self, slot: int, chunk: int) -> Chunk:
        """Chunk ``chunk`` of lane ``slot``, and the next ``prefetch`` of that lane set in motion.

        Work is queued first-in first-out: the chunk every lane needs next goes in before any lane's
        read-ahead, so the first batch (and the first after a restore) waits for one chunk a lane."""
        if self._pool is None:
            self._pool = start_pool(self.reader, self.workers, self.threads)
        for other, lane in enumerate(self.lanes):
            if lane.chunk is None:
                self._submit(other, lane.chunk_index)
        for ahead in range(chunk, chunk + self.prefetch + 1):
            self._submit(slot, ahead)
        for key in [k for k in self._pending if k[0] == slot and k[1] < chunk]:
            self._pending.pop(key).cancel()
        return self._pending.pop((slot, chunk)).result()

    def _submit(self, slot: int, chunk: int) -> None:
        if (slot, chunk) not in self._pending:
            assert self._pool is not None
            # a worker process holds its reader (sent once); a thread is handed this stream's own
            task = _read_chunk if self.workers > 0 else self.reader
            self._pending[(slot, chunk)] = self._pool.submit(task, slot, chunk)

    def close(self) -> None:
        """Stop the workers (the next row starts them again)."""
        pool, self._pool = self._pool, None
        self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_READER: ChunkReader | None = None  # the reader of this worker process (never set in the trainer)


def _install_reader(reader: ChunkReader) -> None:
    global _READER
    _READER = reader


def _read_chunk(slot: int, chunk: int) -> Chunk:
    assert _READER is not None
    return _READER(slot, chunk)


def start_pool(reader: ChunkReader, workers: int, threads: int = 1) -> concurrent.futures.Executor:
    """``workers`` spawned processes that read and tokenize chunks, each holding its own copy of
    ``reader`` (open files are per process); 0: ``threads`` threads of this process do it (the
    tokenizers release the GIL while they encode)."""
    if workers <= 0:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="tunix-data"
        )
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs JAX
        initializer=_install_reader,
        initargs=(reader,),
    )


def check_positions(state: Any, shape: StreamShape, uri: str) -> np.ndarray:
    """The [batchSize, 2] lane positions of a saved data state; ``DataError`` when it was saved for
    another dataset or shape (naming what changed), ``ValueError`` when it is malformed."""
    if not isinstance(state, dict):
        raise ValueError(f"invalid data state {state!r}: expected an object")
    if "lanes" not in state:
        if "cursor" in state:
            raise DataError(
                "cannot resume the data position: it was saved by the whole-file data loader of an earlier "
                "trainer version; resume with that version or start afresh (spec.checkpoint.resume: none)"
            )
        raise ValueError(f"invalid data state {state!r}: needs lanes")
    saved = state.get("shape") or {}
    current = shape.as_dict()
    changed = [k for k in current if k in saved and saved[k] != current[k]]
    if changed:
        what = "; ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise DataError(
            f"cannot resume the data position of {uri}: saved for another dataset or shape ({what})"
        )
    try:
        positions = np.asarray(state["lanes"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid data state: lanes must be [document, offset] pairs ({exc})") from exc
    if positions.shape != (shape.batch_size, 2) or (positions < 0).any():
        raise ValueError(
            f"invalid data state: lanes must be {shape.batch_size} non-negative [document, offset] pairs"
        )
    return positions
