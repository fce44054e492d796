"""The seeder's sharded and compressed outputs."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import fsspec
import pytest

from tools.seed_dataset import generate, main, seed_dataset, shard_names
from tunix_trainer.data_sources import RecordSource


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNIX_DATA_CACHE", str(tmp_path / "cache"))


def test_shard_names():
    assert shard_names("d/x.jsonl", 1) == ["d/x.jsonl"]
    assert shard_names("d/x.jsonl.gz", 2) == ["d/x-00000-of-00002.jsonl.gz", "d/x-00001-of-00002.jsonl.gz"]


def test_shards_concatenate_to_the_one_file_dataset(tmp_path):
    info = seed_dataset("text", 50, 3, str(tmp_path / "x.jsonl"), shards=3)
    files = [tmp_path / f"x-0000{i}-of-00003.jsonl" for i in range(3)]
    assert b"".join(f.read_bytes() for f in files) == generate("text", 50, 3)
    assert [s["records"] for s in info["shards"]] == [16, 17, 17]
    assert [s["file"] for s in info["shards"]] == [f.name for f in files]
    manifest = json.loads((tmp_path / "x.jsonl.manifest.json").read_text())
    assert manifest == info and manifest["records"] == 50
    one = RecordSource(
        str(seed_dataset("text", 50, 3, str(tmp_path / "one" / "x.jsonl")) and tmp_path / "one")
    )
    sharded = RecordSource(str(tmp_path / "x-*-of-00003.jsonl"))
    assert [sharded[i] for i in range(50)] == [one[i] for i in range(50)]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_output_is_deterministic_and_readable(tmp_path, suffix):
    a = seed_dataset("prompt-completion", 40, 1, str(tmp_path / f"a.jsonl{suffix}"))
    b = seed_dataset("prompt-completion", 40, 1, str(tmp_path / f"b.jsonl{suffix}"))
    assert (tmp_path / f"a.jsonl{suffix}").read_bytes() == (tmp_path / f"b.jsonl{suffix}").read_bytes()
    assert a == b
    raw = (tmp_path / f"a.jsonl{suffix}").read_bytes()
    if suffix == ".gz":
        assert gzip.decompress(raw) == generate("prompt-completion", 40, 1)
    source = RecordSource(str(tmp_path / f"a.jsonl{suffix}"))
    assert source.checksum == "sha256:" + a["sha256"] and a["bytes"] == len(raw)
    assert len(source) == 40 and source[0][0].startswith("Q: ")


def test_sharded_and_compressed(tmp_path):
    info = seed_dataset("text", 30, 2, str(tmp_path / "d" / "x.jsonl.gz"), shards=4)
    assert len(info["shards"]) == 4
    source = RecordSource(str(tmp_path / "d"))
    text = b"".join(gzip.decompress((tmp_path / "d" / s["file"]).read_bytes()) for s in info["shards"])
    assert text == generate("text", 30, 2)
    assert len(source) == 30


def test_cli_rejects_bad_shard_counts(tmp_path, capsys):
    out = str(tmp_path / "x.jsonl")
    assert main(["--count", "3", "--seed", "1", "--output", out, "--shards", "4"]) == 2
    assert main(["--count", "3", "--seed", "1", "--output", out, "--shards", "0"]) == 2
    assert "--shards must be between 1 and --count" in capsys.readouterr().err
    assert main(["--count", "3", "--seed", "1", "--output", out, "--shards", "3"]) == 0


def test_array_record_output_is_deterministic_and_holds_the_jsonl_lines(tmp_path):
    from array_record.python.array_record_module import ArrayRecordReader

    a = seed_dataset("text", 50, 4, str(tmp_path / "a" / "x.array_record"), shards=3)
    b = seed_dataset("text", 50, 4, str(tmp_path / "b" / "x.array_record"), shards=3)
    assert a == b and [s["records"] for s in a["shards"]] == [16, 17, 17]
    files = [tmp_path / "a" / s["file"] for s in a["shards"]]
    assert [f.name for f in files] == [f"x-0000{i}-of-00003.array_record" for i in range(3)]
    for shard, f in zip(a["shards"], files, strict=True):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
        assert shard["bytes"] == f.stat().st_size
        assert shard["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        reader = ArrayRecordReader(str(f))
        assert "group_size:1," in reader.writer_options_string()
        reader.close()
    records = [line for f in files for line in ArrayRecordReader(str(f)).read_all()]
    assert records == generate("text", 50, 4).splitlines()  # each JSONL line, without its newline
    assert a["sha256"] == hashlib.sha256(generate("text", 50, 4)).hexdigest()
    seed_dataset("text", 50, 4, str(tmp_path / "x.jsonl"))
    jsonl = RecordSource(str(tmp_path / "x.jsonl"))
    source = RecordSource(str(tmp_path / "a"))
    assert [source[i] for i in range(50)] == [jsonl[i] for i in range(50)]


def test_array_record_output_on_an_object_store(tmp_path):
    root = f"seed-{uuid.uuid4().hex}"
    try:
        remote = seed_dataset("chat", 20, 1, f"memory://{root}/x.array_record")
        local = seed_dataset("chat", 20, 1, str(tmp_path / "x.array_record"))
        assert remote == local
        stored = fsspec.filesystem("memory").cat(f"/{root}/x.array_record")
        assert stored == (tmp_path / "x.array_record").read_bytes()
        assert RecordSource(f"memory://{root}/x.array_record").checksum == "sha256:" + local["sha256"]
    finally:
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)
