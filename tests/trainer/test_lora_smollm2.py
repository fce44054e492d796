"""Evaluation and LoRA on a real pretrained model: SmolLM2-135M-Instruct (converted as in
test_pretrained_smollm2; skipped with the reason where it cannot be). Its training data and its
held-out data are English prose nobody here wrote: chapters of the Python language reference that
Python ships for help() (pydoc_data), 20% of them held out by record. A short LoRA fine-tune and a
short full fine-tune of the same steps both lower the loss on the held-out chapters, recorded
before training (the step-0 evaluation) and after it; the LoRA run's checkpoint is a small
fraction of the full run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.trainer.conftest import read_jsonl
from tests.trainer.test_pretrained_smollm2 import smollm2_dir  # noqa: F401 (a fixture)
from tunix_trainer.config import load_run
from tunix_trainer.loop import train

STEPS = 4
TOPICS = 40  # chapters: 32 train, 8 held out


def _chapters(path: Path) -> Path:
    from pydoc_data.topics import topics

    names = sorted(topics)[:TOPICS]
    path.write_text("".join(json.dumps({"text": topics[name][:4000]}) + "\n" for name in names))
    return path


def _run(root: Path, model_dir: Path, **training) -> tuple[dict, list[dict], int]:
    spec = {
        "model": {"pretrained": {"uri": str(model_dir)}},
        "dataset": {"uri": str(_chapters(root / "docs.jsonl")), "tokenizer": {"kind": "huggingface"}},
        "training": {
            "steps": STEPS,
            "batchSize": 4,
            "seqLen": 64,
            "warmupSteps": 1,
            "decay": "constant",
            "weightDecay": 0.0,
            "computeDtype": "float32",
            **training,
        },
        "evaluation": {"holdOutFraction": 0.2, "maxBatches": 2},
        "checkpoint": {"saveIntervalSteps": 100, "maxToKeep": 1},
    }
    doc = {"apiVersion": "tunix.dev/v1alpha1", "kind": "TunixRun", "metadata": {"name": "s"}, "spec": spec}
    (root / "run.yaml").write_text(yaml.safe_dump(doc))
    art = root / "art"
    summary = train(load_run(root / "run.yaml"), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    evals = [r for r in read_jsonl(art / "metrics.jsonl") if r.get("kind") == "eval"]
    ckpt_bytes = sum(p.stat().st_size for p in (art / "ckpt" / str(STEPS)).rglob("*") if p.is_file())
    return summary, evals, ckpt_bytes


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two fine-tunes of a 135M model on a shared 2-core machine
def test_lora_and_full_fine_tunes_both_lower_the_held_out_loss(smollm2_dir, tmp_path):  # noqa: F811
    (tmp_path / "lora").mkdir()
    (tmp_path / "full").mkdir()
    lora = {
        "rank": 8,
        "alpha": 16,
        "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }
    lora_summary, lora_evals, lora_bytes = _run(tmp_path / "lora", smollm2_dir, learningRate=2e-3, lora=lora)
    full_summary, full_evals, full_bytes = _run(tmp_path / "full", smollm2_dir, learningRate=5e-5)
    for name, evals, summary, size in (
        ("LoRA r=8", lora_evals, lora_summary, lora_bytes),
        ("full", full_evals, full_summary, full_bytes),
    ):
        assert [r["step"] for r in evals] == [0, STEPS]
        before, after = evals[0]["loss"], evals[-1]["loss"]
        print(
            f"SmolLM2 {name}: held-out loss {before:.4f} -> {after:.4f} nats/token over {evals[0]['tokens']} "
            f"tokens after {STEPS} steps of 4 x 64 tokens; train loss {summary['final_loss']:.4f}; "
            f"checkpoint {size / 2**20:.1f} MiB"
        )
        assert after < before
        assert summary["final_eval_loss"] == after and summary["best_eval_loss"] <= after
    assert lora_evals[0]["loss"] == pytest.approx(full_evals[0]["loss"], rel=1e-5)  # B = 0: the same model
    assert lora_bytes < 0.05 * full_bytes  # adapters + their optimizer state only
