"""Write a deterministic, synthetic but learnable JSONL dataset and its manifest.

    python tools/seed_dataset.py --kind text --count 2000 --seed 1234 --output data/x.jsonl

The same arguments always give byte-identical files. Records are English-like sentences built from a
seeded RNG: arithmetic ("12 + 7 = 19."), counting, fixed facts ("The cow says moo."), and tiny
stories with consistent arithmetic, so even a small byte-level model's loss falls clearly.
``--kind prompt-completion`` writes question/answer pairs (``"Q: 12 + 7 = ?\\nA:"`` -> ``" 19"``);
``--kind chat`` writes instruction pairs for a chat template (``"12 + 7 = ?"`` -> ``"12 + 7 = 19."``).
The manifest (``<output>.manifest.json`` by default) records kind, count, seed, generator,
sha256 (hex), bytes and records. Needs only the standard library and fsspec.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import random
import sys
from collections.abc import Callable
from typing import Any

import fsspec

GENERATOR = "tunix-rt/seed_dataset v1"
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


def generate(kind: str, count: int, seed: int) -> bytes:
    """The JSONL bytes of ``count`` records of ``kind`` (pure and deterministic)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    rng = random.Random(f"{GENERATOR}:{kind}:{seed}")
    make = RECORDS[kind]
    lines = (json.dumps(make(rng), ensure_ascii=False, sort_keys=True) for _ in range(count))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if "file" in fs.protocol or "local" in fs.protocol:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def seed_dataset(
    kind: str, count: int, seed: int, output: str, manifest: str | None = None
) -> dict[str, Any]:
    """Write the dataset to ``output`` and its manifest beside it; return the manifest."""
    data = generate(kind, count, seed)
    info = {
        "kind": kind,
        "count": count,
        "seed": seed,
        "generator": GENERATOR,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "records": data.count(b"\n"),
    }
    _write(output, data)
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
        help="Where to write the JSONL (path or fsspec URI).",
    )
    parser.add_argument("--manifest", default=None, help="Manifest URI (default: <output>.manifest.json).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1:
        print("--count must be positive", file=sys.stderr)
        return 2
    info = seed_dataset(args.kind, args.count, args.seed, args.output, args.manifest)
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
