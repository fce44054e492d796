"""The streaming pipeline: the order, lanes across hosts, worker processes, exact resume, the
held-out split and evaluation batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunix_api.training import DatasetSpec
from tunix_trainer.data import Batch, BatchIterator, DataError, EvalBatches, held_out_indices
from tunix_trainer.data_eval import held_out_count, splitmix64, training_indices
from tunix_trainer.data_stream import host_lanes, permute
from tunix_trainer.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(tmp_path / "cache"))


def write_numbered(path: Path, n: int) -> str:
    """Records whose text names their index: ``"record 00042"``."""
    path.write_text("".join(json.dumps({"text": f"record {i:05d}"}) + "\n" for i in range(n)))
    return str(path)


def record_ids(batch: Batch) -> list[int]:
    """The record index in each (unpacked) row: the 5 digits after ``record ``."""
    return [int(bytes(row[8:13].tolist())) for row in batch.inputs]


def iterator(uri: str, **kwargs) -> BatchIterator:
    spec = {k: kwargs.pop(k) for k in ("packing", "shuffle") if k in kwargs}
    kwargs = {"batch_size": 4, "seq_len": 16, "seed": 0, **kwargs}
    return BatchIterator(DatasetSpec(uri=uri, **spec), TOK, **kwargs)


def take(it, n: int) -> list[Batch]:
    return [next(it) for _ in range(n)]


def stack(batches: list[Batch]) -> np.ndarray:
    return np.stack([np.concatenate([b.inputs, b.targets[:, -1:], b.loss_mask], axis=1) for b in batches])


def assert_resumes_to(uri: str, state: dict, expected: list[Batch], *, seed: int) -> None:
    """A fresh iterator (one worker process) restored to ``state`` serves ``expected`` next."""
    resumed = iterator(uri, batch_size=4, seed=seed, workers=1)
    resumed.restore(state)
    try:
        np.testing.assert_array_equal(stack(take(resumed, len(expected))), stack(expected))
    finally:
        resumed.close()


# --- the order ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4099])
def test_permute_is_a_permutation_that_changes_per_epoch(n):
    first = permute(np.arange(n), n, seed=5, epoch=0)
    assert sorted(first.tolist()) == list(range(n))
    np.testing.assert_array_equal(first, permute(np.arange(n), n, seed=5, epoch=0))
    if n >= 7:
        assert first.tolist() != list(range(n))
        assert permute(np.arange(n), n, seed=5, epoch=1).tolist() != first.tolist()
        assert permute(np.arange(n), n, seed=6, epoch=0).tolist() != first.tolist()
    # per index: any subset of positions maps as the whole permutation does
    pick = np.arange(n)[::3]
    np.testing.assert_array_equal(permute(pick, n, seed=5, epoch=0), first[pick])


def test_every_record_once_per_epoch(tmp_path):
    uri = write_numbered(tmp_path / "d.jsonl", 30)
    it = iterator(uri, batch_size=5, packing=False, seed=11)
    epochs = [[i for b in take(it, 6) for i in record_ids(b)] for _ in range(3)]
    for ids in epochs:
        assert sorted(ids) == list(range(30))
    assert epochs[0] != epochs[1] != epochs[2]


# --- lanes and hosts ----------------------------------------------------------------------------------


def test_host_lanes():
    assert host_lanes(8, 1, 0, 1).tolist() == list(range(8))
    assert host_lanes(8, 1, 1, 2).tolist() == [4, 5, 6, 7]
    assert host_lanes(8, 2, 0, 2).tolist() == [0, 1, 4, 5]  # its rows of each micro-batch
    assert host_lanes(8, 2, 1, 2).tolist() == [2, 3, 6, 7]
    with pytest.raises(ValueError, match="split over 3 processes"):
        host_lanes(8, 1, 0, 3)


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize(("hosts", "accum"), [(2, 1), (2, 2), (4, 1)])
def test_global_batches_do_not_depend_on_the_number_of_hosts(tmp_path, packing, hosts, accum):
    """Each host's rows, put back in lane order, are the one-host batch, batch after batch."""
    uri = write_numbered(tmp_path / "d.jsonl", 37)
    one = take(iterator(uri, batch_size=8, packing=packing, grad_accum_steps=accum), 10)
    parts = [
        iterator(
            uri, batch_size=8, packing=packing, grad_accum_steps=accum, process_index=h, process_count=hosts
        )
        for h in range(hosts)
    ]
    lanes = np.concatenate([p.lanes for p in parts])
    for step in range(10):
        rows = [next(p) for p in parts]
        inputs = np.concatenate([r.inputs for r in rows])[np.argsort(lanes)]
        mask = np.concatenate([r.loss_mask for r in rows])[np.argsort(lanes)]
        np.testing.assert_array_equal(inputs, one[step].inputs)
        np.testing.assert_array_equal(mask, one[step].loss_mask)


