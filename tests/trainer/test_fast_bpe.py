"""The tiktoken-backed byte-level BPE encoder gives exactly the ids of the tokenizers library."""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import multiprocessing
import pickle
import random
import unicodedata
from pathlib import Path

import pytest
import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tunix_trainer.pretrained.fast_bpe import FastByteLevelBPE

SMOLLM2 = Path(__file__).resolve().parents[2] / ".cache" / "smollm2"
FORTUNES = Path("/usr/share/games/fortunes")
BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False)
DIGITS_THEN_BYTE_LEVEL = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
)


def corpus() -> list[str]:
    """Text no one here wrote: the sources of a few standard-library modules (code, prose in
    docstrings, digits, whitespace runs), and a shuffled mix of odd characters."""
    import argparse
    import email.message
    import json as json_module
    import textwrap

    texts = [inspect.getsource(m) for m in (argparse, email.message, json_module.decoder, textwrap)]
    rng = random.Random(0)
    alphabet = [
        *list("ab 12\t\n\r  ½²٣é日🙂'sllve.,-!\xa0\u3000\x04\x1d\U00045678"),
        "<|im_start|>",
        "<|endoftext|>",
        "'re",
        "  \n",
    ]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    return texts


def shipped_text() -> list[str]:
    """English prose and code that packages ship: Python's own documentation (pydoc_data) and
    standard-library sources, and the fortunes where fortune-mod's data is installed."""
    import difflib
    import pydoc_data.topics
    import tarfile
    import unittest.mock

    texts = list(pydoc_data.topics.topics.values())
    texts += [inspect.getsource(m) for m in (difflib, tarfile, unittest.mock)]
    if FORTUNES.is_dir():
        for path in sorted(FORTUNES.iterdir()):
            if path.is_file() and not path.suffix:
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def edge_cases(added: list[str]) -> list[str]:
    """Digits, whitespace runs, apostrophes, scripts and emoji, added tokens inside words, bytes
    SmolLM2's vocabulary lacks (control characters, U+40000-U+BFFFF), and every assigned code point
    in a letter, digit and whitespace context (the pre-tokenizer's character classes)."""
    cases = [
        "",
        " ",
        "\n\n\n",
        "  \t \r\n  x",
        "x   1  22   333",
        "1234567890 ٣٤٥ ½¾ ²³ Ⅻ",
        "it's It'S they'll we've I'm you'd 're 'd",
        "émigré naïve Ελληνικά русский עברית العربية हिन्दी 日本語 한국어",
        "🙂👍🏽 👨‍👩‍👧 \u200d\ufeff\xa0\u3000 end",
        "a\x04b .\x04. \x06\x13\x14\x16\x1d x\U00045678y \U000b0000",
        *(f"{t}{t} x{t}y {t}\n1{t}2" for t in added),
    ]
    assigned = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    for start in range(0, len(assigned), 512):
        cases.append("".join(f"a{c}1 {c}" for c in assigned[start : start + 512]))
    return cases


def trained(pre_tokenizer, added: list[str], full_alphabet: bool = True) -> tuple[Tokenizer, str]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if full_alphabet else []
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=alphabet, special_tokens=added)
    tokenizer.train_from_iterator(corpus()[:3], trainer)
    return tokenizer, tokenizer.to_str()


def assert_same_ids(tokenizer: Tokenizer, fast: FastByteLevelBPE, texts: list[str]) -> None:
    for text in texts:
        assert fast.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids, repr(text[:80])


@pytest.mark.parametrize(
    "pre_tokenizer", [BYTE_LEVEL, DIGITS_THEN_BYTE_LEVEL], ids=["byte-level", "digits-then-byte-level"]
)
def test_same_ids_as_the_library(pre_tokenizer):
    added = ["<|im_start|>", "<|endoftext|>", "<|end"]  # a prefix of another: the longest is taken
    tokenizer, text = trained(pre_tokenizer, added)
    fast = FastByteLevelBPE.for_tokenizer(tokenizer, text)
    assert fast is not None
    assert_same_ids(tokenizer, fast, corpus() + edge_cases(added)[:40])
    assert fast.encode("<|endoftext|>") == [tokenizer.token_to_id("<|endoftext|>")]


