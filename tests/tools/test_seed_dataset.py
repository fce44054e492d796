"""The deterministic dataset seeders."""

from __future__ import annotations

import json
import re

import fsspec
import pytest

from tools import seed_golden_dataset
from tools.seed_dataset import KINDS, generate, main, seed_dataset
from tunix_api.training import DatasetSpec
from tunix_trainer.data import BatchIterator, dataset_checksum, parse_records
from tunix_trainer.tokenizer import ByteTokenizer


@pytest.mark.parametrize("kind", KINDS)
def test_byte_identical_across_runs(tmp_path, kind):
    a = seed_dataset(kind, 50, 3, str(tmp_path / "a.jsonl"))
    b = seed_dataset(kind, 50, 3, str(tmp_path / "b.jsonl"))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a == b


@pytest.mark.parametrize("kind", KINDS)
def test_seed_and_count_change_the_content(kind):
    base = generate(kind, 50, 3)
    assert generate(kind, 50, 4) != base
    assert generate(kind, 51, 3).startswith(base)


def test_manifest_describes_the_file(tmp_path):
    out = tmp_path / "sub" / "d.jsonl"
    info = seed_dataset("text", 40, 9, str(out))
    manifest = json.loads((tmp_path / "sub" / "d.jsonl.manifest.json").read_text())
    assert manifest == info
    assert set(manifest) == {"kind", "count", "seed", "generator", "sha256", "bytes", "records"}
    assert "sha256:" + manifest["sha256"] == dataset_checksum(str(out))
    assert manifest["bytes"] == out.stat().st_size
    assert manifest["records"] == 40 == len(out.read_text().splitlines())
    assert (manifest["kind"], manifest["count"], manifest["seed"]) == ("text", 40, 9)


def test_manifest_elsewhere_and_memory_uri():
    out = "memory://tunix-seed-test/d.jsonl"
    info = seed_dataset("prompt-completion", 5, 1, out, manifest="memory://tunix-seed-test/m.json")
    try:
        assert dataset_checksum(out) == "sha256:" + info["sha256"]
        with fsspec.open("memory://tunix-seed-test/m.json") as f:
            assert json.load(f) == info
    finally:
        fsspec.filesystem("memory").rm("tunix-seed-test", recursive=True)


@pytest.mark.parametrize(("kind", "fmt"), [("text", "text"), ("prompt-completion", "promptCompletion")])
def test_records_are_accepted_by_the_data_loader(tmp_path, kind, fmt):
    out = tmp_path / "d.jsonl"
    seed_dataset(kind, 100, 5, str(out))
    records = parse_records(out.read_bytes(), "auto", str(out))
    assert len(records) == 100
    assert all(completion for _, completion in records)
    if kind == "prompt-completion":
        assert all(p.startswith("Q: ") and p.endswith("\nA:") and c.startswith(" ") for p, c in records)
    it = BatchIterator(
        DatasetSpec(uri=str(out), format=fmt), ByteTokenizer(), batch_size=4, seq_len=64, seed=0
    )
    assert next(it).loss_mask.sum() > 0


def test_content_is_consistent_arithmetic():
    """Every "a + b = c." and "a - b = c." statement is true, so the data is learnable."""
    text = generate("text", 300, 0).decode()
    sums = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", text)
    assert len(sums) > 50
    for a, op, b, c in sums:
        assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate("poems", 1, 0)
    with pytest.raises(ValueError):
        generate("text", 0, 0)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert main(["--kind", "prompt-completion", "--count", "7", "--seed", "2", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["records"] == 7 and printed["kind"] == "prompt-completion"
    assert (tmp_path / "cli.jsonl.manifest.json").exists()
    assert main(["--count", "0", "--seed", "2", "--output", str(out)]) == 2


def test_golden_defaults(tmp_path, capsys, monkeypatch):
    assert (
        seed_golden_dataset.GOLDEN_OUTPUTS["text"]
        == seed_golden_dataset.REPO_ROOT / "data/golden/golden.jsonl"
    )
    out = tmp_path / "g.jsonl"
    assert seed_golden_dataset.main(["--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["kind"], printed["count"], printed["seed"]) == ("text", 2000, 1234)
    assert out.read_bytes() == generate("text", 2000, 1234)

    monkeypatch.setitem(seed_golden_dataset.GOLDEN_OUTPUTS, "prompt-completion", tmp_path / "pc.jsonl")
    assert seed_golden_dataset.main(["--kind", "prompt-completion", "--count", "10"]) == 0
    assert (tmp_path / "pc.jsonl").read_bytes() == generate("prompt-completion", 10, 1234)
    assert (tmp_path / "pc.jsonl.manifest.json").exists()