def test_a_host_reads_only_its_lanes_records(tmp_path):
    uri = write_numbered(tmp_path / "d.jsonl", 400)
    it = iterator(uri, batch_size=4, packing=False, process_index=1, process_count=2, records_per_chunk=5)
    seen = [i for b in take(it, 20) for i in record_ids(b)]
    read = it.source  # the source the worker thread shares with this process
    assert len(seen) == 40 and len(set(seen)) == 40  # lanes 2 and 3: positions 2, 3, 6, 7, ...
    assert read is not None


def test_state_from_two_hosts_resumes_on_one(tmp_path):
    """The saved position is global (gathered from all hosts): a one-host run continues it exactly."""
    uri = write_numbered(tmp_path / "d.jsonl", 29)
    parts = [iterator(uri, batch_size=4, process_index=h, process_count=2) for h in range(2)]
    for p in parts:
        take(p, 7)
    local = [np.column_stack([p.lanes, p._stream.positions()]) for p in parts]
    states = []
    for p in parts:  # the gather a collective does: every host's rows, in process order
        p._gather = lambda rows, local=local: np.concatenate(local)
        states.append(p.state())
    assert states[0] == states[1]
    reference = iterator(uri, batch_size=4)
    take(reference, 7)
    assert reference.state() == states[0]
    resumed = iterator(uri, batch_size=4)
    resumed.restore(json.loads(json.dumps(states[0])))
    np.testing.assert_array_equal(stack(take(resumed, 6)), stack(take(reference, 6)))


# --- worker processes and memory ---------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_worker_processes_give_the_same_batches_and_errors(tmp_path):
    uri = write_numbered(tmp_path / "d.jsonl", 50)
    expected = take(iterator(uri, batch_size=4, seed=2), 12)
    it = iterator(uri, batch_size=4, seed=2, workers=2)
    try:
        got = take(it, 6)
        state = it.state()
        got += take(it, 6)
    finally:
        it.close()
    np.testing.assert_array_equal(stack(got), stack(expected))
    assert_resumes_to(uri, state, expected[6:], seed=2)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 7}\n')
    broken = iterator(str(bad), batch_size=2, workers=1, shuffle=False)
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'text' must be a string"):
        try:
            next(broken)
        finally:
            broken.close()


def test_work_in_flight_stays_bounded(tmp_path):
    """Lanes drift apart (documents differ in length) but each keeps only its next chunks in flight."""
    path = tmp_path / "d.jsonl"
    rng = np.random.default_rng(0)
    path.write_text("".join(json.dumps({"text": "x" * int(n)}) + "\n" for n in rng.integers(1, 400, 300)))
    it = iterator(str(path), batch_size=6, seq_len=32, records_per_chunk=2, prefetch=2)
    for _ in range(300):
        next(it)
        assert len(it._stream._pending) <= 6 * 3
    chunks = [lane.chunk_index for lane in it._stream.lanes]
    assert max(chunks) > min(chunks)  # they did drift
    it.close()


# --- held-out split and evaluation ---------------------------------------------------------------------


