"""Random-access dataset sources: shards, compressed and Parquet files, the cached line index, and
clear errors for what cannot be read."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import re
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tunix_api.training import DatasetFormat
from tunix_trainer.data_records import DataError
from tunix_trainer.data_sources import RecordSource, line_starts, list_shards

RECORDS = [{"text": f"doc {i}"} for i in range(10)]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(path))
    return path


def jsonl(records: list[dict], end: str = "\n") -> str:
    return "".join(json.dumps(r) + end for r in records)


def texts(source: RecordSource) -> list[str]:
    return [source[i][1] for i in range(len(source))]


def reference_starts(data: bytes) -> list[int]:
    """Offsets of the non-blank lines, by the rule of data_records.parse_records."""
    offset = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    starts, pos = [], offset
    for match in re.finditer(rb"\r\n|\r|\n", data[offset:]):
        if data[pos : offset + match.start()].strip(b" \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f"):
            starts.append(pos)
        pos = offset + match.end()
    if data[pos:].strip(b" \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f"):
        starts.append(pos)
    return starts


def test_line_index_matches_the_parser_for_any_chunking():
    rng = random.Random(0)
    pieces = [b"a", b"\n", b"\r", b" ", b"\r\n", b"{}", b"\t"]
    for _ in range(400):
        data = (b"\xef\xbb\xbf" if rng.random() < 0.2 else b"") + b"".join(
            rng.choice(pieces) for _ in range(rng.randint(0, 30))
        )
        for size in (1, 2, 3, 7, 1000):
            starts, total, _ = line_starts(data[i : i + size] for i in range(0, len(data), size))
            assert starts.tolist() == reference_starts(data), (data, size)
            assert total == len(data)


def test_directory_of_mixed_shards_in_name_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    shards = tmp_path / "shards"
    (shards / "sub").mkdir(parents=True)
    (shards / "a.jsonl").write_text(jsonl(RECORDS[:3]) + "\n  \n")
    with gzip.open(shards / "b.jsonl.gz", "wt") as f:
        f.write(jsonl(RECORDS[3:5], end="\r\n"))
    (shards / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(RECORDS[5:7]).encode()))
    pq.write_table(
        pa.table({"text": [r["text"] for r in RECORDS[7:]]}), shards / "sub" / "d.parquet", row_group_size=2
    )
    (shards / "notes.txt").write_text("not a shard")
    source = RecordSource(str(shards))
    assert texts(source) == [r["text"] for r in RECORDS]
    assert source.format == DatasetFormat.TEXT
    assert [Path(s.uri).name for s in source.shards] == ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet"]
    # offsets are read from the cached index per record: none are held in memory or pickled
    assert all(s.starts is None and s.index_file for s in source.shards if s.kind != "parquet")
    copy = pickle.loads(pickle.dumps(source))  # as a worker process gets it
    assert copy[8] == ("", "doc 8") and copy[4] == ("", "doc 4")
    glob = RecordSource(str(shards / "*.jsonl*"))
    assert texts(glob) == [r["text"] for r in RECORDS[:7]]


def test_checksum_of_one_file_is_its_sha256_and_the_index_is_cached(tmp_path, cache, monkeypatch):
    from tunix_trainer import data_sources
    from tunix_trainer.data import dataset_checksum

    path = tmp_path / "d.jsonl"
    path.write_text(jsonl(RECORDS))
    first = RecordSource(str(path))
    assert first.checksum == dataset_checksum(str(path))
    assert len(list(cache.glob("*.index.json"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(data_sources, "line_starts", fail)
    assert texts(RecordSource(str(path))) == texts(first)  # from the cache
    path.write_text(jsonl(RECORDS[:4]))  # a changed file is indexed again
    monkeypatch.undo()
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(cache))
    assert len(RecordSource(str(path))) == 4


def test_object_store_uri():
    root = f"tunix-src-{uuid.uuid4().hex}"
    with fsspec.open(f"memory://{root}/x/part-1.jsonl", "w") as f:
        f.write(jsonl(RECORDS[2:4]))
    with fsspec.open(f"memory://{root}/x/part-0.jsonl", "w") as f:
        f.write(jsonl(RECORDS[:2]))
    try:
        assert texts(RecordSource(f"memory://{root}/x")) == ["doc 0", "doc 1", "doc 2", "doc 3"]
        assert len(list_shards(f"memory://{root}/x/*.jsonl")) == 2
    finally:
        fsspec.filesystem("memory").rm(root, recursive=True)


def test_prompt_completion_parquet_and_its_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pc.parquet"
    pq.write_table(pa.table({"prompt": ["q1", "q2"], "completion": ["a1", None]}), path)
    source = RecordSource(str(path))
    assert source.format == DatasetFormat.PROMPT_COMPLETION and source[0] == ("q1", "a1")
    with pytest.raises(DataError, match=r"pc\.parquet:row 2: field 'completion' must be a string"):
        source[1]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad\.parquet: not a Parquet file"):
        RecordSource(str(tmp_path / "bad.parquet"))


def test_errors_name_the_shard_and_line(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n\r\n{"text": "b"}\r{"text": "c"\n')
    source = RecordSource(str(path))
    assert source[1] == ("", "b")
    with pytest.raises(DataError, match=r"crlf\.jsonl:4: invalid JSON \(Expecting ',' delimiter"):
        source[2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", r"empty\.jsonl: the dataset shard has no records"),
        ("blank.jsonl", b"\n \n", r"blank\.jsonl: the dataset shard has no records"),
        ("x.jsonl.bz2", b"BZh9", r"compression 'bz2' is not supported; use \.gz or \.zst"),
        ("x.csv.gz", b"", r"x\.csv\.gz: compressed shards must be JSONL"),
        ("x.jsonl.xz", b"xz", r"compression 'xz' is not supported; use \.gz or \.zst"),
        ("x.jsonl.gz", b"not gzip at all", r"x\.jsonl\.gz: not a valid \.gz file"),
        ("x.jsonl.zst", b"not zstd at all", r"x\.jsonl\.zst: not a valid \.zst file"),
    ],
)
def test_unreadable_shards(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        RecordSource(str(tmp_path / name))


def test_no_shards_or_no_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no dataset shards \(files ending in \.jsonl"):
        RecordSource(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"cannot read dataset .*missing\.jsonl"):
        RecordSource(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no dataset shards"):
        RecordSource(str(tmp_path / "*.jsonl"))


def test_a_shard_that_disappears_or_changes_while_training(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.jsonl").write_text(jsonl(RECORDS[:5]))
    (shards / "b.jsonl").write_text(jsonl(RECORDS[5:]))
    source = RecordSource(str(shards))
    assert source[0] == ("", "doc 0")  # a.jsonl is open now
    os.unlink(shards / "b.jsonl")
    with pytest.raises(DataError, match=r"b\.jsonl: the dataset shard disappeared while training"):
        source[7]
    (shards / "b.jsonl").write_text(jsonl(RECORDS[5:7]))  # back, but not the file that was indexed
    with pytest.raises(DataError, match=r"b\.jsonl: the dataset shard changed since it was indexed"):
        pickle.loads(pickle.dumps(source))[7]


def test_auto_format_is_taken_from_the_first_record(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text(jsonl([{"prompt": "q", "completion": "a"}, {"text": "t"}]))
    source = RecordSource(str(path))
    with pytest.raises(
        DataError, match=r"pc\.jsonl:2: missing 'prompt', 'completion'.*detected from .*pc\.jsonl:1"
    ):
        source[1]
    assert np.load(source.shards[0].index_file).tolist() == [0, 35]  # the line index


def test_s3_shards_through_moto(s3_bucket, tmp_path):
    """Shards on S3: listed, indexed (cached by ETag/size) and read by ranged requests; a gzip shard
    is fetched once into the cache."""
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.tokenizer import ByteTokenizer

    fs = fsspec.filesystem("s3")
    fs.pipe(f"{s3_bucket}/data/a.jsonl", jsonl(RECORDS[:6]).encode())
    fs.pipe(f"{s3_bucket}/data/b.jsonl.gz", gzip.compress(jsonl(RECORDS[6:]).encode(), mtime=0))
    source = RecordSource(f"{s3_bucket}/data")
    assert texts(source) == [r["text"] for r in RECORDS]
    assert [s.uri for s in source.shards] == [f"{s3_bucket}/data/a.jsonl", f"{s3_bucket}/data/b.jsonl.gz"]
    (tmp_path / "local").mkdir()
    for name in ("a.jsonl", "b.jsonl.gz"):
        (tmp_path / "local" / name).write_bytes(fs.cat(f"{s3_bucket}/data/{name}"))
    remote = BatchIterator(
        DatasetSpec(uri=f"{s3_bucket}/data"), ByteTokenizer(), batch_size=2, seq_len=8, seed=1
    )
    local = BatchIterator(
        DatasetSpec(uri=str(tmp_path / "local")), ByteTokenizer(), batch_size=2, seq_len=8, seed=1
    )
    for _ in range(5):
        assert np.array_equal(next(remote).inputs, next(local).inputs)
    assert remote.checksum == local.checksum


def test_compressed_shard_needs_a_writable_cache(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(jsonl(RECORDS).encode()))
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(blocked / "cache"))
    with pytest.raises(
        DataError, match=r"d\.jsonl\.gz: cannot decompress into the data cache .*TUNIX_DATA_CACHE"
    ):
        RecordSource(str(tmp_path / "d.jsonl.gz"))


def test_an_unwritable_cache_keeps_the_offsets_in_memory(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl").write_text(jsonl(RECORDS))
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(blocked / "cache"))
    source = RecordSource(str(tmp_path / "d.jsonl"))
    assert source.shards[0].index_file is None and len(source.shards[0].starts) == 10
    assert texts(pickle.loads(pickle.dumps(source))) == [r["text"] for r in RECORDS]


@pytest.mark.parametrize("offsets", ["index file", "in memory"])
def test_records_of_a_chunk_are_the_records_one_by_one(tmp_path, monkeypatch, offsets):
    """The batched read of the training stream gives what indexing gives, line quirks included."""
    if offsets == "in memory":
        (tmp_path / "file-not-dir").write_text("")
        monkeypatch.setenv("TUNIX_DATA_CACHE", str(tmp_path / "file-not-dir" / "cache"))
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.jsonl").write_bytes(
        b'{"text": "plain"}\r\n'
        b'   {"text": "leading space"}\n'
        b'{"text": "trailing space", "extra": [1, {"x": null}]}  \t\n'
        b'{"text": "caf\\u00e9 \\ud83d\\ude00 escaped"}\n'
        b'{"text": "caf\xc3\xa9 raw"}\r'
        b'{"text": "", "other": 1}\n'
        b'{"text": "last line without a break"}'
    )
    (shards / "b.jsonl").write_text(jsonl(RECORDS))
    source = RecordSource(str(shards))
    assert (source.shards[0].index_file is None) == (offsets == "in memory")
    rng = np.random.default_rng(0)
    for indices in ([], [6], list(range(len(source)))[::-1], rng.integers(0, len(source), 50).tolist()):
        assert source.records(indices) == [source[i] for i in indices]
    assert source.records(np.asarray([3, 4]))[0] == ("", "café 😀 escaped")
    with pytest.raises(IndexError, match="record 17 of 17"):
        source.records([0, 17])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "\\ud800 alone"}', r"x\.jsonl:2: field 'text' holds a lone surrogate \(\\ud800\)"),
        (b'{"text": 7}', r"x\.jsonl:2: field 'text' must be a string"),
        (b'{"text": "a"} {"text": "b"}', r"x\.jsonl:2: invalid JSON \(Extra data"),
        (b'{"text": "a"}, {"text": "b"', r"x\.jsonl:2: invalid JSON \(Extra data"),
        (b'["text"]', r"x\.jsonl:2: expected a JSON object, got list"),
        (b'{"text": "caf\xe9"}', r"x\.jsonl:2: not UTF-8 text"),
    ],
)
def test_a_bad_line_in_a_chunk_is_named(tmp_path, line, message):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "good"}\n' + line + b'\n{"text": "good"}\n')
    source = RecordSource(str(tmp_path / "x.jsonl"))
    with pytest.raises(DataError, match=message):
        source.records([0, 2, 1])


def test_a_truncated_line_index_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text(jsonl(RECORDS))
    source = RecordSource(str(tmp_path / "d.jsonl"))
    index = Path(source.shards[0].index_file)
    os.truncate(index, index.stat().st_size - 8 * 5)  # the offsets of the last 5 lines gone
    assert source.records([0, 3]) == [("", "doc 0"), ("", "doc 3")]
    for read in (lambda: source.records([1, 7]), lambda: source[9]):
        with pytest.raises(
            DataError, match=r"d\.jsonl: its line index .* is truncated; delete it to rebuild"
        ):
            read()


# --- ArrayRecord --------------------------------------------------------------------------------------


def write_array_record(path: Path, records: list, options: str = "group_size:1") -> Path:
    """An ArrayRecord file of ``records``: dicts as UTF-8 JSON, bytes as they are."""
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), options)
    for record in records:
        writer.write(record if isinstance(record, bytes) else json.dumps(record).encode())
    writer.close()
    return path


def test_array_record_shards_read_in_name_order_beside_jsonl(tmp_path, cache, monkeypatch):
    from tunix_trainer import data_array_record
    from tunix_trainer.data import dataset_checksum

    shards = tmp_path / "shards"
    shards.mkdir()
    write_array_record(shards / "a.array_record", RECORDS[:4])
    (shards / "b.jsonl").write_text(jsonl(RECORDS[4:6]))
    # TFDS names its shards x.array_record-00000-of-00002
    write_array_record(shards / "c.array_record-00000-of-00002", RECORDS[6:9])
    write_array_record(shards / "c.array_record-00001-of-00002", RECORDS[9:])
    source = RecordSource(str(shards))
    assert texts(source) == [r["text"] for r in RECORDS]
    assert [s.kind for s in source.shards] == ["array_record", "jsonl", "array_record", "array_record"]
    assert [s.num_records for s in source.shards] == [4, 2, 3, 1]
    copy = pickle.loads(pickle.dumps(source))  # as a worker process gets it: readers are per process
    assert copy[2] == ("", "doc 2") and copy[7] == ("", "doc 7")
    copy.close()
    source.close()
    one = RecordSource(str(shards / "*.array_record"))
    assert texts(one) == ["doc 0", "doc 1", "doc 2", "doc 3"]
    assert one.checksum == dataset_checksum(str(shards / "a.array_record"))

    def fail(*args, **kwargs):
        raise AssertionError("the shard was counted again")

    monkeypatch.setattr(data_array_record, "count_records", fail)  # the count is cached
    assert texts(RecordSource(str(shards / "a.array_record"))) == texts(one)


def test_array_record_prompt_completion(tmp_path):
    path = write_array_record(tmp_path / "pc.array_record", [{"prompt": "q", "completion": "a"}] * 3)
    source = RecordSource(str(path))
    assert source.format == DatasetFormat.PROMPT_COMPLETION and source[2] == ("q", "a")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "a"}, [1, 2]], r"bad\.array_record:record 2: expected a JSON object, got list"),
        ([{"text": "a"}, b'{"text": '], r"bad\.array_record:record 2: invalid JSON \(Expecting value"),
        ([{"text": "a"}, b"\xff"], r"bad\.array_record:record 2: not UTF-8 text"),
        ([{"text": "a"}, {"prompt": "q"}], r"bad\.array_record:record 2: missing 'text'"),
        ([{"text": "a"}, {"text": 3}], r"bad\.array_record:record 2: field 'text' must be a string"),
    ],
)
def test_a_bad_array_record_record_is_named_by_shard_and_record(tmp_path, records, message):
    source = RecordSource(str(write_array_record(tmp_path / "bad.array_record", records)))
    assert source[0] == ("", "a")
    with pytest.raises(DataError, match=message):
        source[1]


def test_corrupt_truncated_and_empty_array_record_shards(tmp_path):
    good = write_array_record(tmp_path / "good.array_record", [{"text": f"record {i:03d}"} for i in range(5)])
    data = good.read_bytes()
    (tmp_path / "truncated.array_record").write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"truncated\.array_record: not a valid ArrayRecord file \(.+\)"):
        RecordSource(str(tmp_path / "truncated.array_record"))
    (tmp_path / "junk.array_record").write_text(jsonl(RECORDS))
    with pytest.raises(DataError, match=r"junk\.array_record: not a valid ArrayRecord file \(.+\)"):
        RecordSource(str(tmp_path / "junk.array_record"))
    write_array_record(tmp_path / "empty.array_record", [])
    with pytest.raises(DataError, match=r"empty\.array_record: the dataset shard has no records"):
        RecordSource(str(tmp_path / "empty.array_record"))
    # a damaged record of a complete file: stored uncompressed so its bytes can be found and hit
    plain = write_array_record(
        tmp_path / "damaged.array_record",
        [{"text": f"record {i:03d}"} for i in range(5)],
        "group_size:1,uncompressed",
    )
    damaged = bytearray(plain.read_bytes())
    damaged[damaged.index(b"record 002")] ^= 1
    plain.write_bytes(bytes(damaged))
    source = RecordSource(str(plain))
    assert source[1] == ("", "record 001") and source[3] == ("", "record 003")
    with pytest.raises(DataError, match=r"damaged\.array_record:record 3: cannot read the record \(.*hash"):
        source[2]
    assert source[4] == ("", "record 004")  # the failed reader was replaced
    source.close()


def test_an_array_record_shard_that_disappears_or_changes_while_training(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_array_record(shards / "a.array_record", RECORDS[:5])
    write_array_record(shards / "b.array_record", RECORDS[5:])
    source = RecordSource(str(shards))
    assert source[0] == ("", "doc 0")  # a.array_record is open now
    os.unlink(shards / "b.array_record")
    with pytest.raises(DataError, match=r"b\.array_record: the dataset shard disappeared while training"):
        source[7]
    write_array_record(shards / "b.array_record", RECORDS[5:7])  # back, but not the file indexed
    assert (shards / "b.array_record").stat().st_size == source.shards[1].size  # 64 KiB blocks
    with pytest.raises(DataError, match=r"b\.array_record: the dataset shard changed since it was indexed"):
        pickle.loads(pickle.dumps(source))[7]
    write_array_record(shards / "b.array_record", [{"text": os.urandom(40_000).hex()}])  # a larger file
    with pytest.raises(DataError, match=r"b\.array_record: the dataset shard changed since it was indexed"):
        pickle.loads(pickle.dumps(source))[7]


def test_a_remote_array_record_shard_is_read_from_its_copy_in_the_cache(tmp_path, cache):
    local = write_array_record(tmp_path / "d.array_record", RECORDS)
    root = f"tunix-src-{uuid.uuid4().hex}"
    fsspec.filesystem("memory").pipe(f"/{root}/d.array_record", local.read_bytes())
    try:
        source = RecordSource(f"memory://{root}")
        assert texts(source) == [r["text"] for r in RECORDS]
        assert source.checksum == RecordSource(str(local)).checksum
        copy = Path(source.shards[0].read_uri)
        assert copy.parent == cache and copy.read_bytes() == local.read_bytes()
        assert not list(cache.glob(".tmp-*"))
        inode = copy.stat().st_ino
        assert RecordSource(f"memory://{root}").shards[0].read_uri == str(copy)
        assert copy.stat().st_ino == inode  # the next start reads the same copy: not copied again
        copy.unlink()  # the copy is the file read
        gone = rf"memory:///?{root}/d\.array_record: its copy .*{copy.name} disappeared while training"
        with pytest.raises(DataError, match=gone):
            pickle.loads(pickle.dumps(source))[0]
        assert texts(RecordSource(f"memory://{root}")) == texts(source)  # copied again
    finally:
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)


def test_array_record_shards_on_s3_through_moto(s3_bucket, tmp_path):
    """A shard on S3 is copied once into the cache (the reader opens local files) and gives the
    batches of the same file read locally."""
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.tokenizer import ByteTokenizer

    local = write_array_record(tmp_path / "d.array_record", RECORDS)
    fsspec.filesystem("s3").pipe(f"{s3_bucket}/ar/d.array_record", local.read_bytes())
    remote = BatchIterator(
        DatasetSpec(uri=f"{s3_bucket}/ar"), ByteTokenizer(), batch_size=2, seq_len=8, seed=1
    )
    near = BatchIterator(DatasetSpec(uri=str(local)), ByteTokenizer(), batch_size=2, seq_len=8, seed=1)
    for _ in range(5):
        assert np.array_equal(next(remote).inputs, next(near).inputs)
    assert remote.checksum == near.checksum


def test_an_array_record_with_large_groups_is_read_and_logged_once(tmp_path, caplog):
    path = write_array_record(tmp_path / "g.array_record", RECORDS, "group_size:4")
    with caplog.at_level("WARNING", logger="tunix_trainer.data_array_record"):
        source = RecordSource(str(path))
        assert texts(source) == [r["text"] for r in RECORDS]
        source.close()
        assert texts(RecordSource(str(path))) == [r["text"] for r in RECORDS]
    warnings = [r.getMessage() for r in caplog.records if "group_size:4" in r.getMessage()]
    assert len(warnings) == 1 and "g.array_record" in warnings[0]


def test_threads_sharing_an_array_record_shard_get_their_own_records(tmp_path):
    """A record is a seek and a read of one reader: threads of a process (the prefetch thread, an
    evaluation) reading at once each get the record they asked for."""
    from concurrent.futures import ThreadPoolExecutor

    records = [{"text": f"record {i:05d} " + "x" * (i % 97)} for i in range(3000)]
    source = RecordSource(str(write_array_record(tmp_path / "t.array_record", records)))

    def check(seed: int) -> int:
        rng = random.Random(seed)
        for i in (rng.randrange(len(records)) for _ in range(3000)):
            assert source[i] == ("", records[i]["text"])
        return seed

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(check, range(8))) == list(range(8))


def test_an_array_record_shard_without_the_package_is_a_data_error(tmp_path, monkeypatch):
    import sys

    path = write_array_record(tmp_path / "d.array_record", RECORDS)
    monkeypatch.setitem(sys.modules, "array_record.python.array_record_module", None)  # not installed
    with pytest.raises(DataError, match=r"d\.array_record: reading ArrayRecord shards needs the array-"):
        RecordSource(str(path))
