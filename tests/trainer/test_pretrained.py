"""Hugging Face-format models in and out, against the committed random 2-layer Llama fixture
(tests/fixtures/make_tiny_llama.py): logits versus an independent numpy Llama written here from
the Hugging Face/Meta definitions, llama3 RoPE frequencies, untied heads, sharded weights,
export round trips, and every bad input failing with one clear line and its exit code."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tunix_trainer.data import DataError
from tunix_trainer.devices import make_mesh
from tunix_trainer.errors import ConfigError
from tunix_trainer.model import rope_frequencies
from tunix_trainer.presets import RopeScaling
from tunix_trainer.pretrained.export import export_model
from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
from tunix_trainer.pretrained.loader import PretrainedModel
from tunix_trainer.pretrained.source import ModelFiles

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-llama"
TEXT = "The quick brown fox jumps over the lazy dog. 0123456789"


# --- an independent reference: Llama's forward pass in float64 numpy ----------------------------
def llama3_inv_freq_reference(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """Meta's ``apply_scaling`` (llama-models, Llama 3.1), element by element."""
    freqs = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(freq)
        elif wavelen > old / low:
            out.append(freq / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return np.asarray(out)


def reference_logits(directory: Path, ids: list[int]) -> np.ndarray:
    """``LlamaForCausalLM`` as transformers defines it (x @ W.T projections, rotate-half RoPE,
    repeated KV heads, causal softmax, SiLU-gated MLP, RMSNorm), in float64."""
    cfg = json.loads((directory / "config.json").read_text())
    w: dict[str, np.ndarray] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        w |= {k: v.astype(np.float64) for k, v in load_file(str(shard)).items()}
    d, nh, nk = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, t = d // nh, cfg["rms_norm_eps"], len(ids)

    def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight

    inv_freq = llama3_inv_freq_reference(hd, cfg["rope_theta"], cfg["rope_scaling"])
    angles = np.arange(t)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))

    def rope(x: np.ndarray) -> np.ndarray:  # [t, heads, hd]
        rotated = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], axis=-1)
        return x * cos[:, None] + rotated * sin[:, None]

    x = w["model.embed_tokens.weight"][ids]
    causal = np.triu(np.full((t, t), -np.inf), k=1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, nh, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, nk, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, nk, hd)
        k, v = np.repeat(k, nh // nk, axis=1), np.repeat(v, nh // nk, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(t, nh * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mesh():
    return make_mesh(jax.devices("cpu")[:1])


def load(directory: Path | str, mesh):
    """(model config, Transformer, tokenizer) of an HF directory, in float32."""
    pretrained = PretrainedModel(str(directory))
    tokenizer = load_hf_tokenizer(pretrained.files, fallback_ids=pretrained.config)
    cfg = pretrained.model_config(tokenizer.vocab_size, "float32", "float32")
    return cfg, pretrained.model(cfg, mesh), tokenizer


def logits_of(model, ids: list[int]) -> np.ndarray:
    return np.asarray(model(jnp.asarray([ids], jnp.int32))[0], np.float64)


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(FIXTURE, target)
    return target


def edit_json(path: Path, **changes) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


# --- the loader --------------------------------------------------------------------------------
def test_fixture_logits_equal_an_independent_numpy_llama(mesh):
    cfg, model, tokenizer = load(FIXTURE, mesh)
    assert not cfg.tie_embeddings and cfg.rope_scaling is not None and cfg.n_kv_heads == 2
    assert (cfg.vocab_size, cfg.valid_vocab_size) == (384, 259)  # 262 rows padded to 384; 259 ids
    ids = tokenizer.encode(TEXT)
    ours = logits_of(model, ids)[:, :262]
    reference = reference_logits(FIXTURE, ids)
    # float32 against float64: each logit is a sum of 32 products after two layers of float32
    # matmuls, norms and softmax; relative rounding ~1e-6 per operation, amplified at most ~100x.
    scale = np.abs(reference).max()
    print(f"max |logit| {scale:.2f}, max |ours - reference| {np.abs(ours - reference).max():.2e}")
    np.testing.assert_allclose(ours, reference, atol=1e-4 * scale, rtol=0)
    assert np.argmax(ours, -1).tolist() == np.argmax(reference, -1).tolist()


def test_llama3_rope_frequencies_equal_the_reference_formula():
    scaling = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    ours = rope_frequencies(128, 500_000.0, RopeScaling(**scaling))
    reference = llama3_inv_freq_reference(128, 500_000.0, scaling)
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=2e-6)  # float32 against float64
    unscaled = np.asarray(rope_frequencies(128, 500_000.0))
    assert (np.asarray(ours) < unscaled).sum() > 0 and np.asarray(ours)[0] == unscaled[0]  # both regimes hit