def test_held_out_split_is_fixed_and_exact():
    held = held_out_indices(1000, 0.1)
    assert held.size == 100 == held_out_count(1000, 0.1)
    np.testing.assert_array_equal(held, held_out_indices(1000, 0.1))
    assert held_out_count(10, 0.01) == 1  # at least one
    assert training_indices(1000, 0.0) is None
    keep = training_indices(1000, 0.1)
    assert keep is not None and np.intersect1d(keep, held).size == 0 and keep.size + held.size == 1000
    spread = np.histogram(held, bins=4, range=(0, 1000))[0]
    assert spread.min() > 10  # spread over the file, not a block of it
    assert len(set(splitmix64(np.arange(10_000, dtype=np.uint64)).tolist())) == 10_000
    with pytest.raises(DataError, match="no training records left"):
        held_out_count(2, 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        held_out_count(10, 1.0)


def test_training_never_serves_held_out_records_and_eval_serves_exactly_them(tmp_path):
    uri = write_numbered(tmp_path / "d.jsonl", 60)
    held = set(held_out_indices(60, 0.2).tolist())
    train = iterator(uri, batch_size=6, packing=False, hold_out_fraction=0.2, seed=4)
    served = [i for b in take(train, 16) for i in record_ids(b)]  # two epochs of 48
    assert sorted(set(served)) == sorted(set(range(60)) - held)
    assert not held & set(served)

    evaluated = EvalBatches(
        DatasetSpec(uri=uri, packing=False), TOK, batch_size=5, seq_len=16, hold_out_fraction=0.2
    )
    batches = list(evaluated)
    assert batches and all(b.inputs.shape == (5, 16) for b in batches)
    rows = [r for b in batches for r, m in zip(b.inputs, b.loss_mask, strict=True) if m.any()]
    assert sorted(int(bytes(r[8:13].tolist())) for r in rows) == sorted(held)  # in file order, once
    assert len(list(evaluated)) == len(batches)  # a fresh pass each time


def test_eval_batches_pack_in_order_pad_the_tail_and_split_over_hosts(tmp_path):
    uri = write_numbered(tmp_path / "d.jsonl", 7)  # 7 x 14 tokens (bos + 12 + eos) = 98
    spec = DatasetSpec(uri=uri)
    whole = list(EvalBatches(spec, TOK, batch_size=4, seq_len=15, records_per_read=3))
    tokens = np.concatenate([np.concatenate([b.inputs, b.targets[:, -1:]], axis=1) for b in whole]).reshape(
        -1
    )
    expected = np.concatenate([[TOK.bos_id, *f"record {i:05d}".encode(), TOK.eos_id] for i in range(7)])
    np.testing.assert_array_equal(tokens[:98], expected)  # 98 tokens -> 7 rows of 16, the last padded
    assert len(whole) == 2 and whole[1].loss_mask[3].sum() == 0
    weights = np.tile(np.r_[0, np.ones(13)], 7)  # bos untrained; text and eos trained
    weights = np.r_[weights, np.zeros(8 * 16 - 98)].reshape(8, 16)[:, 1:]  # targets: a row's tokens 1..15
    np.testing.assert_array_equal(np.concatenate([b.loss_mask for b in whole]), weights)
    halves = [
        list(EvalBatches(spec, TOK, batch_size=4, seq_len=15, process_index=h, process_count=2))
        for h in (0, 1)
    ]
    for k, batch in enumerate(whole):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][k].inputs, halves[1][k].inputs]), batch.inputs
        )


def test_sharded_dataset_streams_as_the_one_file_dataset(tmp_path):
    """Shards read in name order are the records of the one file: the same batches."""
    one = write_numbered(tmp_path / "one.jsonl", 40)
    lines = Path(one).read_text().splitlines(keepends=True)
    (tmp_path / "shards").mkdir()
    for i, (a, b) in enumerate([(0, 13), (13, 14), (14, 40)]):
        (tmp_path / "shards" / f"part-{i}.jsonl").write_text("".join(lines[a:b]))
    a = take(iterator(one, batch_size=4, seed=9), 8)
    b = take(iterator(str(tmp_path / "shards"), batch_size=4, seed=9), 8)
    np.testing.assert_array_equal(stack(a), stack(b))


def test_iterators_in_one_process_keep_their_own_data(tmp_path):
    """Two pipelines of one process (training and another), interleaved, each fetching many chunks
    through its own prefetch thread, give what each gives alone."""
    a_uri = write_numbered(tmp_path / "a.jsonl", 40)
    b_uri = str(tmp_path / "b.jsonl")
    Path(b_uri).write_text("".join(json.dumps({"text": f"other {i:05d}"}) + "\n" for i in range(30)))
    alone = [take(iterator(uri, records_per_chunk=1, seed=5), 15) for uri in (a_uri, b_uri)]
    a, b = (iterator(uri, records_per_chunk=1, seed=5) for uri in (a_uri, b_uri))
    together = [[], []]
    for _ in range(15):
        together[0].append(next(a))
        together[1].append(next(b))
    for mine, solo in zip(together, alone, strict=True):
        np.testing.assert_array_equal(stack(mine), stack(solo))


def test_array_record_dataset_streams_and_resumes_exactly_as_jsonl(tmp_path):
    """An ArrayRecord source is another reader under the same lanes, shuffle and state: the batches
    of its JSONL twin, and a resume from a saved state continues them exactly."""
    from array_record.python.array_record_module import ArrayRecordWriter

    one = write_numbered(tmp_path / "one.jsonl", 37)
    (tmp_path / "ar").mkdir()
    lines = Path(one).read_bytes().splitlines()
    for i, (a, b) in enumerate([(0, 20), (20, 37)]):
        writer = ArrayRecordWriter(str(tmp_path / "ar" / f"part-{i}.array_record"), "group_size:1")
        for line in lines[a:b]:
            writer.write(line)
        writer.close()
    uri = str(tmp_path / "ar")
    reference = take(iterator(one, batch_size=4, seed=3), 14)
    first = iterator(uri, batch_size=4, seed=3)
    got = take(first, 6)
    state = json.loads(json.dumps(first.state()))
    got += take(first, 8)
    np.testing.assert_array_equal(stack(got), stack(reference))
    assert_resumes_to(uri, state, reference[6:], seed=3)
    with pytest.raises(DataError, match=r"saved for another dataset or shape \(dataset 'sha256:"):
        iterator(one, batch_size=4, seed=3).restore(state)  # the JSONL twin is another dataset


