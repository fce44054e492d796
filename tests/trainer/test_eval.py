"""Held-out evaluation (spec.evaluation): the records in metrics.jsonl (exactly once across resumes,
beside the step records), the summary and progress fields, a forward pass that compiles once and
leaves the state alone, the loss it computes, keepBest, and bad inputs."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, stop_at, write_dataset
from tunix_api.training import DatasetSpec, ModelSpec, TrainingSpec
from tunix_trainer.config import load_run
from tunix_trainer.data_eval import EvalBatches
from tunix_trainer.data_records import DataError
from tunix_trainer.devices import make_mesh
from tunix_trainer.errors import PreemptedError
from tunix_trainer.evaluation import EvalTracker, Evaluator, host_batches, is_due
from tunix_trainer.loop import train
from tunix_trainer.losses import softmax_cross_entropy
from tunix_trainer.metric_store import MetricStore, merge_records
from tunix_trainer.model import resolve_model_config
from tunix_trainer.summary import summarize
from tunix_trainer.tokenizer import ByteTokenizer
from tunix_trainer.train_step import init_train_state, make_train_step, put_batch

EVALUATION = {"holdOutFraction": 0.2, "everySteps": 2}


def _doc(root: Path, **spec_overrides) -> dict:
    spec = {
        "model": SMALL_MODEL,
        "dataset": {"uri": str(write_dataset(root / "data.jsonl"))},
        "training": SMALL_TRAINING,
        "checkpoint": {"saveIntervalSteps": 4, "maxToKeep": 2},
        "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
        "evaluation": EVALUATION,
    }
    spec.update(spec_overrides)
    return {"apiVersion": "tunix.dev/v1alpha1", "kind": "TunixRun", "metadata": {"name": "ev"}, "spec": spec}


def _write(root: Path, **spec_overrides) -> Path:
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(_doc(root, **spec_overrides)), encoding="utf-8")
    return path


def _split(art: Path) -> tuple[dict[int, float], dict[int, float]]:
    records = read_jsonl(art / "metrics.jsonl")
    steps = {r["step"]: r["loss"] for r in records if "kind" not in r}
    evals = {r["step"]: r["loss"] for r in records if r.get("kind") == "eval"}
    return steps, evals


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-step run evaluating every 2 steps on 20% of the records held out."""
    root = tmp_path_factory.mktemp("eval")
    config = _write(root)
    art = root / "art"
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    return config, art, summary


# -- records, summary, progress -------------------------------------------------------------------
def test_eval_records_beside_the_step_records_and_in_the_summary(reference):
    _, art, summary = reference
    records = read_jsonl(art / "metrics.jsonl")
    order = [(r["step"], r.get("kind", "step")) for r in records]
    expected = [(0, "eval")]
    for step in range(1, 9):
        expected += [(step, "step")] + ([(step, "eval")] if step % 2 == 0 else [])
    assert order == expected
    evals = [r for r in records if r.get("kind") == "eval"]
    for record in evals:
        assert set(record) == {
            "kind",
            "step",
            "loss",
            "perplexity",
            "tokens",
            "batches",
            "seconds",
            "timestamp",
        }
        assert record["perplexity"] == pytest.approx(math.exp(record["loss"]), rel=1e-12)
        assert record["tokens"] == evals[0]["tokens"] > 0  # the same held-out tokens every time
    losses = [r["loss"] for r in evals]
    print(f"eval loss by step {[r['step'] for r in evals]}: {[round(x, 3) for x in losses]}")
    assert losses[-1] < losses[0]  # training on the other 80% lowers the held-out loss
    assert summary["final_eval_loss"] == losses[-1]
    assert summary["best_eval_loss"] == min(losses)
    assert summary["best_eval_step"] == evals[losses.index(min(losses))]["step"]
    assert summary["final_loss"] == [r for r in records if "kind" not in r][-1]["loss"]
    progress = json.loads((art / "progress.json").read_text())
    assert (progress["evalStep"], progress["evalLoss"]) == (8, losses[-1])