def test_tokenizer_special_tokens_bos_rule_and_chat_template():
    tokenizer = load_hf_tokenizer(ModelFiles(str(FIXTURE)))
    assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (259, 0, 1, 2)
    assert tokenizer.add_bos and not tokenizer.add_eos  # its post-processor adds <s>, like Llama's
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    (text_prompt, text_completion), (chat_prompt, chat_completion) = tokenizer.encode_examples(
        [("", "hi"), ("What is 2 + 2?", "4")]
    )
    assert text_prompt == [0] and text_completion == [*tokenizer.encode("hi"), 1]
    head, tail = tokenizer.chat_pair("What is 2 + 2?", "4")
    assert head == "<s><|user|>\nWhat is 2 + 2?</s>\n<|assistant|>\n" and tail == "4</s>\n"
    assert chat_prompt == tokenizer.encode(head) and chat_completion == tokenizer.encode(tail)
    assert chat_prompt[0] == 0 and chat_completion[-2] == 1  # the template wrote <s> and </s>


@pytest.mark.parametrize("add_bos", [True, False])
def test_text_records_are_framed_as_their_examples_say(add_bos):
    """The data pipeline's array path for text records (``encode_documents``) gives the tokens and
    weights that ``encode_examples`` gives: ``[bos] + text + eos``, trained on all but bos."""
    from tunix_trainer.data_records import encode_records

    tokenizer = load_hf_tokenizer(ModelFiles(str(FIXTURE)))
    tokenizer.add_bos = add_bos
    records = [("", TEXT), ("", ""), ("", "hi there"), ("", TEXT[:7])]

    class ExamplesOnly:  # the same tokenizer without the array path
        bos_id, eos_id, encode_examples = tokenizer.bos_id, tokenizer.eos_id, tokenizer.encode_examples

    framed, expected = encode_records(records, tokenizer), encode_records(records, ExamplesOnly())
    for ours, theirs in zip(framed, expected, strict=True):
        assert ours.dtype == theirs.dtype and ours.tolist() == theirs.tolist()
    examples = tokenizer.encode_examples(records)
    assert framed[0].tolist() == [t for prompt, completion in examples for t in prompt + completion]
    assert framed[2].tolist() == [len(p) + len(c) for p, c in examples]
    assert framed[0][0] == (tokenizer.bos_id if add_bos else tokenizer.encode(TEXT)[0])


def test_a_chat_template_file_is_read_when_tokenizer_config_has_none(tmp_path):
    model = copy_fixture(tmp_path)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "chat_template.jinja").write_text(config.pop("chat_template"))
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_hf_tokenizer(ModelFiles(str(model)))
    assert tokenizer.chat_pair("hi", "yo") == ("<s><|user|>\nhi</s>\n<|assistant|>\n", "yo</s>\n")


def test_sft_batches_train_the_completion_only(tmp_path):
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator

    tokenizer = load_hf_tokenizer(ModelFiles(str(FIXTURE)))
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "2 + 2?", "completion": "4"}\n')
    batch = next(
        BatchIterator(DatasetSpec(uri=str(data), packing=False), tokenizer, batch_size=1, seq_len=40, seed=0)
    )
    head, tail = tokenizer.chat_pair("2 + 2?", "4")
    prompt, completion = tokenizer.encode(head), tokenizer.encode(tail)
    row = [*prompt, *completion]
    assert batch.inputs[0, : len(row) - 1].tolist() == row[:-1]
    trained = [t for t, m in zip(batch.targets[0], batch.loss_mask[0], strict=True) if m]
    assert trained == completion  # "4</s>\n": the answer and the template's end of turn
    assert (
        batch.targets[0, len(row) - 1] == tokenizer.pad_id and batch.loss_mask[0, len(row) - 1 :].sum() == 0
    )


