"""The real trainer, on the golden dataset with examples/run.yaml's settings, learns clearly.

Issue requirement: the tiny preset's loss falls clearly on the golden dataset within a minute on
2 cores. This runs ``tunix-train`` itself (not a test-only loop) for 120 of the example's 300 steps
(about 10 s here); ``make run`` trains the full example.
"""

from __future__ import annotations

import json
import pathlib

import yaml

from tests.trainer.conftest import read_jsonl
from tools.seed_golden_dataset import main as seed_golden
from tunix_api.exit_codes import ExitCode
from tunix_trainer.train import main as train_main

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "run.yaml"
STEPS = 120


def test_tiny_preset_learns_the_golden_dataset(tmp_path: pathlib.Path, capsys) -> None:
    dataset = tmp_path / "golden.jsonl"
    assert seed_golden(["--output", str(dataset)]) == 0
    run = yaml.safe_load(EXAMPLE.read_text())
    assert run["spec"]["model"]["preset"] == "tiny"
    run["spec"]["dataset"]["uri"] = str(dataset)
    run["spec"]["training"]["steps"] = STEPS
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run))
    artifacts = tmp_path / "artifacts"

    code = train_main(["--config", str(config), "--artifacts-uri", str(artifacts), "--resume", "none"])

    assert code == ExitCode.SUCCESS
    losses = [r["loss"] for r in read_jsonl(artifacts / "metrics.jsonl")]
    assert len(losses) == STEPS
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert first > 5.0  # ~ln(vocab) at initialisation
    assert last < 0.4 * first, (first, last)  # clearly learned, not noise
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["best_loss"] <= last and summary["total_steps"] == STEPS
    capsys.readouterr()