def test_summary_without_evaluation_has_no_eval_fields():
    records = [{"step": 1, "loss": 2.0, "tokens": 4, "step_time_seconds": 1.0}]
    assert not any("eval" in key for key in summarize(records, wall_time_seconds=1.0, provenance={}))


def test_a_preempted_run_resumes_with_every_evaluation_exactly_once_and_identical(reference, tmp_path):
    config, art_ref, _ = reference
    steps_ref, evals_ref = _split(art_ref)
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
    steps, evals = _split(art)
    assert sorted(evals) == [0, 2, 4, 6]
    train(run, artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    records = read_jsonl(art / "metrics.jsonl")
    keys = [(r["step"], r.get("kind")) for r in records]
    assert len(keys) == len(set(keys))  # each record once
    steps, evals = _split(art)
    assert steps == steps_ref  # the resume-exact guarantee holds with evaluation on
    assert evals == evals_ref  # and the evaluations too (6 evaluated again after the resume)


def test_the_evaluation_reads_exactly_the_held_out_records(tmp_path):
    """EvalBatches over the file with holdOutFraction (as the loop builds it) serves exactly the
    records the training iterator leaves out (the data module's split): disjoint, covering."""
    from tunix_trainer.data_eval import held_out_indices, training_indices

    held, kept = held_out_indices(120, 0.2), training_indices(120, 0.2)
    assert len(held) == 24 and not set(held) & set(kept) and set(held) | set(kept) == set(range(120))
    tokenizer = ByteTokenizer()
    batches = EvalBatches(
        DatasetSpec(uri=str(write_dataset(tmp_path / "d.jsonl")), packing=False),
        tokenizer,
        batch_size=4,
        seq_len=128,  # longer than every record: nothing truncated
        hold_out_fraction=0.2,
    )
    served = [
        tokenizer.decode(row)
        for b in batches
        for row, m in zip(b.targets, b.loss_mask, strict=True)
        if m.any()
    ]
    texts = [json.loads(line)["text"] for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert served == [texts[i] for i in held]  # in file order, each once


# -- the forward pass ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    mesh = make_mesh(jax.devices("cpu")[:1])
    cfg = resolve_model_config(
        ModelSpec(**{"dModel": 32, "nLayers": 1, "nHeads": 2, "dFf": 64}),
        tokenizer_vocab_size=ByteTokenizer().vocab_size,
        compute_dtype="float32",
        param_dtype="float32",
    )
    training = TrainingSpec(steps=4, batch_size=4, seq_len=32, learning_rate=1e-2, compute_dtype="float32")
    ts = init_train_state(cfg, training, mesh, 0)
    spec = DatasetSpec(uri=str(write_dataset(root / "d.jsonl")))
    batches = host_batches(
        EvalBatches(spec, ByteTokenizer(), batch_size=4, seq_len=32, hold_out_fraction=0.25), None, "d", 32
    )
    return mesh, cfg, training, ts, batches


def test_the_eval_loss_is_the_masked_mean_over_all_batches(small):
    mesh, cfg, _, ts, batches = small
    from flax import nnx

    model, _ = nnx.merge(ts.graphdef, ts.state)
    ce_sum = mask_sum = 0.0
    for b in batches:
        ce = softmax_cross_entropy(
            model(jnp.asarray(b["inputs"])), jnp.asarray(b["targets"]), cfg.valid_vocab_size
        )
        ce_sum += float(jnp.sum(ce * b["loss_mask"]))
        mask_sum += float(b["loss_mask"].sum())
    result = Evaluator(ts.graphdef, batches, mesh)(ts.state)
    assert result.tokens == mask_sum and result.batches == len(batches) > 1
    assert batches[-1]["loss_mask"][-1].sum() == 0  # the last batch was filled with padding rows
    # two float32 forward passes of the same program shape; sums in float64 on the host
    assert result.loss == pytest.approx(ce_sum / mask_sum, rel=1e-6)


def test_the_forward_pass_compiles_once_and_leaves_the_state_to_the_train_step(small):
    mesh, _, training, ts, batches = small
    evaluator = Evaluator(ts.graphdef, batches, mesh)
    step = make_train_step(ts.graphdef, training, mesh)
    state = jax.tree.map(jnp.copy, ts.state)
    train_batch = put_batch(type("B", (), {k: v for k, v in batches[0].items()})(), mesh, 1)
    before = jax.tree.map(np.asarray, state)
    first = evaluator(state)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state), before)  # not changed
    state, _ = step(state, train_batch)  # donates the state the evaluation read
    second = evaluator(state)
    third = evaluator(state)
    assert evaluator.compilations == 1  # every batch and every evaluation: one program
    assert second.loss == third.loss != first.loss


