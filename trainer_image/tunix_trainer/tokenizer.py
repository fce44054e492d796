"""Tokenizers: a dependency-free byte tokenizer, SentencePiece models and Hugging Face ``tokenizer.json``
files (``tunix_trainer.pretrained.hf_tokenizer``), loaded from any fsspec URI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from tunix_api.training import TokenizerKind, TokenizerSpec
from tunix_trainer.artifact_io import open_uri, resolve_uri


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; then pad=256, bos=257, eos=258 (vocabulary 259)."""

    vocab_size = 259
    pad_id = 256
    bos_id = 257
    eos_id = 258
    encodes_utf8_bytes = True  # data_records encodes whole chunks of records as arrays

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text; special and out-of-range ids are dropped, invalid UTF-8 replaced."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A SentencePiece model read from ``uri`` (local path, file://, s3://, gs://, ...).

    Needs the optional ``sentencepiece`` package (``pip install tunix-rt[sentencepiece]``). A model
    without a pad piece pads with its eos id: padded positions are always masked out of the loss.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        try:
            import sentencepiece
        except ImportError as exc:
            raise ImportError(
                "tokenizer kind 'sentencepiece' needs the sentencepiece package: "
                "pip install 'tunix-rt[sentencepiece]' (or pip install sentencepiece)"
            ) from exc
        with open_uri(uri, "rb", storage_options) as f:
            proto = f.read()
        self._proto = proto
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        self.vocab_size = int(self._sp.get_piece_size())
        self.bos_id = int(self._sp.bos_id())
        self.eos_id = int(self._sp.eos_id())
        if self.bos_id < 0 or self.eos_id < 0:
            raise ValueError(f"SentencePiece model {uri} must define bos and eos pieces")
        pad = int(self._sp.pad_id())
        self.pad_id = pad if pad >= 0 else self.eos_id

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the data pipeline's worker processes get a copy): the model's bytes travel."""
        return {**self.__dict__, "_sp": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import sentencepiece

        self.__dict__.update(state)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._proto)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


def load_tokenizer(
    spec: TokenizerSpec,
    storage_options: dict[str, Any] | None = None,
    base_dir: str | None = None,
    model_uri: str | None = None,
) -> Tokenizer:
    """The tokenizer ``spec`` describes; a relative ``uri`` is resolved against ``base_dir`` (or cwd).
    A huggingface tokenizer without a ``uri`` is the one of the model directory ``model_uri``."""
    if spec.kind == TokenizerKind.BYTE:
        return ByteTokenizer()
    if spec.kind == TokenizerKind.SENTENCEPIECE:
        if not spec.uri:
            raise ValueError("tokenizer.uri is required when kind is sentencepiece")
        return SentencePieceTokenizer(resolve_uri(spec.uri, base_dir), storage_options)
    if spec.kind == TokenizerKind.HUGGINGFACE:
        from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
        from tunix_trainer.pretrained.source import ModelFiles

        uri = spec.uri or model_uri
        if not uri:
            raise ValueError("tokenizer.uri is required when kind is huggingface without model.pretrained")
        files = ModelFiles(uri, storage_options=storage_options, base_dir=base_dir)
        config = files.read_json("config.json", required=False) or {}
        return load_hf_tokenizer(files, fallback_ids=config)
    raise ValueError(f"unknown tokenizer kind {spec.kind!r}")
