"""Write a deterministic, synthetic but learnable JSONL dataset and its manifest.

    python tools/seed_dataset.py --kind text --count 2000 --seed 1234 --output data/x.jsonl

The same arguments always give byte-identical files. Records are English-like sentences built from a
seeded RNG: arithmetic ("12 + 7 = 19."), counting, fixed facts ("The cow says moo."), and tiny
stories with consistent arithmetic, so even a small byte-level model's loss falls clearly.
``--kind prompt-completion`` writes question/answer pairs (``"Q: 12 + 7 = ?\\nA:"`` -> ``" 19"``);
``--kind chat`` writes instruction pairs for a chat template (``"12 + 7 = ?"`` -> ``"12 + 7 = 19."``).
``--shards N`` writes N files (``x-00000-of-0000N.jsonl``...) whose concatenation is the one-file
dataset; an output ending in ``.gz`` (or ``.zst``, with the zstandard package) is compressed,
deterministically. An output ending in ``.array_record`` (with the array_record package) is an
ArrayRecord file holding each JSONL line, without its newline, as one record, one record a chunk
(``group_size:1``: what random access wants), also byte-identical run to run.
Records are streamed, so any size fits in flat memory.
The manifest (``<output>.manifest.json`` by default) records kind, count, seed, generator,
sha256 (hex), bytes and records, and per shard its file, sha256, bytes and records. Needs only the
standard library and fsspec (and zstandard, array_record for those outputs).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import posixpath
import random
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import fsspec

GENERATOR = "tunix-rt/seed_dataset v1"
# One record a chunk (random access decompresses only its record); one thread, so the bytes are fixed.
ARRAY_RECORD_OPTIONS = "group_size:1,max_parallelism:1"
KINDS = ("text", "prompt-completion", "chat")

SOUNDS = {
    "dog": "woof",
    "cat": "meow",
    "cow": "moo",
    "duck": "quack",
    "sheep": "baa",
    "owl": "hoot",
    "frog": "croak",
    "lion": "roar",
    "pig": "oink",
    "horse": "neigh",
}
COLORS = {
    "sky": "blue",
    "grass": "green",
    "snow": "white",
    "sun": "yellow",
    "coal": "black",
    "blood": "red",
    "orange": "orange",
    "plum": "purple",
    "sand": "tan",
    "cloud": "gray",
}
NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Ella")
THINGS = ("apple", "pear", "plum", "egg", "book", "coin", "shell", "cup", "toy", "stone")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

QA = tuple[str, str]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


# Each generator draws from ``rng`` and returns (question, answer, sentence): the question/answer
# pair for prompt-completion records and the declarative sentence for text records.
def _addition(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"{a} + {b} = ?", str(a + b), f"{a} + {b} = {a + b}."


def _subtraction(rng: random.Random) -> tuple[str, str, str]:
    a = rng.randint(0, 20)
    b = rng.randint(0, a)
    return f"{a} - {b} = ?", str(a - b), f"{a} - {b} = {a - b}."


def _successor(rng: random.Random) -> tuple[str, str, str]:
    start, length = rng.randint(1, 60), rng.randint(4, 7)
    run = ", ".join(str(start + i) for i in range(length))
    last = start + length - 1
    return f"What comes after {last}?", str(last + 1), f"Counting from {start}: {run}, {last + 1}."


def _number_word(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(0, 10)
    return f"How do you write {n} in words?", NUMBER_WORDS[n], f"The number {n} is written {NUMBER_WORDS[n]}."


def _sound(rng: random.Random) -> tuple[str, str, str]:
    animal = rng.choice(sorted(SOUNDS))
    return f"What does the {animal} say?", SOUNDS[animal], f"The {animal} says {SOUNDS[animal]}."


def _color(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(sorted(COLORS))
    return f"What color is the {thing}?", COLORS[thing], f"The {thing} is {COLORS[thing]}."


def _story(rng: random.Random) -> tuple[str, str, str]:
    giver, taker = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    have = rng.randint(2, 12)
    give = rng.randint(1, have - 1)
    left = have - give
    setup = f"{giver} had {_count(have, thing)}. {giver} gave {give} to {taker}."
    return (
        f"{setup} How many {thing}s does {giver} have now?",
        str(left),
        f"{setup} Now {giver} has {_count(left, thing)}.",
    )


FACTS: tuple[Callable[[random.Random], tuple[str, str, str]], ...] = (
    _addition,
    _subtraction,
    _successor,
    _number_word,
    _sound,
    _color,
    _story,
)


def text_record(rng: random.Random) -> dict[str, str]:
    """A short paragraph of 3 to 6 facts."""
    return {"text": " ".join(rng.choice(FACTS)(rng)[2] for _ in range(rng.randint(3, 6)))}


def prompt_completion_record(rng: random.Random) -> dict[str, str]:
    """One question and its answer; the completion starts with a space."""
    question, answer, _ = rng.choice(FACTS)(rng)
    return {"prompt": f"Q: {question}\nA:", "completion": f" {answer}"}


def chat_record(rng: random.Random) -> dict[str, str]:
    """One instruction and its answer as a full sentence (for a model's chat template)."""
    question, _, sentence = rng.choice(FACTS)(rng)
    return {"prompt": question, "completion": sentence}


RECORDS = {"text": text_record, "prompt-completion": prompt_completion_record, "chat": chat_record}


def iter_lines(kind: str, count: int, seed: int) -> Iterator[bytes]:
    """The JSONL lines (each ending in a newline) of ``count`` records of ``kind``, one at a time
    (pure and deterministic)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    rng = random.Random(f"{GENERATOR}:{kind}:{seed}")
    make = RECORDS[kind]
    for _ in range(count):
        yield (json.dumps(make(rng), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def generate(kind: str, count: int, seed: int) -> bytes:
    """The JSONL bytes of ``count`` records of ``kind`` (pure and deterministic)."""
    return b"".join(iter_lines(kind, count, seed))


def shard_names(output: str, shards: int) -> list[str]:
    """The files of a dataset written as ``shards`` shards: ``output`` itself for one, else
    ``<stem>-00000-of-0000N<suffixes>`` beside it (``x.jsonl.gz`` -> ``x-00000-of-00004.jsonl.gz``)."""
    if shards == 1:
        return [output]
    head, name = posixpath.split(output)
    stem, dot, suffixes = name.partition(".")
    return [posixpath.join(head, f"{stem}-{i:05d}-of-{shards:05d}{dot}{suffixes}") for i in range(shards)]


class _Compressed:
    """A binary file that compresses what is written to it by the output's suffix (.gz, .zst or
    none), deterministically (no file name or time in a gzip header), and hashes the bytes stored."""

    def __init__(self, raw: BinaryIO, name: str):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.stored = 0
        if name.endswith(".gz"):
            self._compress: Any = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, mtime 0
        elif name.endswith(".zst"):
            import zstandard

            self._compress = zstandard.ZstdCompressor(level=3).compressobj()
        else:
            self._compress = None

    def _store(self, data: bytes) -> None:
        if data:
            self.raw.write(data)
            self.digest.update(data)
            self.stored += len(data)

    def write(self, data: bytes) -> None:
        self._store(self._compress.compress(data) if self._compress else data)

    def close(self) -> None:
        if self._compress is not None:
            self._store(self._compress.flush())


class _ArrayRecord:
    """An ArrayRecord shard being written: each JSONL line, without its newline, is one record.

    The writer needs a local file: a remote ``name`` is written to a temporary file and uploaded
    on ``close``, which also hashes the bytes stored."""

    def __init__(self, fs: Any, path: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.fs, self.path = fs, path
        self.local = _is_local(fs)
        self._tmp = None if self.local else tempfile.mkdtemp(prefix="seed-array-record-")
        self.file = path if self.local else os.path.join(self._tmp, "shard.array_record")
        self._writer = ArrayRecordWriter(self.file, ARRAY_RECORD_OPTIONS)
        self.digest = hashlib.sha256()
        self.stored = 0

    def write(self, line: bytes) -> None:
        self._writer.write(line[:-1])

    def close(self) -> None:
        self._writer.close()
        with open(self.file, "rb") as f:
            while chunk := f.read(1 << 20):
                self.digest.update(chunk)
                self.stored += len(chunk)
        if self._tmp is not None:
            try:
                self.fs.put_file(self.file, self.path)
            finally:
                shutil.rmtree(self._tmp, ignore_errors=True)


def _is_local(fs: Any) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def _write(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if _is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def seed_dataset(
    kind: str, count: int, seed: int, output: str, manifest: str | None = None, shards: int = 1
) -> dict[str, Any]:
    """Write the dataset to ``output`` (``shards`` files: ``shard_names``; compressed when the name
    ends in .gz or .zst, ArrayRecord when it ends in .array_record) and its manifest beside
    ``output``; return the manifest.

    Records are streamed to disk (memory stays flat at any count). Shard ``i`` holds the records
    ``i * count // shards`` up to the next shard's first, so the shards read in name order are the
    one-file dataset. ``sha256``/``bytes`` describe the file as stored (one shard), or the records'
    uncompressed JSONL (several shards, each listed with its own figures under ``shards``)."""
    if shards < 1 or shards > count:
        raise ValueError(f"shards must be in 1..count ({count}), got {shards}")
    names = shard_names(output, shards)
    lines = iter_lines(kind, count, seed)
    whole = hashlib.sha256()
    whole_bytes = 0
    listing = []
    for index, name in enumerate(names):
        records = (index + 1) * count // shards - index * count // shards
        fs, path = fsspec.core.url_to_fs(name)
        if _is_local(fs):
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with contextlib.ExitStack() as stack:
            if name.endswith(".array_record"):
                out: _ArrayRecord | _Compressed = _ArrayRecord(fs, path)
            else:
                out = _Compressed(stack.enter_context(fs.open(path, "wb")), name)
            for line in itertools.islice(lines, records):
                out.write(line)
                whole.update(line)
                whole_bytes += len(line)
            out.close()
        listing.append(
            {
                "file": posixpath.basename(name),
                "sha256": out.digest.hexdigest(),
                "bytes": out.stored,
                "records": records,
            }
        )
    info: dict[str, Any] = {"kind": kind, "count": count, "seed": seed, "generator": GENERATOR}
    if shards == 1:
        info.update(sha256=listing[0]["sha256"], bytes=listing[0]["bytes"], records=count)
    else:
        info.update(sha256=whole.hexdigest(), bytes=whole_bytes, records=count, shards=listing)
    _write(
        manifest or f"{output}.manifest.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    )
    return info


def build_parser(**defaults: Any) -> argparse.ArgumentParser:
    """Command-line options; ``defaults`` pre-fill them (used by seed_golden_dataset)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, default=defaults.get("kind", "text"))
    parser.add_argument("--count", type=int, default=defaults.get("count"), required="count" not in defaults)
    parser.add_argument("--seed", type=int, default=defaults.get("seed"), required="seed" not in defaults)
    parser.add_argument(
        "--output",
        default=defaults.get("output"),
        required="output" not in defaults,
        help="Where to write the JSONL (path or fsspec URI; .gz, .zst or .array_record for those).",
    )
    parser.add_argument("--manifest", default=None, help="Manifest URI (default: <output>.manifest.json).")
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="Write this many shard files beside --output (<stem>-00000-of-0000N.jsonl...; "
        "default 1: --output itself).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1:
        print("--count must be positive", file=sys.stderr)
        return 2
    if not 1 <= args.shards <= args.count:
        print("--shards must be between 1 and --count", file=sys.stderr)
        return 2
    info = seed_dataset(args.kind, args.count, args.seed, args.output, args.manifest, args.shards)
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