def test_too_little_data_is_decided_on_the_tokens_of_all_processes():
    """Each process holds its rows of every batch; ``gather`` sums every process's target tokens,
    so one process with too few rows of its own does not fail alone (and hang the other)."""
    rows = {"inputs": np.zeros((2, 8), np.int32), "targets": np.zeros((2, 8), np.int32)}
    mine = type("B", (), {**rows, "loss_mask": np.zeros((2, 8), np.float32)})()  # padding rows
    seen: list[np.ndarray] = []

    def gather(local: np.ndarray) -> np.ndarray:  # the other process holds 8 target tokens
        seen.append(local)
        return np.concatenate([np.asarray([8], np.int64), local])

    assert len(host_batches([mine], None, "eval.jsonl", 8, gather)) == 1
    assert seen[0].tolist() == [0]
    with pytest.raises(DataError, match=r"eval\.jsonl: the evaluation data holds 8 target tokens"):
        host_batches([mine], None, "eval.jsonl", 9, gather)  # every process raises the same


def test_evaluation_is_due_at_0_every_n_and_at_the_end():
    assert [s for s in range(11) if is_due(s, 10, 3)] == [0, 3, 6, 9, 10]
    assert [s for s in range(11) if is_due(s, 10, None)] == [0, 10]


# -- the metric store ------------------------------------------------------------------------------
def test_store_orders_eval_after_its_step_and_resumes_them_exactly_once():
    fs = fsspec.filesystem("memory")
    root = "/store-eval"
    store = MetricStore(fs, root, flush_every_steps=1)
    store.start(0)
    store.log_step({"kind": "eval", "step": 0, "loss": 9.0})
    for step in (1, 2):
        store.log_step({"step": step, "loss": float(step)})
        store.log_step({"kind": "eval", "step": step, "loss": 10.0 + step})
        store.flush()  # step 2's record and its evaluation alone in chunks: distinct names
    with pytest.raises(ValueError, match="evaluation 2 logged after step 2"):
        store.log_step({"kind": "eval", "step": 2, "loss": 0.0})
    store.close()
    keys = [(r["step"], r.get("kind")) for r in store.read_metrics()]
    assert keys == [(0, "eval"), (1, None), (1, "eval"), (2, None), (2, "eval")]
    # resume from step 2: step 2's record stays, its evaluation is dropped (evaluated again)
    again = MetricStore(fs, root, flush_every_steps=1)
    again.start(2)
    assert [(r["step"], r.get("kind")) for r in again.read_metrics()] == keys[:-1]
    again.log_step({"kind": "eval", "step": 2, "loss": 12.0})
    again.close()
    assert again.read_metrics()[-1] == {"kind": "eval", "step": 2, "loss": 12.0}
    assert merge_records(again.read_metrics()) == again.read_metrics()


