"""LoRA fine-tuning (spec.training.lora) on the committed random 2-layer Llama fixture: adapters
start as the base model, only they train and have optimizer state, checkpoints hold them alone and
resume exactly, the PEFT export has PEFT's names and layout (checked by merging it in numpy into
the independent numpy Llama of test_pretrained), the merged export computes what base + adapters
computed, bfloat16 base weights, and bad inputs fail in one line with exit 2."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from safetensors.numpy import load_file, save_file

from tests.trainer.conftest import read_jsonl, stop_at, write_dataset
from tests.trainer.test_pretrained import FIXTURE, reference_logits
from tunix_api.training import LoraSpec, TrainingSpec
from tunix_trainer.config import load_run
from tunix_trainer.devices import make_mesh
from tunix_trainer.errors import ConfigError, PreemptedError
from tunix_trainer.loop import train
from tunix_trainer.lora import add_adapters, check_lora, count_adapter_params, projection_shapes
from tunix_trainer.pretrained.loader import PretrainedModel, init_train_state_from
from tunix_trainer.pretrained.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targetModules": ALL_TARGETS}
IDS = [5, 17, 42, 99, 3, 250, 7, 61, 8, 120]


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(jax.devices("cpu")[:1])


def _doc(root: Path, steps: int = 8, **spec_overrides) -> dict:
    spec = {
        "model": {"pretrained": {"uri": str(FIXTURE)}},
        "dataset": {"uri": str(write_dataset(root / "data.jsonl")), "tokenizer": {"kind": "huggingface"}},
        "training": {
            "steps": steps,
            "batchSize": 4,
            "seqLen": 16,
            "learningRate": 1.0e-2,
            "warmupSteps": 2,
            "computeDtype": "float32",
            "lora": LORA,
        },
        "checkpoint": {"saveIntervalSteps": 4, "maxToKeep": 2},
        "metrics": {"flushEverySteps": 2, "progressIntervalSeconds": 0},
        "export": {"mergeAdapters": True},
    }
    for key, value in spec_overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "lora"},
        "spec": spec,
    }


def _config(root: Path, **spec_overrides) -> Path:
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(_doc(root, **spec_overrides)), encoding="utf-8")
    return path


def _losses(art: Path) -> dict[int, float]:
    return {
        r["step"]: r["loss"] for r in read_jsonl(art / "metrics.jsonl") if r.get("kind", "train") == "train"
    }


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """An uninterrupted LoRA run of 8 steps with the merged export: (config, losses, artifacts)."""
    root = tmp_path_factory.mktemp("lora")
    config = _config(root)
    art = root / "art"
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert summary["total_steps"] == 8
    return config, _losses(art), art, summary


def _lora_training(**lora) -> TrainingSpec:
    return TrainingSpec(steps=4, batch_size=2, seq_len=8, lora=LoraSpec(**{**LORA, **lora}))


# -- the model ---------------------------------------------------------------------------------
def test_adapters_start_as_the_base_model_and_only_they_have_optimizer_state(mesh):
    pretrained = PretrainedModel(str(FIXTURE))
    cfg = pretrained.model_config(262, "float32", "float32")
    base = pretrained.model(cfg, mesh)
    tokens = jnp.asarray([IDS], jnp.int32)
    training = _lora_training()
    ts = init_train_state_from(pretrained.load_params(cfg, mesh), cfg, training, mesh)
    model, optimizer = nnx.merge(ts.graphdef, ts.state)
    # B = 0 at initialisation: exactly the base model
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(base(tokens)))
    adapters = nnx.state(model, nnx.LoRAParam)
    n_adapter = sum(x.size for x in jax.tree.leaves(adapters))
    assert (
        n_adapter
        == count_adapter_params(cfg, training.lora)
        == 2 * 4 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + 2 * (32 + 64) + (64 + 32))
    )
    moments = [x for x in jax.tree.leaves(nnx.state(optimizer)) if x.ndim > 0]  # besides step counters
    assert sum(x.size for x in moments) == 2 * n_adapter  # AdamW's mu and nu of each adapter matrix
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(adapters))


def test_dropout_is_off_without_rngs_and_on_with_them(mesh):
    cfg = PretrainedModel(str(FIXTURE)).model_config(262, "float32", "float32")
    from tunix_trainer.model import Transformer

    model = Transformer(cfg, rngs=nnx.Rngs(0))
    add_adapters(model, LoraSpec(**{**LORA, "dropout": 0.5}), seed=0)
    for block in model.blocks:  # non-zero B, so the adapters' input matters
        for layer in (*block.attn.lora.layers.values(), *block.mlp.lora.layers.values()):
            layer.lora_b[...] = jnp.full(layer.lora_b[...].shape, 0.1)
    tokens = jnp.asarray([IDS], jnp.int32)
    plain = np.asarray(model(tokens))
    np.testing.assert_array_equal(np.asarray(model(tokens)), plain)  # deterministic without rngs
    dropped = np.asarray(model(tokens, nnx.Rngs(dropout=1)))
    assert not np.allclose(dropped, plain)


def test_rank_larger_than_a_projection_names_the_field():
    cfg = PretrainedModel(str(FIXTURE)).model_config(262, "float32", "float32")
    assert projection_shapes(cfg)["k_proj"] == (32, 16)
    check_lora(LoraSpec(rank=16, target_modules=["k_proj"]), cfg)
    with pytest.raises(ConfigError, match=r"spec\.training\.lora\.rank: 17 is larger than k_proj .*32 -> 16"):
        check_lora(LoraSpec(rank=17, target_modules=["q_proj", "k_proj"]), cfg)
    check_lora(LoraSpec(rank=17, target_modules=["q_proj"]), cfg)  # q_proj is 32 -> 32


# -- training, checkpoints, resume --------------------------------------------------------------
def test_only_the_adapters_train_and_the_checkpoint_holds_no_base_weight(lora_run):
    _, losses, art, summary = lora_run
    assert sorted(losses) == list(range(1, 9))
    assert losses[8] < losses[1]
    # 2 layers x rank 4 x (in + out features) summed over the 7 projections
    assert summary["provenance"]["lora_parameters"] == 2 * 4 * 512
    meta = json.loads((art / "ckpt" / "8" / "meta" / "metadata").read_text())
    paths = list(meta["checksums"])
    assert paths and all("lora" in p or "step" in p or "count" in p for p in paths), paths
    assert not any(name in p for p in paths for name in ("qkv", "embed", "gate_up", "'down'", "scale"))


def test_a_preempted_lora_run_resumes_to_identical_losses(lora_run, tmp_path):
    config, expected, _, _ = lora_run
    art = tmp_path / "art"
    run = load_run(config)
    stop = threading.Event()
    with pytest.raises(PreemptedError) as info:
        train(
            run,
            artifacts_uri=str(art),
            checkpoint_uri=str(art / "ckpt"),
            stop_event=stop,
            on_progress=stop_at(5, stop),
        )
    assert info.value.step == 6
    train(run, artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert _losses(art) == expected  # exact: the frozen weights reload, adapters + dropout key resume


def test_a_full_checkpoint_is_refused_by_a_lora_run(lora_run, tmp_path):
    """Switching a run to LoRA after full checkpoints exist is a changed model: exit 2, named."""
    config, _, _, _ = lora_run
    root = config.parent
    full = _doc(root, steps=4)
    del full["spec"]["training"]["lora"], full["spec"]["export"]
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(full))
    art = tmp_path / "art"
    train(load_run(tmp_path / "full.yaml"), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    with pytest.raises(ConfigError, match=r"spec\.model: checkpoint 4 .* was saved by another model"):
        train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))


# -- export --------------------------------------------------------------------------------------
def test_the_peft_adapter_has_peft_names_layout_and_config(lora_run):
    _, _, art, summary = lora_run
    adapter = art / "adapter"
    assert summary["model_uri"] == str(art / "model")  # merged: the model is the result
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.1)
    assert config["target_modules"] == sorted(ALL_TARGETS)
    assert config["base_model_name_or_path"] == str(FIXTURE)
    tensors = load_file(str(adapter / ADAPTER_WEIGHTS))
    shapes = {"q_proj": (32, 32), "k_proj": (32, 16), "v_proj": (32, 16), "o_proj": (32, 32)}
    shapes |= {"gate_proj": (32, 64), "up_proj": (32, 64), "down_proj": (64, 32)}
    expected = {}
    for i in range(2):
        for target, (n_in, n_out) in shapes.items():
            group = "self_attn" if target[0] in "qkvo" else "mlp"
            name = f"{PEFT_PREFIX}model.layers.{i}.{group}.{target}"
            expected[f"{name}.lora_A.weight"] = (4, n_in)
            expected[f"{name}.lora_B.weight"] = (n_out, 4)
    assert {name: tensor.shape for name, tensor in tensors.items()} == expected
    assert all(np.abs(tensors[n]).max() > 0 for n in tensors if "lora_B" in n)  # B trained away from 0
    assert (adapter / "tokenizer.json").read_bytes() == (FIXTURE / "tokenizer.json").read_bytes()


def _peft_merge_in_numpy(adapter: Path, base: Path, out: Path) -> None:
    """What PEFT's merge_and_unload computes, from the files alone: W += (alpha / r) * B @ A for
    every adapted module (torch Linear weights, [out, in])."""
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / ADAPTER_WEIGHTS))
    shutil.copytree(base, out)
    for shard in sorted(out.glob("*.safetensors")):
        weights = load_file(str(shard))
        for name in list(weights):
            module = PEFT_PREFIX + name.removesuffix(".weight")
            if f"{module}.lora_A.weight" in tensors:
                a, b = tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"]
                weights[name] = (weights[name].astype(np.float64) + scale * b.astype(np.float64) @ a).astype(
                    np.float32
                )
        save_file(weights, str(shard))


def test_merged_export_equals_base_plus_adapters_and_peft_semantics(lora_run, mesh, tmp_path):
    """Three computations of the fine-tuned model agree: the trainer's own forward pass of base +
    adapters (restored from the last checkpoint), the merged export loaded by the project's loader,
    and the independent numpy Llama over the base weights merged with the PEFT files in numpy."""
    config, _, art, _ = lora_run
    run = load_run(config)
    pretrained = PretrainedModel(str(FIXTURE))
    cfg = pretrained.model_config(262, "float32", "float32")
    ts = init_train_state_from(pretrained.load_params(cfg, mesh), cfg, run.spec.training, mesh)
    from tunix_trainer.checkpoint import Checkpointer
    from tunix_trainer.lora import checkpointed, with_checkpointed
    from tunix_trainer.train_step import abstract_state

    ckpt = Checkpointer(str(art / "ckpt"), save_interval_steps=4, max_to_keep=2)
    restored = ckpt.restore("8", abstract_state(checkpointed(ts.state, run.spec.training)))
    ckpt.close()
    model, _ = nnx.merge(ts.graphdef, with_checkpointed(ts.state, restored.state, run.spec.training))
    ours = np.asarray(model(jnp.asarray([IDS], jnp.int32))[0], np.float64)

    merged = PretrainedModel(str(art / "model"))
    merged_model = merged.model(merged.model_config(262, "float32", "float32"), mesh)
    from_export = np.asarray(merged_model(jnp.asarray([IDS], jnp.int32))[0], np.float64)

    _peft_merge_in_numpy(art / "adapter", FIXTURE, tmp_path / "peft-merged")
    reference = reference_logits(tmp_path / "peft-merged", IDS)[:, :262]
    scale = np.abs(reference).max()
    print(f"max |logit| {scale:.3f}; merged vs base+adapters {np.abs(from_export - ours).max():.2e}, "
          f"numpy PEFT merge vs base+adapters {np.abs(reference - ours[:, :262]).max():.2e}")  # fmt: skip
    # float32 sums over at most 64 terms per matmul, 2 layers: errors of a few 1e-7 relative
    np.testing.assert_allclose(from_export, ours, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(ours[:, :262], reference, rtol=0, atol=1e-5 * scale)
    base_logits = reference_logits(FIXTURE, IDS)[:, :262]
    assert np.abs(base_logits - reference).max() > 100 * 1e-5 * scale  # the adapters changed the model


def test_peft_itself_loads_the_adapter_to_the_same_logits(lora_run):
    """Where peft, transformers and torch are installed: PEFT applies the adapter onto the base and
    gives the merged export's logits."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (on these machines PyPI's is a CUDA build of GBs)"
    )
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    peft = pytest.importorskip("peft", reason="peft is not installed")
    _, _, art, _ = lora_run
    base = transformers.AutoModelForCausalLM.from_pretrained(str(FIXTURE), dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(art / "adapter"))
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(art / "model"), dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([IDS])).logits[0].numpy()
        want = merged(torch.tensor([IDS])).logits[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_base_weights_in_bfloat16_adapters_and_their_state_in_float32(mesh):
    pretrained = PretrainedModel(str(FIXTURE))
    cfg = pretrained.model_config(262, "float32", "bfloat16")
    training = TrainingSpec(steps=2, batch_size=2, seq_len=8, param_dtype="bfloat16", lora=LoraSpec(**LORA))
    ts = init_train_state_from(pretrained.load_params(cfg, mesh), cfg, training, mesh)
    model, optimizer = nnx.merge(ts.graphdef, ts.state)
    base = jax.tree.leaves(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    assert base and all(x.dtype == jnp.bfloat16 for x in base)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
    moments = [x for x in jax.tree.leaves(nnx.state(optimizer)) if x.ndim > 0]
    assert moments and all(x.dtype == jnp.float32 for x in moments)


# -- bad input: one line, exit 2 ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("lora", "text"),
    [
        ({"rank": 0}, "spec.training.lora.rank"),
        ({"rank": 17, "targetModules": ["k_proj"]}, "spec.training.lora.rank: 17 is larger than k_proj"),
        ({"targetModules": ["qkv_proj"]}, "spec.training.lora.targetModules"),
        ({"targetModules": []}, "spec.training.lora.targetModules"),
        ({"targetModules": ["q_proj", "q_proj"]}, "must name each module at most once"),
    ],
    ids=["rank-0", "rank-over-projection", "unknown-target", "no-target", "duplicate-target"],
)
def test_bad_lora_settings_fail_in_one_line_with_exit_2(tmp_path, capsys, lora, text):
    from tunix_trainer import cli

    doc = _doc(tmp_path)
    doc["spec"]["training"]["lora"] = lora
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = cli.main(["run", str(path), "--local", "--no-progress", "--artifacts", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and text in err, err


def test_merge_adapters_without_lora_is_refused(tmp_path):
    doc = _doc(tmp_path)
    del doc["spec"]["training"]["lora"]
    with pytest.raises(ConfigError, match=r"export\.mergeAdapters needs training\.lora"):
        load_run(yaml.safe_dump(doc))


def test_a_lora_benchmark_trains_only_the_adapters_and_reports_their_optimizer_state(tmp_path, capsys):
    """``tunix-bench`` (and so ``tools/bench_sweep.py``'s ``lora=R`` cases) runs the LoRA step:
    benchmark.json's trainState counts the adapters as the trained parameters and holds AdamW's
    moments for them alone (two float32 arrays each, plus scalar step counters)."""
    import copy

    from tests.trainer.test_bench import TINY_BENCH
    from tunix_api.training import ModelSpec
    from tunix_trainer.bench import main
    from tunix_trainer.model import resolve_model_config
    from tunix_trainer.tokenizer import ByteTokenizer

    lora = {"rank": 4, "alpha": 8.0, "targetModules": ALL_TARGETS}
    states = {}
    for name, spec in (("full", None), ("lora", lora)):
        doc = copy.deepcopy(TINY_BENCH)
        doc["spec"]["benchmark"] = {"warmupSteps": 1, "measureSteps": 2}
        if spec is not None:
            doc["spec"]["training"]["lora"] = spec
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        out = tmp_path / name
        assert main(["--config", str(config), "--artifacts-uri", str(out), "--json"]) == 0
        states[name] = json.loads((out / "benchmark.json").read_text())["trainState"]
        assert "train state" not in capsys.readouterr().out  # --json: the document only
    cfg = resolve_model_config(
        ModelSpec(preset="tiny"),
        tokenizer_vocab_size=ByteTokenizer().vocab_size,
        compute_dtype="float32",
        param_dtype="float32",
    )
    adapters = count_adapter_params(cfg, LoraSpec.model_validate(lora))
    full, low_rank = states["full"], states["lora"]
    assert full["trainedParameters"] == full["parameters"]
    assert low_rank["trainedParameters"] == adapters == low_rank["parameters"] - full["parameters"]
    for state in (full, low_rank):
        moments = 2 * 4 * state["trainedParameters"]  # AdamW's mu and nu, float32
        assert moments <= state["optimizerBytes"] < moments + 64  # + a few int32 step counters
    print(f"optimizer state: full {full['optimizerBytes']:,} B, LoRA r=4 {low_rank['optimizerBytes']:,} B")