# --- export ------------------------------------------------------------------------------------
def test_export_of_the_loaded_model_equals_the_original_and_reloads_to_the_same_logits(tmp_path, mesh):
    from flax import nnx

    cfg, model, tokenizer = load(FIXTURE, mesh)
    pretrained = PretrainedModel(str(FIXTURE))
    out = tmp_path / "export"
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    export_model(
        str(out), params, cfg, vocab_size=262, base_config=pretrained.config, tokenizer_files=tokenizer.files
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    original = {}
    for shard in FIXTURE.glob("*.safetensors"):
        original |= load_file(str(shard))
    exported = load_file(str(out / "model.safetensors"))
    assert sorted(exported) == sorted(original)  # lm_head included: the head stays untied
    for name, array in original.items():
        np.testing.assert_array_equal(exported[name], array, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["tie_word_embeddings"] is False
    _, reloaded, _ = load(out, mesh)
    ids = tokenizer.encode(TEXT)
    np.testing.assert_array_equal(logits_of(reloaded, ids), logits_of(model, ids))


# --- the vocabulary mask -------------------------------------------------------------------------
def test_a_random_model_starts_at_ln_of_the_real_vocabulary(mesh):
    """Padded vocabulary rows get no probability: the init loss of a random model with the byte
    tokenizer (259 ids, 384 rows) is ln(259), not ln(384) - or worse, as before the mask."""
    from flax import nnx

    from tunix_api.training import ModelSpec
    from tunix_trainer.model import Transformer, resolve_model_config
    from tunix_trainer.train_step import token_loss_sums

    cfg = resolve_model_config(ModelSpec(preset="tiny"), tokenizer_vocab_size=259, compute_dtype="float32")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 259, size=(8, 65)), jnp.int32)
    logits = model(tokens[:, :-1])
    mask = jnp.ones(tokens[:, 1:].shape)
    loss, count = token_loss_sums(logits, tokens[:, 1:], mask, cfg.valid_vocab_size)
    unmasked, _ = token_loss_sums(logits, tokens[:, 1:], mask)
    masked_loss, unmasked_loss = float(loss / count), float(unmasked / count)
    print(f"init loss {masked_loss:.4f} (ln 259 = {math.log(259):.4f}); unmasked {unmasked_loss:.4f}")
    # For logits with a small spread s over the ids, the mean loss is ln(V) + s^2 / 2 to leading
    # order (a softmax's log-sum-exp over near-equal values); at init s is ~0.3.
    spread = float(jnp.mean(jnp.var(logits[..., :259].astype(jnp.float32), axis=-1)))
    print(f"logit variance {spread:.4f}: expected loss ~ {math.log(259) + spread / 2:.4f}")
    assert math.log(259) < masked_loss < math.log(259) + spread
    assert unmasked_loss > masked_loss + 0.3  # ln(384) - ln(259) = 0.39


# --- bad inputs ----------------------------------------------------------------------------------
def test_a_missing_config_json_names_the_file(tmp_path):
    model = copy_fixture(tmp_path)
    (model / "config.json").unlink()
    with pytest.raises(DataError, match=r"model/config.json: no such file"):
        PretrainedModel(str(model))


def test_a_shard_missing_from_the_index_names_the_tensor(tmp_path, mesh):
    model = copy_fixture(tmp_path)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        DataError, match=r"index.json: no shard for tensor 'model.layers.1.mlp.up_proj.weight'"
    ):
        load(model, mesh)


def test_a_missing_shard_file_names_it(tmp_path, mesh):
    model = copy_fixture(tmp_path)
    (model / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(DataError, match=r"model-00002-of-00002.safetensors: shard listed in .* is missing"):
        load(model, mesh)


def test_a_tensor_of_the_wrong_shape_names_file_tensor_and_shapes(tmp_path, mesh):
    model = copy_fixture(tmp_path)
    shard = model / "model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    save_file(tensors, str(shard))
    with pytest.raises(
        DataError,
        match=r"00001-of-00002.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape "
        r"\(8, 32\), config.json implies \(16, 32\)",
    ):
        load(model, mesh)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "qwen2"}, "model_type 'qwen2' is not supported"),
        ({"attention_bias": True}, "attention_bias true is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn' is not supported"),
    ],
)
def test_unsupported_models_fail_on_config_json_alone(tmp_path, changes, message):
    model = copy_fixture(tmp_path)
    edit_json(model / "config.json", **changes)
    for shard in model.glob("*.safetensors"):  # nothing but config.json is read
        shard.unlink()
    with pytest.raises(ConfigError, match=re.escape(message)):
        PretrainedModel(str(model))


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    model = copy_fixture(tmp_path)
    edit_json(model / "config.json", vocab_size=200)
    pretrained = PretrainedModel(str(model))
    with pytest.raises(
        DataError, match=r"the tokenizer has 259 tokens, more than vocab_size 200 of .*config.json"
    ):
        pretrained.model_config(259, "float32", "float32")


