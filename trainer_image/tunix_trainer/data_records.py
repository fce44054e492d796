"""Dataset records: JSONL lines -> ``(prompt, completion)`` pairs -> token ids and loss weights.

Pure functions (no I/O): the whole-file parser, the one-line parser the streaming sources use,
and the tokenization of a group of records into one flat array. NumPy only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from tunix_api.manifest_yaml import lone_surrogate
from tunix_api.training import DatasetFormat

if TYPE_CHECKING:
    from tunix_trainer.tokenizer import Tokenizer

LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the only line breaks a JSON text cannot hold raw
Record = tuple[str, str]  # (prompt, completion); a text record is ("", text)

_KEYS = {DatasetFormat.TEXT: ("text",), DatasetFormat.PROMPT_COMPLETION: ("prompt", "completion")}


class DataError(Exception):
    """The dataset is unreadable, malformed or too small (the trainer exits with DATA_ERROR)."""


def detect_format(record: Any, where: str) -> DatasetFormat:
    """The kind of one decoded record (AUTO takes the kind of a dataset's first record)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "text" in record:
        return DatasetFormat.TEXT
    if "prompt" in record and "completion" in record:
        return DatasetFormat.PROMPT_COMPLETION
    raise DataError(f"{where}: record has neither a 'text' field nor 'prompt' and 'completion' fields")


def decode_json(line: str, where: str) -> Any:
    """``json.loads`` with the error named by ``where`` (``file:line``)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        reason = exc.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column"
        raise DataError(f"{where}: invalid JSON ({reason} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{where}: invalid JSON ({exc})") from None


def record_values(record: Any, kind: DatasetFormat, where: str, origin: str) -> Record:
    """``(prompt, completion)`` of a decoded record of ``kind`` (``origin`` says where the kind came
    from, for the mixed-kinds error)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    keys = _KEYS[kind]
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(
            f"{where}: missing {', '.join(repr(k) for k in missing)}: records must all be "
            f"{kind.value} records ({origin}), not a mix of kinds"
        )
    values = [record[k] for k in keys]
    bad = [k for k, v in zip(keys, values, strict=True) if not isinstance(v, str)]
    if bad:
        raise DataError(f"{where}: field {bad[0]!r} must be a string")
    for key, value in zip(keys, values, strict=True):
        if (index := lone_surrogate(value)) is not None:
            raise DataError(
                f"{where}: field {key!r} holds a lone surrogate (\\u{ord(value[index]):04x}) at "
                f"character {index + 1}: not Unicode text"
            )
    return ("", values[0]) if kind == DatasetFormat.TEXT else (values[0], values[1])


def parse_records(data: bytes, fmt: DatasetFormat, source: str) -> list[Record]:
    """JSONL bytes -> ``(prompt, completion)`` pairs; a text record is ``("", text)``.

    ``fmt`` AUTO takes the kind of the first record; every record must then be of that kind.
    Lines end at LF, CRLF or CR only (not at U+2028 and the other breaks ``str.splitlines`` knows,
    which JSON strings may hold); a leading byte-order mark is dropped. Blank lines are skipped;
    extra fields are ignored. Raises ``DataError`` naming the line.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc})") from None
    records: list[Record] = []
    kind = None if fmt == DatasetFormat.AUTO else DatasetFormat(fmt)
    origin = "from dataset.format"
    for lineno, line in enumerate(LINE_BREAK.split(text), start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        record = decode_json(line, where)
        if kind is None:
            kind, origin = detect_format(record, where), f"detected from line {lineno}"
        records.append(record_values(record, kind, where, origin))
    if not records:
        raise DataError(f"{source}: the dataset has no records")
    return records


def encode_records(
    records: Sequence[Record], tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each record becomes ``bos + prompt + completion + eos``, or what the tokenizer's
    ``encode_examples`` makes of it (a Hugging Face tokenizer: its own BOS rule and chat template;
    the whole group encoded in one batch call).

    Returns ``(tokens int32, weights uint8, lengths int64)``: the records' tokens concatenated, a
    weight per token saying whether predicting that token is trained (0 for bos and the prompt, 1
    for the completion or text and its eos), and each record's token count.
    """
    if getattr(tokenizer, "encodes_utf8_bytes", False):
        return _encode_bytes(records, tokenizer.bos_id, tokenizer.eos_id)
    encode_documents = getattr(tokenizer, "encode_documents", None)
    if encode_documents is not None and not any(prompt for prompt, _ in records):
        bodies = encode_documents([text for _, text in records])
        lengths = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
        flat = np.fromiter(chain.from_iterable(bodies), dtype=np.int32, count=int(lengths.sum()))
        return _frame_documents(flat, lengths, tokenizer.document_bos, tokenizer.eos_id)
    encode_examples = getattr(tokenizer, "encode_examples", None)
    if encode_examples is not None:
        examples = encode_examples(records)
    else:
        examples = [
            (
                [tokenizer.bos_id, *(tokenizer.encode(prompt) if prompt else [])],
                [*tokenizer.encode(completion), tokenizer.eos_id],
            )
            for prompt, completion in records
        ]
    pieces = [ids for example in examples for ids in example]
    piece_lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    tokens = np.fromiter(chain.from_iterable(pieces), dtype=np.int32, count=int(piece_lengths.sum()))
    weights = np.repeat(np.tile(np.asarray([0, 1], np.uint8), len(examples)), piece_lengths)
    return tokens, weights, piece_lengths.reshape(-1, 2).sum(axis=1)


def _frame_documents(
    flat: np.ndarray, lengths: np.ndarray, bos: int | None, eos: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``encode_records`` of text records from their bodies' ids (``flat``, ``lengths`` per record):
    each becomes ``[bos] + body + [eos]`` (no bos when ``bos`` is None), trained on all but bos."""
    framed = lengths + (2 if bos is not None else 1)
    ends = np.cumsum(framed)
    tokens = np.empty(int(ends[-1]) if ends.size else 0, dtype=np.int32)
    weights = np.ones(tokens.size, dtype=np.uint8)
    body = np.ones(tokens.size, dtype=bool)
    body[ends - 1], tokens[ends - 1] = False, eos
    if bos is not None:
        starts = ends - framed
        body[starts], tokens[starts], weights[starts] = False, bos, 0
    tokens[body] = flat
    return tokens, weights, framed


def _encode_bytes(records: Sequence[Record], bos: int, eos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``encode_records`` for the byte tokenizer, in a few array operations: each record is
    ``[bos] + prompt bytes + completion bytes + [eos]``."""
    texts = [text.encode("utf-8") for record in records for text in record]
    sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).reshape(-1, 2)
    pieces = np.column_stack([np.ones(len(records), np.int64), sizes, np.ones(len(records), np.int64)])
    lengths = pieces.sum(axis=1)
    tokens = np.empty(int(lengths.sum()), dtype=np.int32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    body = np.ones(tokens.size, dtype=bool)
    body[starts] = body[ends - 1] = False
    tokens[starts], tokens[ends - 1] = bos, eos
    tokens[body] = np.frombuffer(b"".join(texts), dtype=np.uint8)
    weights = np.repeat(np.tile(np.asarray([0, 0, 1, 1], np.uint8), len(records)), pieces.reshape(-1))
    return tokens, weights, lengths


def tokenize_documents(
    records: Sequence[Record], tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``encode_records`` with document boundaries as offsets (``offsets[i]:offsets[i+1]``)."""
    tokens, weights, lengths = encode_records(records, tokenizer)
    return tokens, weights, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
