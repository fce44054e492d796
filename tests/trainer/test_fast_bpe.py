"""The cached byte-level BPE encoder gives exactly the ids of the tokenizers library."""

from __future__ import annotations

import inspect
import json
import pickle
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tunix_trainer.pretrained.fast_bpe import FastByteLevelBPE

SMOLLM2 = Path(__file__).resolve().parents[2] / ".cache" / "smollm2"


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
        *list("ab 12\t\n\r  ½²٣é日🙂'sllve.,-!\xa0\u3000"),
        "<|im_start|>",
        "<|endoftext|>",
        "'re",
        "  \n",
    ]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    return texts


def trained(pre_tokenizer, added: list[str]) -> tuple[Tokenizer, str]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=added
    )
    tokenizer.train_from_iterator(corpus()[:3], trainer)
    return tokenizer, tokenizer.to_str()


def assert_same_ids(tokenizer: Tokenizer, fast: FastByteLevelBPE) -> None:
    for text in corpus():
        assert fast.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids, repr(text[:80])


@pytest.mark.parametrize(
    "pre_tokenizer",
    [
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        ),
    ],
    ids=["byte-level", "digits-then-byte-level"],
)
def test_same_ids_as_the_library(pre_tokenizer):
    tokenizer, text = trained(pre_tokenizer, ["<|im_start|>", "<|endoftext|>"])
    fast = FastByteLevelBPE.for_tokenizer(tokenizer, text)
    assert fast is not None
    assert_same_ids(tokenizer, fast)


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="make smollm2 converts SmolLM2 first")
def test_smollm2_tokenizer_same_ids_and_picklable():
    from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
    from tunix_trainer.pretrained.source import ModelFiles

    tokenizer = load_hf_tokenizer(ModelFiles(str(SMOLLM2)))
    assert tokenizer._fast is not None
    assert_same_ids(tokenizer._tok, tokenizer._fast)
    copy = pickle.loads(pickle.dumps(tokenizer))  # as a data worker process gets it
    records = [("What is 2 + 2?", "4."), ("", "plain text 42")]
    assert copy.encode_examples(records) == tokenizer.encode_examples(records)
    tokenizer._fast = None  # the library's batch path
    assert copy.encode_examples(records) == tokenizer.encode_examples(records)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(normalizer={"type": "NFC"}),
        lambda c: c["pre_tokenizer"].update(add_prefix_space=True),
        lambda c: c.update(pre_tokenizer={"type": "Whitespace"}),
        lambda c: c["model"].update(dropout=0.1),
        lambda c: c["added_tokens"][0].update(lstrip=True),
    ],
    ids=["normalizer", "prefix-space", "other-pre-tokenizer", "dropout", "lstrip-token"],
)
def test_pipelines_it_cannot_reproduce_use_the_library(change):
    _tokenizer, text = trained(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"])
    config = json.loads(text)
    change(config)
    changed = json.dumps(config)
    assert FastByteLevelBPE.for_tokenizer(Tokenizer.from_str(changed), changed) is None