def test_an_offline_hub_uri_is_a_data_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        DataError, match=r"hf://HuggingFaceTB/SmolLM2-135M-Instruct@main/config.json: cannot download"
    ):
        PretrainedModel("hf://HuggingFaceTB/SmolLM2-135M-Instruct@main")


# --- through the CLI: one line, the documented exit code, no traceback ----------------------------
def _write_run(tmp_path: Path, model: Path) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "What is 2 + 2?", "completion": "4"}\n' * 8)
    run = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "bad-model"},
        "spec": {
            "model": {"pretrained": {"uri": str(model)}},
            "dataset": {"uri": str(data), "tokenizer": {"kind": "huggingface"}},
            "training": {"steps": 1, "batchSize": 1, "seqLen": 16, "computeDtype": "float32"},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(run))
    return path


@pytest.mark.parametrize(
    ("break_model", "code", "text"),
    [
        (lambda m: (m / "config.json").unlink(), 4, "config.json: no such file"),
        (
            lambda m: edit_json(m / "config.json", model_type="gemma"),
            2,
            "model_type 'gemma' is not supported",
        ),
        (lambda m: (m / "model-00001-of-00002.safetensors").unlink(), 4, "00001-of-00002.safetensors: shard"),
    ],
    ids=["missing-config", "unsupported-type", "missing-shard"],
)
def test_the_cli_reports_bad_models_in_one_line(tmp_path, capsys, break_model, code, text):
    from tunix_trainer import cli

    model = copy_fixture(tmp_path)
    break_model(model)
    assert (
        cli.main(
            [
                "run",
                str(_write_run(tmp_path, model)),
                "--local",
                "--no-progress",
                "--artifacts",
                str(tmp_path / "artifacts"),
            ]
        )
        == code
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("tunix-rt: ") and text in line for line in err.splitlines()), err


def test_a_from_scratch_run_exports_at_every_nth_save_and_at_the_end(tmp_path, monkeypatch, mesh):
    from tools.seed_dataset import seed_dataset
    from tunix_trainer import loop
    from tunix_trainer.config import parse_run

    calls: list[str] = []

    class CountingExporter(loop.ModelExporter):
        def __call__(self, state):
            calls.append(self.uri)
            return super().__call__(state)

    monkeypatch.setattr(loop, "ModelExporter", CountingExporter)
    seed_dataset("text", 60, 1, str(tmp_path / "d.jsonl"))
    spec = {
        "model": {"preset": "tiny"},
        "dataset": {"uri": str(tmp_path / "d.jsonl")},
        "training": {"steps": 4, "batchSize": 2, "seqLen": 32, "computeDtype": "float32"},
        "checkpoint": {"saveIntervalSteps": 2, "exportEverySaves": 1},
    }
    out = tmp_path / "artifacts"
    summary = loop.train(parse_run(spec), artifacts_uri=str(out), checkpoint_uri=str(tmp_path / "ckpt"))
    assert calls == [str(out / "model")] * 2  # saves at steps 2 and 4; the end export is that of step 4
    assert summary["model_uri"] == str(out / "model")
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["vocab_size"], config["tie_word_embeddings"]) == (259, True)
    pretrained = PretrainedModel(str(out / "model"))
    cfg = pretrained.model_config(259, "float32", "float32")
    assert logits_of(pretrained.model(cfg, mesh), [1, 2, 3]).shape == (3, 384)


def test_a_model_on_an_object_store_loads_like_the_local_one_and_leaves_no_copies(mesh):
    """fsspec's in-memory filesystem stands for s3:// or gs://: files are fetched one by one into a
    temporary directory, which is deleted once the weights are on the device."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in FIXTURE.iterdir():
        fs.pipe(f"/models/tiny/{path.name}", path.read_bytes())
    remote = PretrainedModel("memory://models/tiny")
    cfg = remote.model_config(259, "float32", "float32")
    model = remote.model(cfg, mesh)
    assert remote.files._cache_dir is None  # the downloaded copies are gone
    _, local, tokenizer = load(FIXTURE, mesh)
    ids = tokenizer.encode(TEXT)
    np.testing.assert_array_equal(logits_of(model, ids), logits_of(local, ids))
    fs.rm("/models/tiny", recursive=True)
