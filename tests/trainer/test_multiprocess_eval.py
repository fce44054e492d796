"""Evaluation in a multi-process run: two ``tunix-train`` processes on the CPU (as
``test_multiprocess``: one device each, gloo collectives), each holding its rows of every evaluation
batch.

The evaluation set here is one record: its 47 target tokens fill rows of process 0 only, and
process 1's rows are all padding. The processes still agree (the "fewer than one sequence" check
counts the tokens of all of them) and report the eval losses of a one-process run; an evaluation
set that is too small fails on both processes with the same one-line error (exit 4), never on one
while the other waits in a collective.

Tolerance: an eval loss is a float32 sum of at most ``TOKENS`` masked cross-entropies (47 here)
divided by the token count, summed in another order by two processes (``data_parallel``: within
``2 * tokens * u`` relative), of parameters that drifted apart over ``step`` updates as the training
losses do: ``loss_tolerance(TOKENS, step + 1)``, the bound of the training loss computed after
those updates.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset
from tests.trainer.data_parallel import loss_tolerance
from tests.trainer.test_multiprocess import PROCESSES, World
from tunix_api.exit_codes import ExitCode

pytestmark = pytest.mark.slow

STEPS = 4
TOKENS = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]  # the most target tokens of a batch
ONE_ROW = "the quick brown fox jumps over a lazy dog twice"  # 47 target tokens: process 0's rows only


def _config(root: Path, eval_text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "eval.jsonl").write_text(json.dumps({"text": eval_text}) + "\n", encoding="utf-8")
    document = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "mp-eval"},
        "spec": {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(write_dataset(root / "data.jsonl"))},
            "device": {"kind": "cpu"},
            "training": {**SMALL_TRAINING, "steps": STEPS},
            "checkpoint": {"saveIntervalSteps": STEPS, "maxToKeep": 1},
            "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
            "evaluation": {"datasetUri": str(root / "eval.jsonl"), "everySteps": 2},
        },
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _evals(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r.get("kind") == "eval"]


def test_two_processes_evaluate_like_one_even_with_rows_on_one_process_only(tmp_path: Path) -> None:
    from tunix_trainer.train import main

    config = _config(tmp_path / "run", ONE_ROW)
    one = tmp_path / "one-process"
    argv = ["--config", str(config), "--artifacts-uri", str(one), "--resume", "none"]
    assert main(argv, stop_event=threading.Event()) == ExitCode.SUCCESS
    reference = _evals(one / "metrics.jsonl")
    assert [(r["step"], r["tokens"]) for r in reference] == [(0, 47), (2, 47), (4, 47)]

    (tmp_path / "two").mkdir()
    world = World(tmp_path / "two", config, resume="none")
    assert world.wait() == [ExitCode.SUCCESS] * PROCESSES, world.logs()
    evals = _evals(world.artifacts(0) / "metrics.jsonl")
    assert [(r["step"], r["tokens"]) for r in evals] == [(r["step"], r["tokens"]) for r in reference]
    for mine, ref in zip(evals, reference, strict=True):
        difference = abs(mine["loss"] - ref["loss"]) / ref["loss"]
        assert difference <= loss_tolerance(TOKENS, mine["step"] + 1), (mine, ref)
    summary = json.loads((world.artifacts(0) / "summary.json").read_text())
    assert summary["final_eval_loss"] == evals[-1]["loss"]


def test_too_small_an_evaluation_set_fails_on_every_process_in_one_line(tmp_path: Path) -> None:
    world = World(tmp_path, _config(tmp_path / "run", "tiny"), resume="none")
    assert world.wait() == [ExitCode.DATA_ERROR] * PROCESSES, world.logs()
    for index in range(PROCESSES):
        log = world.log(index).read_text()
        assert "eval.jsonl: the evaluation data holds 5 target tokens" in log, world.logs()
        assert "Traceback" not in log