# --- work: chunks, threads, the first batch -----------------------------------------------------------


def write_mixed(path: Path, n: int) -> str:
    """Records of 1 to 300 characters, some with JSON escapes (one a surrogate pair)."""
    rng = np.random.default_rng(4)
    texts = [f"r{i} " + "ab\u00e9\U0001f642"[i % 4] * int(k) for i, k in enumerate(rng.integers(1, 300, n))]
    path.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=i % 2 == 0) + "\n" for i, t in enumerate(texts))
    )
    return str(path)


@pytest.mark.parametrize(
    "kwargs",
    [{"records_per_chunk": 1}, {"records_per_chunk": 7, "threads": 3}, {"threads": 2}],
    ids=["1-record-chunks", "7-record-chunks-3-threads", "2-threads"],
)
@pytest.mark.parametrize("packing", [True, False])
def test_batches_do_not_depend_on_chunk_size_or_threads(tmp_path, kwargs, packing):
    uri = write_mixed(tmp_path / "d.jsonl", 120)
    expected = take(iterator(uri, batch_size=4, seed=1, packing=packing), 30)
    it = iterator(uri, batch_size=4, seed=1, packing=packing, **kwargs)
    got = take(it, 15)
    state = it.state()
    got += take(it, 15)
    it.close()
    np.testing.assert_array_equal(stack(got), stack(expected))
    resumed = iterator(uri, batch_size=4, seed=1, packing=packing, records_per_chunk=5)
    resumed.restore(state)
    np.testing.assert_array_equal(stack(take(resumed, 15)), stack(expected[15:]))
    resumed.close()


def test_every_lane_gets_its_first_chunk_before_any_lane_reads_ahead(tmp_path):
    """Work runs in the order it is queued (one thread here): the first chunk of every lane goes in
    before the read-ahead of any, so the first batch waits for one chunk a lane, not prefetch + 1."""
    uri = write_numbered(tmp_path / "d.jsonl", 300)
    it = iterator(uri, batch_size=6, records_per_chunk=2, prefetch=3, threads=1)
    reader, calls = it._stream.reader, []

    def recording(slot: int, chunk: int):
        calls.append((slot, chunk))
        return reader(slot, chunk)

    it._stream.reader = recording  # the task handed to the thread
    next(it)
    assert calls[:6] == [(slot, 0) for slot in range(6)]
    it.close()


def test_chunks_are_sized_by_the_dataset_bytes(tmp_path):
    from tunix_trainer.data import CHUNK_BYTES, MAX_RECORDS_PER_CHUNK, READ_AHEAD_BYTES, chunk_records
    from tunix_trainer.data_sources import RecordSource

    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps({"text": f"r{i:04d}"}) + "\n" for i in range(5000)))  # 18 bytes
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"text": "x" * 20_000}) + "\n" for _ in range(5)))
    assert chunk_records(RecordSource(str(short)), lanes=8, prefetch=2) == min(
        MAX_RECORDS_PER_CHUNK, CHUNK_BYTES // 18
    )
    assert chunk_records(RecordSource(str(long)), lanes=8, prefetch=2) == CHUNK_BYTES // 20_015 > 1
    many = chunk_records(RecordSource(str(short)), lanes=1024, prefetch=2)  # the read-ahead bound
    assert many == READ_AHEAD_BYTES // (1024 * 3) // 18
    assert chunk_records(RecordSource(str(long)), lanes=1024, prefetch=2) == 1


def test_batched_record_reads_are_single_reads_and_keep_their_errors(tmp_path):
    from tunix_trainer.data_sources import RecordSource

    source = RecordSource(write_mixed(tmp_path / "d.jsonl", 200))
    order = np.random.default_rng(0).permutation(200).tolist()
    assert source.records(order) == [source[i] for i in order]
    for line, error in [
        ('{"text": "a\\ud800"}', r"bad\.jsonl:3: field 'text' holds a lone surrogate"),
        ('{"text": 5}', r"bad\.jsonl:3: field 'text' must be a string"),
        ('{"text": "a"', r"bad\.jsonl:3: invalid JSON"),
        ('{"other": "a"}', r"bad\.jsonl:3: missing 'text'"),
        ('["a"]', r"bad\.jsonl:3: expected a JSON object"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "ok \\ud83d\\ude42"}\n\n' + line + "\n")
        source = RecordSource(str(bad))
        assert source.records([0]) == [("", "ok \U0001f642")]
        with pytest.raises(DataError, match=error):
            source.records([0, 1])
