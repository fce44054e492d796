"""Byte-level BPE through ``tiktoken``: the ``tokenizers`` library's ids, several times faster.

A GPT-2-style byte-level BPE tokenizer (GPT-2, SmolLM2...) splits text at its added tokens, then into
pre-tokens with one regular expression, then runs BPE on each pre-token. tiktoken (OpenAI's encoder,
in Rust, releasing the GIL) does the same with a rank per token where the library has a rank per
merge: it merges the adjacent pair whose concatenation has the lowest rank, and emits a pre-token
that is a token as it is. ``FastByteLevelBPE.for_tokenizer`` accepts a tokenizer only where that
gives the library's ids:

* the pipeline: no normalizer; ``ByteLevel`` with its regex, optionally after
  ``Digits(individual_digits)`` (one equivalent expression); added tokens without strip/word/normalize
  options (the text is split at them here, the parts between encoded by tiktoken); a BPE model
  without dropout, prefixes, suffixes, byte fallback or ``ignore_merges``;
* the vocabulary: bytes plus one token per merge, ids increasing in merge order (the id is the rank),
  each merge made of earlier tokens;
* every token is the library's own BPE of its text. Then emitting a token as it is agrees, and so does
  every merge: adjacent parts x, y joined by rank into a token t that is not the merge (x, y) would
  mean that the library's BPE of t alone (merges in order, so the parts of t form as in any context)
  stops at [x, y];
* a probe text gives the library's ids.

A text holding a byte that has no token (the library drops it before BPE; SmolLM2 lacks six control
characters and 0xF1/0xF2, the lead bytes of U+40000-U+BFFFF) or a lone surrogate (the library refuses
it) is encoded by the library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

# The expression of tokenizers' ByteLevel pre-tokenizer (GPT-2's).
_BYTE_LEVEL = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same after Digits(individual_digits=True): each digit is a pre-token of its own, and a run of
# whitespace before a digit ends where the digit's split ends it (so it is not shortened by one).
_DIGITS_THEN_BYTE_LEVEL = (
    r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
)
_PROBE = (
    "Hello, world! It's 2026-11-26: 12 + 7 = 19.\n\n   Indented  text\twith\ttabs, ½ ² ٣ digits, "
    "émigré naïve 日本語 🙂 they'll we've I'm you'd   \n  trailing   \r\n"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of bytes to printable characters (what ByteLevel feeds the BPE model)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


_BYTE_CHARS = _bytes_to_unicode()
_TO_BYTES = {ord(c): b for b, c in _BYTE_CHARS.items()}  # str.translate, then latin-1 = the bytes
_BYTE_LEVEL_TEXT = re.compile("[" + re.escape("".join(_BYTE_CHARS.values())) + "]+")


def _pattern_for(pre_tokenizer: Any) -> str | None:
    """The one expression equivalent to ``pre_tokenizer`` (tokenizer.json), or None."""

    def byte_level(p: Any) -> bool:
        return (
            isinstance(p, dict)
            and p.get("type") == "ByteLevel"
            and p.get("use_regex", True)
            and not p.get("add_prefix_space", False)
        )

    if byte_level(pre_tokenizer):
        return _BYTE_LEVEL
    if isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "Sequence":
        parts = pre_tokenizer.get("pretokenizers") or []
        if (
            len(parts) == 2
            and parts[0].get("type") == "Digits"
            and parts[0].get("individual_digits")
            and byte_level(parts[1])
        ):
            return _DIGITS_THEN_BYTE_LEVEL
    return None


def _ranks(model: dict[str, Any], added: set[str]) -> dict[bytes, int] | None:
    """tiktoken's ranks (token bytes -> id) of a BPE model (tokenizer.json), or None when its ids are
    not ranks: bytes, then one new token per merge in merge order, each made of earlier tokens."""
    vocab: dict[str, int] = model.get("vocab") or {}
    ranks: dict[bytes, int] = {}
    for text, token_id in vocab.items():
        if text not in added:
            if not _BYTE_LEVEL_TEXT.fullmatch(text):
                return None
            ranks[text.translate(_TO_BYTES).encode("latin-1")] = token_id
    previous = -1
    for merge in model.get("merges") or []:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token_id = vocab.get(left + right)
        if token_id is None or token_id <= previous:
            return None
        if vocab.get(left, token_id) >= token_id or vocab.get(right, token_id) >= token_id:
            return None
        previous = token_id
    singles = sum(len(token) == 1 for token in ranks)
    return ranks if len(ranks) == singles + len(model.get("merges") or []) else None


def _own_bpe(tokenizer: Any, ranks: dict[bytes, int]) -> bool:
    """Whether the library's BPE of every token's text is that token."""
    tokenize = tokenizer.model.tokenize
    for token, token_id in ranks.items():
        text = "".join(_BYTE_CHARS[b] for b in token)
        pieces = tokenize(text)
        if len(pieces) != 1 or pieces[0].id != token_id:
            return False
    return True


class FastByteLevelBPE:
    """``encode(text)`` = ``tokenizer.encode(text, add_special_tokens=False).ids``, by tiktoken.

    Picklable (the data pipeline's worker processes get a copy: tiktoken and the library rebuild
    their encoders from the ranks and the JSON, without checking again)."""

    def __init__(self, tokenizer: Any, encoding: Any, missing: bytes, added: dict[str, int]):
        self._tokenizer = tokenizer
        self._encoding = encoding
        self._missing = missing  # the bytes that have no token
        self._added = added
        # Split at added tokens as the library does: the leftmost match, the longest there.
        longest_first = sorted(added, key=len, reverse=True)
        self._added_split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if added else None

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, tokenizer_json: str) -> FastByteLevelBPE | None:
        """The fast encoder of ``tokenizer`` (a ``tokenizers.Tokenizer`` read from ``tokenizer_json``),
        or None when its pipeline is not one tiktoken reproduces exactly."""
        try:
            import tiktoken
        except ImportError:
            return None
        config = json.loads(tokenizer_json)
        model = config.get("model") or {}
        if config.get("normalizer") is not None or model.get("type") != "BPE":
            return None
        if any(model.get(k) for k in ("dropout", "byte_fallback", "ignore_merges")):
            return None
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            return None
        pattern = _pattern_for(config.get("pre_tokenizer"))
        if pattern is None:
            return None
        added: dict[str, int] = {}
        for token in config.get("added_tokens") or []:
            if any(token.get(k) for k in ("lstrip", "rstrip", "single_word", "normalized")):
                return None
            added[token["content"]] = int(token["id"])
        ranks = _ranks(model, set(added))
        if ranks is None or not _own_bpe(tokenizer, ranks):
            return None
        missing = bytes(sorted(set(range(256)) - {t[0] for t in ranks if len(t) == 1}))
        encoding = tiktoken.Encoding(
            f"tunix-bpe-{len(ranks)}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
        )
        fast = cls(tokenizer, encoding, missing, added)
        probe = _PROBE + "".join(f"{t} x{t}y " for t in added)
        if fast.encode(probe) != tokenizer.encode(probe, add_special_tokens=False).ids:
            return None
        return fast

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if self._for_the_library(text):
            return self._tokenizer.encode(text, add_special_tokens=False).ids
        parts = self._added_split.split(text) if self._added_split else [text]
        if len(parts) == 1:
            return self._encoding.encode_ordinary(text)
        out: list[int] = []
        for k, part in enumerate(parts):
            if k % 2:
                out.append(self._added[part])
            elif part:
                out += self._encoding.encode_ordinary(part)
        return out

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``[self.encode(text) for text in texts]``, its checks made once over all the texts."""
        joined = "".join(texts)
        if self._for_the_library(joined) or (self._added_split and self._added_split.search(joined)):
            return [self.encode(text) for text in texts]
        encode = self._encoding.encode_ordinary
        return [encode(text) if text else [] for text in texts]

    def _for_the_library(self, text: str) -> bool:
        """A lone surrogate (the library refuses it) or a byte without a token (the library drops it)."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return bool(self._missing) and len(data.translate(None, self._missing)) != len(data)