# -- keepBest -------------------------------------------------------------------------------------
def test_keep_best_keeps_and_exports_the_checkpoint_of_the_lowest_eval_loss(tmp_path, monkeypatch):
    """Scripted eval losses (lowest after step 4): the best checkpoint is step 4's state, kept in
    <ckpt>/best beside the newest checkpoints, and it is the model exported at the end."""
    from safetensors.numpy import load_file

    from tunix_trainer import evaluation

    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.9])  # after steps 0, 2, 4, 6, 8
    real_call = evaluation.Evaluator.__call__

    def scripted_call(self, state):
        result = real_call(self, state)
        return evaluation.EvalResult(next(scripted), result.tokens, result.batches, result.seconds)

    monkeypatch.setattr(evaluation.Evaluator, "__call__", scripted_call)
    config = _write(tmp_path, checkpoint={"saveIntervalSteps": 4, "maxToKeep": 2, "keepBest": True})
    art = tmp_path / "art"
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert (summary["best_eval_step"], summary["best_eval_loss"], summary["final_eval_loss"]) == (4, 3.0, 3.9)
    assert sorted(p.name for p in (art / "ckpt").iterdir()) == ["4", "8", "best"]
    assert [p.name for p in (art / "ckpt" / "best").iterdir() if p.name.isdigit()] == ["4"]
    exported = load_file(str(art / "model" / "model.safetensors"))["model.embed_tokens.weight"]
    assert np.array_equal(exported, _embedding(load_run(config), art / "ckpt" / "best", 4))
    assert not np.array_equal(exported, _embedding(load_run(config), art / "ckpt", 8))


_REAL_EVALUATE = EvalTracker.evaluate


def _script(monkeypatch, losses: dict[int, float | Exception]) -> None:
    """Evaluations return the loss ``losses`` gives for their step (raise it when an exception)."""
    from tunix_trainer import evaluation

    real_evaluate = _REAL_EVALUATE  # not a scripted one patched in earlier

    def scripted_evaluate(self, step, state, now):
        scripted, real = losses[step], self.evaluator
        if isinstance(scripted, Exception):
            raise scripted

        def evaluator(s):
            result = real(s)
            return evaluation.EvalResult(scripted, result.tokens, result.batches, result.seconds)

        self.evaluator = evaluator
        try:
            return real_evaluate(self, step, state, now)
        finally:
            self.evaluator = real

    monkeypatch.setattr(evaluation.EvalTracker, "evaluate", scripted_evaluate)


def test_keep_best_exports_the_best_named_by_the_resumed_checkpoint(tmp_path, monkeypatch, capsys):
    """A new best (step 6) after the last checkpoint (4, whose best is step 2), then a crash: the
    resumed run (here a changed config: other losses) never beats step 2's loss, so step 2's state
    is the best its records show, and it is the one exported (its checkpoint was kept while
    checkpoint 4 named it)."""
    from safetensors.numpy import load_file

    config = _write(tmp_path, checkpoint={"saveIntervalSteps": 4, "maxToKeep": 2, "keepBest": True})
    art = tmp_path / "art"
    _script(monkeypatch, {0: 5.0, 2: 3.0, 4: 4.0, 6: 2.0, 8: RuntimeError("node lost")})
    with pytest.raises(RuntimeError, match="node lost"):
        train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    best_dir = art / "ckpt" / "best"
    assert sorted(p.name for p in best_dir.iterdir() if p.name.isdigit()) == ["2", "6"]
    _script(monkeypatch, {4: 4.0, 6: 3.5, 8: 3.2})
    capsys.readouterr()
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert (summary["best_eval_step"], summary["best_eval_loss"]) == (2, 3.0)
    assert summary["model_step"] == 2
    assert [p.name for p in best_dir.iterdir() if p.name.isdigit()] == ["2"]  # 6 went with its record
    assert "exported the best checkpoint (step 2, eval loss 3)" in capsys.readouterr().err
    exported = load_file(str(art / "model" / "model.safetensors"))["model.embed_tokens.weight"]
    assert np.array_equal(exported, _embedding(load_run(config), best_dir, 2))


