"""JSONL datasets -> deterministic, exactly resumable batches; tokenizers."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tunix_api.training import DatasetFormat, DatasetSpec, TokenizerSpec
from tunix_trainer.data import (
    Batch,
    BatchIterator,
    DataError,
    SyntheticBatches,
    dataset_checksum,
    open_uri,
    parse_records,
    resolve_uri,
)
from tunix_trainer.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer

TOK = ByteTokenizer()
BOS, EOS, PAD = TOK.bos_id, TOK.eos_id, TOK.pad_id


def write_jsonl(path: Path, records: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def text_records(n: int) -> list[dict]:
    return [{"text": f"doc {i}: {'ab' * (i % 5)} end of document"} for i in range(n)]


def iterator(uri: str, *, batch_size=4, seq_len=16, seed=0, **spec) -> BatchIterator:
    return BatchIterator(DatasetSpec(uri=uri, **spec), TOK, batch_size=batch_size, seq_len=seq_len, seed=seed)


def take(it, n: int) -> list[Batch]:
    return [next(it) for _ in range(n)]


def assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.inputs, y.inputs)
        np.testing.assert_array_equal(x.targets, y.targets)
        np.testing.assert_array_equal(x.loss_mask, y.loss_mask)


@pytest.fixture
def dataset(tmp_path) -> str:
    return write_jsonl(tmp_path / "d.jsonl", text_records(23))


# --- batches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("packing", [True, False])
def test_batch_shapes_and_dtypes(dataset, packing):
    it = iterator(dataset, batch_size=3, seq_len=10, packing=packing)
    b = next(it)
    assert b.inputs.shape == b.targets.shape == b.loss_mask.shape == (3, 10)
    assert (b.inputs.dtype, b.targets.dtype, b.loss_mask.dtype) == (np.int32, np.int32, np.float32)
    np.testing.assert_array_equal(b.inputs[:, 1:], b.targets[:, :-1])
    assert it.tokens_per_batch == 30


@pytest.mark.parametrize("packing", [True, False])
def test_deterministic_and_seeded(dataset, packing):
    first = take(iterator(dataset, seed=7, packing=packing), 12)
    assert_same(first, take(iterator(dataset, seed=7, packing=packing), 12))
    other = take(iterator(dataset, seed=8, packing=packing), 12)
    assert any(not np.array_equal(a.inputs, b.inputs) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("k", [0, 1, 5, 11])
def test_exact_resume(dataset, packing, k):
    """state() after k batches -> a fresh iterator restored from it yields the same next batches,
    also across epoch boundaries (23 documents, batches of 4)."""
    it = iterator(dataset, packing=packing, seed=3)
    take(it, k)
    state = json.loads(json.dumps(it.state()))
    expected = take(it, 9)
    resumed = iterator(dataset, packing=packing, seed=3)
    resumed.restore(state)
    assert_same(take(resumed, 9), expected)


def test_epochs_reshuffle_and_cover_every_document(tmp_path):
    records = [{"text": chr(ord("a") + i)} for i in range(10)]
    uri = write_jsonl(tmp_path / "d.jsonl", records)
    it = iterator(uri, batch_size=5, seq_len=8, packing=False)
    epochs = [np.concatenate([b.inputs[:, 1] for b in take(it, 2)]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(ord("a"), ord("k")))
    assert epochs[0].tolist() != epochs[1].tolist()

    ordered = iterator(uri, batch_size=5, seq_len=8, packing=False, shuffle=False)
    assert np.concatenate([b.inputs[:, 1] for b in take(ordered, 2)]).tolist() == list(range(97, 107))


def test_packing_concatenates_and_cuts_windows(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"text": "abc"}, {"text": "de"}])
    it = iterator(uri, batch_size=1, seq_len=3, shuffle=False)
    # one lane reads epoch after epoch: BOS a b c | EOS BOS d e | EOS BOS a b | c EOS ...
    rows = [next(it) for _ in range(3)]
    np.testing.assert_array_equal(
        [b.inputs[0] for b in rows], [[BOS, 97, 98], [EOS, BOS, 100], [EOS, BOS, 97]]
    )
    np.testing.assert_array_equal(
        [b.targets[0] for b in rows], [[97, 98, 99], [BOS, 100, 101], [BOS, 97, 98]]
    )
    np.testing.assert_array_equal([b.loss_mask[0] for b in rows], [[1, 1, 1], [0, 1, 1], [0, 1, 1]])


def test_prompt_tokens_and_padding_are_masked(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ab", "completion": "cd"}])
    b = next(iterator(uri, batch_size=1, seq_len=8, packing=False))
    np.testing.assert_array_equal(b.inputs[0], [BOS, 97, 98, 99, 100, EOS, PAD, PAD])
    np.testing.assert_array_equal(b.targets[0], [97, 98, 99, 100, EOS, PAD, PAD, PAD])
    np.testing.assert_array_equal(b.loss_mask[0], [0, 0, 1, 1, 1, 0, 0, 0])


def test_prompt_masking_with_packing(tmp_path):
    records = [{"prompt": "Q", "completion": "A"}, {"prompt": "R", "completion": "B"}]
    uri = write_jsonl(tmp_path / "d.jsonl", records)
    b = next(iterator(uri, batch_size=1, seq_len=7, shuffle=False))
    np.testing.assert_array_equal(b.targets[0], [ord("Q"), ord("A"), EOS, BOS, ord("R"), ord("B"), EOS])
    np.testing.assert_array_equal(b.loss_mask[0], [0, 1, 1, 0, 0, 1, 1])


def test_no_packing_truncates_long_documents(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"text": "abcdefghij"}])
    b = next(iterator(uri, batch_size=2, seq_len=4, packing=False))
    np.testing.assert_array_equal(b.inputs, [[BOS, 97, 98, 99]] * 2)
    np.testing.assert_array_equal(b.loss_mask, np.ones((2, 4)))


def test_explicit_format(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c", "text": "t"}])
    as_text = next(iterator(uri, batch_size=1, seq_len=2, packing=False, format=DatasetFormat.TEXT))
    np.testing.assert_array_equal(as_text.targets[0], [ord("t"), EOS])
    as_pc = next(iterator(uri, batch_size=1, seq_len=3, packing=False, format="promptCompletion"))
    np.testing.assert_array_equal(as_pc.targets[0], [ord("p"), ord("c"), EOS])
    np.testing.assert_array_equal(as_pc.loss_mask[0], [0, 1, 1])


# --- sources ---------------------------------------------------------------------------------------


def test_memory_uri():
    uri = f"memory://tunix-test-{uuid.uuid4().hex}/d.jsonl"
    with fsspec.open(uri, "wb") as f:
        f.write(b'{"text": "hello"}\n{"text": "world"}\n')
    try:
        it = iterator(uri, batch_size=1, seq_len=4, shuffle=False)
        assert next(it).inputs.tolist() == [[BOS, *b"hel"]]
        assert it.checksum == dataset_checksum(uri)
    finally:
        fsspec.filesystem("memory").rm(uri.removeprefix("memory://").split("/")[0], recursive=True)


def test_relative_path_against_base_dir_and_cwd(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "d.jsonl", text_records(3))
    spec = DatasetSpec(uri="data/d.jsonl")
    from_base = BatchIterator(spec, TOK, batch_size=2, seq_len=8, seed=0, base_dir=str(tmp_path))
    assert from_base.uri == str(tmp_path / "data" / "d.jsonl")
    monkeypatch.chdir(tmp_path)
    assert_same(take(BatchIterator(spec, TOK, batch_size=2, seq_len=8, seed=0), 3), take(from_base, 3))


def test_resolve_uri():
    assert resolve_uri("s3://b/k.jsonl", "/base") == "s3://b/k.jsonl"
    assert resolve_uri("/abs/x.jsonl", "/base") == "/abs/x.jsonl"
    assert resolve_uri("x/../y.jsonl", "/base") == "/base/y.jsonl"
    assert resolve_uri("y.jsonl", "s3://bucket/run/") == "s3://bucket/run/y.jsonl"


def test_dataset_checksum_and_open_uri(tmp_path):
    path = tmp_path / "f.bin"
    with open_uri(str(path), "wb") as f:
        f.write(b"x" * 3_000_000)
    assert dataset_checksum(str(path)) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a"}\n{"text": "b"\n', r":2: invalid JSON"),
        (
            '{"text": "a"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            r":2: invalid JSON \(nested too deeply\)$",
        ),
        ('{"text": "a", "n": ' + "9" * 5000 + "}\n", r":1: invalid JSON \(Exceeds the limit \(4300 digits\)"),
        ('{"text": "a}\n', r":1: invalid JSON \(Unterminated string starting at column 10\)$"),
        ('{"text": "a" "b"}\n', r":1: invalid JSON \(Expecting ',' delimiter at column 14\)$"),
        (
            '{"text": "a"}\n{"text": "ok \\ud800 no"}\n',
            r"bad\.jsonl:2: field 'text' holds a lone surrogate \(\\ud800\) at character 4: not Unicode",
        ),
        (
            '{"prompt": "\\udfff", "completion": "c"}\n',
            r":1: field 'prompt' holds a lone surrogate \(\\udfff\) at character 1",
        ),
        ('{"text": "a"}\n\n{"prompt": "q", "completion": "c"}\n', r":3: missing 'text'.*mix"),
        ('{"prompt": "q", "completion": "c"}\n{"text": "a"}\n', r":2: missing 'prompt', 'completion'"),
        ('{"prompt": "q"}\n', r":1: record has neither"),
        ("[1, 2]\n", r":1: expected a JSON object"),
        ('{"text": 5}\n', r":1: field 'text' must be a string"),
        ("", r"no records"),
        ("\n  \n", r"no records"),
    ],
)
def test_malformed_datasets(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        next(iterator(str(path), seq_len=64))  # a record is checked when it is read


def test_lines_end_only_at_line_breaks_json_cannot_hold(tmp_path):
    """U+2028 and friends are line breaks to str.splitlines but may sit raw inside a JSON string."""
    path = tmp_path / "d.jsonl"
    path.write_bytes('\ufeff{"text": "a\u2028b\x85c\u2029d"}\r\n{"text": "e"}\r{"text": "f"}\n'.encode())
    assert parse_records(path.read_bytes(), DatasetFormat.AUTO, str(path)) == [
        ("", "a\u2028b\x85c\u2029d"),
        ("", "e"),
        ("", "f"),
    ]


def test_explicit_format_mismatch(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match=r":1: missing 'prompt', 'completion'.*dataset.format"):
        next(iterator(uri, format="promptCompletion", packing=False))


def test_unreadable_datasets(tmp_path):
    with pytest.raises(DataError, match="cannot read dataset"):
        iterator(str(tmp_path / "missing.jsonl"))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:1: not UTF-8"):
        next(iterator(str(tmp_path / "latin1.jsonl")))


def test_completion_truncated_away_everywhere(tmp_path):
    uri = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a long prompt", "completion": "x"}])
    with pytest.raises(DataError, match="no trainable tokens"):
        next(iterator(uri, seq_len=4, packing=False))


def test_restore_rejects_foreign_or_invalid_state(dataset, tmp_path):
    state = iterator(dataset).state()
    with pytest.raises(DataError, match=r"saved for another dataset or shape \(seqLen 16 -> 32\)"):
        iterator(dataset, seq_len=32).restore(state)
    other = write_jsonl(tmp_path / "other.jsonl", text_records(24))
    with pytest.raises(DataError, match=r"\(dataset 'sha256:.*records 23 -> 24\)"):
        iterator(other).restore(state)
    with pytest.raises(DataError, match="whole-file data loader of an earlier trainer version"):
        iterator(dataset).restore({"epoch": 0, "cursor": 0, "rows_per_epoch": 5})
    with pytest.raises(ValueError, match="4 non-negative"):
        iterator(dataset).restore({**state, "lanes": state["lanes"][:3]})
    with pytest.raises(ValueError, match="needs lanes"):
        iterator(dataset).restore({"step": 3})


# --- synthetic data -------------------------------------------------------------------------------------


def test_synthetic_batches():
    it = SyntheticBatches(1000, batch_size=4, seq_len=32, seed=1)
    batches = take(it, 3)
    for b in batches:
        assert b.inputs.shape == (4, 32) and b.inputs.dtype == np.int32
        assert b.inputs.min() >= 0 and b.inputs.max() < 1000
        np.testing.assert_array_equal(b.inputs[:, 1:], b.targets[:, :-1])
        assert b.loss_mask.dtype == np.float32 and b.loss_mask.sum() == 4 * 32
    assert it.tokens_per_batch == 128
    assert not np.array_equal(batches[0].inputs, batches[1].inputs)
    assert_same(batches, take(SyntheticBatches(1000, batch_size=4, seq_len=32, seed=1), 3))
    resumed = SyntheticBatches(1000, batch_size=4, seq_len=32, seed=1)
    resumed.restore({"step": 1})
    assert_same(take(resumed, 2), batches[1:])
    assert it.state() == {"step": 3}


# --- tokenizers ------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trip():
    text = "héllo, 世界 🙂"
    ids = TOK.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert TOK.decode([BOS, *ids, EOS, PAD]) == text
    assert TOK.vocab_size == 259 and (PAD, BOS, EOS) == (256, 257, 258)
    assert isinstance(TOK, Tokenizer)


def test_load_tokenizer():
    assert isinstance(load_tokenizer(TokenizerSpec()), ByteTokenizer)


def test_sentencepiece_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails even if installed
    with pytest.raises(ImportError, match=r"pip install 'tunix-rt\[sentencepiece\]'"):
        load_tokenizer(TokenizerSpec(kind="sentencepiece", uri="memory://nothing.model"))