def test_bytes_without_a_token_are_dropped_as_the_library_drops_them():
    """Trained on ASCII only, the vocabulary has no token for most bytes: the library drops them
    (so the letters around a dropped byte merge); the encoder hands such texts to the library."""
    tokenizer, text = trained(BYTE_LEVEL, ["<|endoftext|>"], full_alphabet=False)
    fast = FastByteLevelBPE.for_tokenizer(tokenizer, text)
    assert fast is not None and len(fast._missing) > 100
    texts = ["import\x04 re", "déf", "x = 1 \U0001f642", "<|endoftext|>\x00", "return None"]
    assert_same_ids(tokenizer, fast, texts)
    joined = tokenizer.encode("=\x01=", add_special_tokens=False).ids  # one pre-token
    assert joined == tokenizer.encode("==", add_special_tokens=False).ids and len(joined) == 1
    assert fast.encode("=\x01=") == joined  # dropped, then merged


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="make smollm2 converts SmolLM2 first")
def test_smollm2_tokenizer_same_ids_and_picklable():
    from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
    from tunix_trainer.pretrained.source import ModelFiles

    tokenizer = load_hf_tokenizer(ModelFiles(str(SMOLLM2)))
    fast = tokenizer._fast
    assert fast is not None
    assert b"\x04" in fast._missing and b"\xf1" in fast._missing  # what SmolLM2's vocabulary lacks
    added = list(tokenizer._tok.get_added_tokens_decoder().values())
    texts = shipped_text() + corpus() + edge_cases([t.content for t in added])
    assert sum(len(t) for t in texts) > 1_000_000
    assert_same_ids(tokenizer._tok, fast, texts)
    copy = pickle.loads(pickle.dumps(tokenizer))  # as a data worker process gets it
    assert copy._fast is not None
    records = [("What is 2 + 2?", "4."), ("", "plain text 42"), ("", texts[0])]
    expected = tokenizer.encode_examples(records)
    assert copy.encode_examples(records) == expected
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:  # dataset.workers
        assert pool.submit(tokenizer.encode_examples, records).result(timeout=240) == expected
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # tiktoken runs without the GIL
        assert list(pool.map(fast.encode, texts[:400])) == [fast.encode(t) for t in texts[:400]]
    tokenizer._fast = None  # the library's batch path
    assert copy.encode_examples(records) == tokenizer.encode_examples(records)


def handmade(merges: list[tuple[str, str]]) -> tuple[Tokenizer, str]:
    """A byte-level BPE tokenizer over all bytes with the given merges, ids in merge order."""
    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = BYTE_LEVEL
    return tokenizer, tokenizer.to_str()


def test_a_token_that_is_not_its_own_bpe_is_refused():
    """bc merges before ab, so the library's BPE of "abc" stops at [a, bc]; tiktoken would emit the
    token abc as it is (and would join a + bc by rank even inside a longer word)."""
    tokenizer, text = handmade([("b", "c"), ("a", "b"), ("ab", "c")])
    vocab = tokenizer.get_vocab()
    assert tokenizer.encode("abc").ids == [vocab["a"], vocab["bc"]]
    ranks = {t.encode(): i for t, i in vocab.items() if t.isascii() and t.isalpha()}
    raw = tiktoken.Encoding("raw", pat_str=r"\w+", mergeable_ranks=ranks, special_tokens={})
    assert raw.encode_ordinary("abc") == [vocab["abc"]]  # what an unchecked encoder would say
    assert FastByteLevelBPE.for_tokenizer(tokenizer, text) is None
    consistent, text = handmade([("a", "b"), ("b", "c"), ("ab", "c")])
    assert FastByteLevelBPE.for_tokenizer(consistent, text) is not None


def swap_merge_ids(config: dict) -> None:
    """Two merge results exchange ids: the ids are no longer ranks in merge order."""
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    first, second = ("".join(m.split(" ") if isinstance(m, str) else m) for m in merges[-2:])
    vocab[first], vocab[second] = vocab[second], vocab[first]


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(normalizer={"type": "NFC"}),
        lambda c: c["pre_tokenizer"].update(add_prefix_space=True),
        lambda c: c.update(pre_tokenizer={"type": "Whitespace"}),
        lambda c: c["model"].update(dropout=0.1),
        lambda c: c["model"].update(ignore_merges=True),
        lambda c: c["added_tokens"][0].update(lstrip=True),
        swap_merge_ids,
    ],
    ids=[
        "normalizer",
        "prefix-space",
        "other-pre-tokenizer",
        "dropout",
        "ignore-merges",
        "lstrip-token",
        "ids-not-in-merge-order",
    ],
)
def test_pipelines_it_cannot_reproduce_use_the_library(change):
    _tokenizer, text = trained(BYTE_LEVEL, ["<|endoftext|>"])
    config = json.loads(text)
    assert FastByteLevelBPE.for_tokenizer(Tokenizer.from_str(text), text) is not None
    change(config)
    changed = json.dumps(config)
    assert FastByteLevelBPE.for_tokenizer(Tokenizer.from_str(changed), changed) is None


def test_encode_many_is_the_library_encode_of_each_text():
    """One check over all the texts of a chunk; a text with an added token or a byte without a
    token anywhere sends them all through ``encode``."""
    tokenizer, text = trained(BYTE_LEVEL, ["<|im_start|>", "<|endoftext|>"], full_alphabet=False)
    fast = FastByteLevelBPE.for_tokenizer(tokenizer, text)
    assert fast is not None
    plain = corpus()[:20]
    for texts in (plain, [*plain, "x<|im_start|>y"], [*plain, "a\x04b"], ["<|im", "_start|>"], ["", "a", ""]):
        assert fast.encode_many(texts) == [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