def test_keep_best_without_the_best_checkpoint_exports_the_final_state_and_says_so(
    tmp_path, monkeypatch, capsys
):
    import shutil

    config = _write(tmp_path, checkpoint={"saveIntervalSteps": 4, "maxToKeep": 2, "keepBest": True})
    art = tmp_path / "art"
    _script(monkeypatch, {0: 5.0, 2: 3.0, 4: 4.0, 6: 3.5, 8: RuntimeError("node lost")})
    with pytest.raises(RuntimeError):
        train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    shutil.rmtree(art / "ckpt" / "best" / "2")  # lost (an older resume point's best is not kept)
    _script(monkeypatch, {4: 4.0, 6: 3.5, 8: 3.2})
    capsys.readouterr()
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert (summary["best_eval_step"], summary["model_step"]) == (2, 8)
    err = capsys.readouterr().err
    assert "the best evaluation (step 2, eval loss 3) has no checkpoint in" in err, err
    assert "exported the final state (step 8)" in err


@pytest.mark.parametrize("failing", ["setup", "the loop's start"])
def test_a_failed_setup_closes_everything_it_opened(tmp_path, monkeypatch, failing):
    """A failure after the keepBest checkpointer was created (in the setup, or when the loop starts
    the run's artifacts) closes it, the run's checkpointer and the data pipeline (their threads and
    worker processes), and the error comes through as it was."""
    from tunix_trainer import loop
    from tunix_trainer.artifacts import RunArtifacts
    from tunix_trainer.checkpoint import Checkpointer
    from tunix_trainer.data import BatchIterator

    closed: list[str] = []
    real_close, real_data_close = Checkpointer.close, BatchIterator.close
    monkeypatch.setattr(Checkpointer, "close", lambda self: (closed.append(self.uri), real_close(self))[1])
    monkeypatch.setattr(
        BatchIterator, "close", lambda self: (closed.append("data"), real_data_close(self))[1]
    )

    def fail(*args, **kwargs):
        raise RuntimeError("provenance unavailable")

    if failing == "setup":
        monkeypatch.setattr(loop, "make_provenance", fail)
    else:
        monkeypatch.setattr(RunArtifacts, "start", fail)
    config = _write(tmp_path, checkpoint={"saveIntervalSteps": 4, "maxToKeep": 2, "keepBest": True})
    ckpt = str(tmp_path / "art" / "ckpt")
    with pytest.raises(RuntimeError, match="provenance unavailable"):
        train(load_run(config), artifacts_uri=str(tmp_path / "art"), checkpoint_uri=ckpt)
    assert closed == [f"{ckpt}/best", ckpt, "data"]  # the reverse of the order they were opened


def _embedding(run, directory: Path, step: int) -> np.ndarray:
    """The token embedding (the tokenizer's rows) of checkpoint ``step`` in ``directory``."""
    from flax import nnx

    from tunix_trainer.checkpoint import Checkpointer
    from tunix_trainer.train_step import abstract_state

    mesh = make_mesh(jax.devices("cpu")[:1])
    vocab = ByteTokenizer().vocab_size
    cfg = resolve_model_config(
        run.spec.model, tokenizer_vocab_size=vocab, compute_dtype="float32", param_dtype="float32"
    )
    ts = init_train_state(cfg, run.spec.training, mesh, 0)
    ckpt = Checkpointer(str(directory), save_interval_steps=1, max_to_keep=5)
    try:
        restored = ckpt.restore(str(step), abstract_state(ts.state))
    finally:
        ckpt.close()
    model, _ = nnx.merge(ts.graphdef, restored.state)
    return np.asarray(model.embed[...])[:vocab]


