"""tools/convert_gguf.py on a GGUF file written here with the gguf package the way llama.cpp's
converter writes one: q/k rows permuted for llama.cpp's RoPE (its formula, copied below as the
reference), an embedding quantized to Q8_0, a byte-level BPE vocabulary with merges. The
converter must give back the Hugging Face tensors and an equivalent tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from tools.convert_gguf import ConversionError, convert, main, unpermute_rows  # noqa: E402

D, F, HEADS, KV_HEADS, LAYERS = 64, 96, 4, 2, 2
HEAD_DIM = D // HEADS
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at"]


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's ``LlamaModel.permute`` (the forward direction)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def hf_weights(vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    out = {"model.embed_tokens.weight": normal(vocab, D), "model.norm.weight": normal(D)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": normal(D),
            p + "post_attention_layernorm.weight": normal(D),
            p + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, D),
            p + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, D),
            p + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, D),
            p + "self_attn.o_proj.weight": normal(D, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": normal(F, D),
            p + "mlp.up_proj.weight": normal(F, D),
            p + "mlp.down_proj.weight": normal(D, F),
        }
    return out


def byte_level_vocabulary() -> list[str]:
    from tokenizers import pre_tokenizers

    merged = [m.replace(" ", "") for m in MERGES]
    return SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()) + merged


def write_gguf(path: Path, weights: dict[str, np.ndarray], tokens: list[str], arch: str = "llama") -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(F)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer_names = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }  # fmt: skip
    for name, array in weights.items():
        if name in names:
            gguf_name = names[name]
        else:
            _, _, i, rest = name.split(".", 3)
            gguf_name = f"blk.{i}.{layer_names[rest.removesuffix('.weight')]}.weight"
        if name.endswith("q_proj.weight"):
            array = llama_cpp_permute(array, HEADS)
        elif name.endswith("k_proj.weight"):
            array = llama_cpp_permute(array, KV_HEADS)
        if name == "model.embed_tokens.weight":
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gguf_name, gguf.quants.quantize(array, q8), raw_dtype=q8)
        else:
            writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
    for heads in (1, 2, 4):
        np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(w, heads), heads), w)
    assert not np.array_equal(llama_cpp_permute(w, 4), w)


def test_conversion_recovers_the_hf_tensors_config_and_tokenizer(tmp_path):
    tokens = byte_level_vocabulary()
    weights = hf_weights(len(tokens))
    write_gguf(tmp_path / "m.gguf", weights, tokens)
    out = convert(tmp_path / "m.gguf", tmp_path / "hf")

    tensors = load_file(str(out / "model.safetensors"))
    assert sorted(tensors) == sorted(weights)  # tied: no lm_head
    for name, array in weights.items():
        if name == "model.embed_tokens.weight":
            # Q8_0: blocks of 32 share a scale d = max|x| / 127 stored as float16 (relative error
            # 2^-11), so each value is off by at most d/2 (rounding) + 127 * d * 2^-11 (the scale).
            scale = np.abs(array.reshape(-1, 32)).max(axis=1) / 127
            bound = np.repeat(scale * (0.5 + 127 * 2.0**-11), 32).reshape(array.shape)
            assert (np.abs(tensors[name] - array) <= bound + 1e-6).all()
        else:
            np.testing.assert_array_equal(tensors[name], array, err_msg=name)  # q/k un-permuted exactly

    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_key_value_heads"]) == (
        "llama",
        D,
        KV_HEADS,
    )
    assert config["tie_word_embeddings"] is True and config["rope_theta"] == 100000.0
    assert config["rms_norm_eps"] == 1e-5 and config["vocab_size"] == len(tokens)

    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["bos_token"] == "<|im_start|>" and tokenizer_config["eos_token"] == "<|im_end|>"
    assert "chat_template" in tokenizer_config
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = tokenizer.encode("the cat<|im_end|> 42").ids
    pieces = [tokens[i] for i in ids]
    assert pieces == ["t", "he", "Ġcat", "<|im_end|>", "Ġ", "4", "2"]  # merges, specials, single digits
    assert tokenizer.decode(ids, skip_special_tokens=False) == "the cat<|im_end|> 42"
    assert not (tmp_path / "hf.tmp").exists()


def test_unsupported_architecture_is_refused_with_its_name(tmp_path, capsys):
    tokens = byte_level_vocabulary()
    write_gguf(tmp_path / "m.gguf", hf_weights(len(tokens)), tokens, arch="qwen2")
    with pytest.raises(ConversionError, match=r"general\.architecture 'qwen2' is not supported"):
        convert(tmp_path / "m.gguf", tmp_path / "hf")
    assert main([str(tmp_path / "m.gguf"), "--output", str(tmp_path / "hf")]) == 2
    assert "qwen2" in capsys.readouterr().err