# -- bad input: one line, the documented exit code ----------------------------------------------
@pytest.mark.parametrize(
    ("evaluation", "eval_text", "code", "text"),
    [
        ({"holdOutFraction": 0}, None, 2, "spec.evaluation.holdOutFraction"),
        ({"holdOutFraction": 1.0}, None, 2, "spec.evaluation.holdOutFraction"),
        (
            {"holdOutFraction": 0.1, "datasetUri": "x.jsonl"},
            None,
            2,
            "exactly one of datasetUri or holdOutFraction",
        ),
        ({}, None, 2, "exactly one of datasetUri or holdOutFraction"),
        ({"datasetUri": "EVAL"}, "", 4, "eval.jsonl"),
        (
            {"datasetUri": "EVAL"},
            '{"text": "tiny"}\n',
            4,
            "eval.jsonl: the evaluation data holds 5 target tokens",
        ),
        ({"datasetUri": "EVAL"}, '{"text": "ok"}\n{"prompt": "a"}\n', 4, "eval.jsonl:2"),
    ],
    ids=["fraction-0", "fraction-1", "both", "neither", "empty-file", "shorter-than-a-sequence", "bad-line"],
)
def test_bad_evaluation_settings_and_data_fail_in_one_line(
    tmp_path, capsys, evaluation, eval_text, code, text
):
    from tunix_trainer import cli

    if eval_text is not None:
        (tmp_path / "eval.jsonl").write_text(eval_text)
        evaluation = {**evaluation, "datasetUri": str(tmp_path / "eval.jsonl")}
    path = _write(tmp_path, evaluation=evaluation)
    assert (
        cli.main(["run", str(path), "--local", "--no-progress", "--artifacts", str(tmp_path / "a")]) == code
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and text in err, err


def test_keep_best_needs_evaluation(tmp_path):
    from tunix_trainer.errors import ConfigError

    doc = _doc(tmp_path, checkpoint={"keepBest": True})
    del doc["spec"]["evaluation"]
    with pytest.raises(ConfigError, match=r"checkpoint\.keepBest needs spec\.evaluation"):
        load_run(yaml.safe_dump(doc))


def test_the_operator_carries_eval_loss_into_status_progress_rounded_for_the_column():
    from tunix_api.run import Summary
    from tunix_operator.trainer_output import parse_progress

    progress = parse_progress(
        {"step": 8, "totalSteps": 8, "loss": 3.77, "evalLoss": 3.711124721326326, "evalStep": 8}
    )
    assert (progress.eval_loss, progress.eval_step) == (3.711, 8)
    summary = Summary.model_validate({"final_eval_loss": 3.711124721326326, "best_eval_step": 6})
    assert summary.to_wire() == {"finalEvalLoss": 3.711124721326326, "bestEvalStep": 6}  # full precision


def test_the_loss_plot_draws_evaluations_over_the_training_curve(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    from tunix_trainer.plot import loss_series, plot_loss

    records = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 11)]
    records += [{"kind": "eval", "step": s, "loss": 5.2 - s / 12} for s in (0, 5, 10)]
    assert loss_series(records) == (list(range(1, 11)), [5.0 - s / 10 for s in range(1, 11)])
    assert loss_series(records, "eval") == ([0, 5, 10], [5.2, 5.2 - 5 / 12, 5.2 - 10 / 12])
    with_evals, without = tmp_path / "e.png", tmp_path / "t.png"
    plot_loss(records, str(with_evals))
    plot_loss(records[:10], str(without))
    assert with_evals.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert with_evals.read_bytes() != without.read_bytes()  # the eval points are drawn


def test_the_progress_line_shows_the_latest_eval_loss():
    from tunix_trainer import cli

    line = cli.format_progress(120, 300, 2.31449, 12345.4, 14.2, eval_loss=2.40123)
    assert "loss 2.314  eval 2.401  12,345 tok/s" in line
    assert "eval" not in cli.format_progress(120, 300, 2.31449, 12345.4, 14.2)
