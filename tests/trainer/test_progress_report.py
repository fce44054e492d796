"""progress.json as the operator's live signal: the attempt, the newest durable checkpoint and when it
became durable, and the live MFU (the benchmark's formula and peak table)."""

from __future__ import annotations

import json
import threading
import time

import fsspec
import pytest

from tunix_api.run import Progress
from tunix_trainer.benchmark.hardware import PEAK_FLOPS
from tunix_trainer.checkpoint import Checkpointer
from tunix_trainer.config import load_run
from tunix_trainer.errors import PreemptedError
from tunix_trainer.loop import train
from tunix_trainer.progress import ProgressWriter, mfu_meter

FIELDS = {"step": 3, "total_steps": 10, "loss": 1.0, "tokens_per_second": 5.0, "eta_seconds": 1.0}


def written(fs: fsspec.AbstractFileSystem) -> Progress:
    return Progress.model_validate(json.loads(fs.cat_file("/run/progress.json")))


def test_a_newly_durable_checkpoint_is_written_at_once_with_its_time(monkeypatch) -> None:
    monkeypatch.setenv("TUNIX_ATTEMPT", "2")
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    writer = ProgressWriter(fs, "/run", interval_seconds=3600)
    assert writer.report(checkpoint_step=40, restored_from=40, **FIELDS)
    first = written(fs)
    assert (first.attempt, first.checkpoint_step, first.checkpoint_time) == (2, 40, None)  # restored
    assert not writer.report(checkpoint_step=40, restored_from=40, **FIELDS)  # rate-limited
    assert writer.report(checkpoint_step=50, restored_from=40, **FIELDS)  # newly durable: at once
    second = written(fs)
    assert second.checkpoint_step == 50 and second.checkpoint_time is not None
    assert second.checkpoint_time.endswith("Z")


def test_no_attempt_outside_the_operator(monkeypatch) -> None:
    monkeypatch.delenv("TUNIX_ATTEMPT", raising=False)
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    ProgressWriter(fs, "/run").report(**FIELDS)
    doc = json.loads(fs.cat_file("/run/progress.json"))
    assert "attempt" not in doc and "checkpointStep" not in doc and "mfu" not in doc


def test_the_live_mfu_uses_the_benchmark_peak_table() -> None:
    h100 = next(peaks for needles, name, peaks in PEAK_FLOPS if name == "H100 SXM")
    meter = mfu_meter(1e9, "NVIDIA H100 80GB HBM3", "gpu", "bfloat16", devices=2)
    # 1e9 FLOPs per token * 8000 tokens in 0.5 s = 1.6e13 FLOP/s over two devices' peak
    assert meter(8000, 0.5) == pytest.approx(1.6e13 / (2 * h100["bfloat16"]), rel=1e-12)
    assert mfu_meter(1e9, "cpu", "cpu", "float32", devices=1)(8000, 0.5) is None
    assert meter(0, 0.5) is None and meter(8000, 0.0) is None


def test_a_preempted_attempt_reports_the_checkpoint_it_saved(write_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TUNIX_ATTEMPT", "0")
    config = write_config(
        training={"steps": 8, "batchSize": 2, "seqLen": 16},
        checkpoint={"saveIntervalSteps": 4},
        metrics={"progressIntervalSeconds": 3600},  # only forced writes after the first
    )
    art, stop = tmp_path / "art", threading.Event()

    def stop_at_5(record: dict) -> None:
        if record["step"] == 5:
            stop.set()

    with pytest.raises(PreemptedError) as info:
        train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ck"), stop_event=stop,
              on_progress=stop_at_5)  # fmt: skip
    progress = Progress.model_validate_json((art / "progress.json").read_text())
    assert (progress.attempt, progress.step, progress.checkpoint_step) == (
        0,
        info.value.step,
        info.value.step,
    )
    assert progress.checkpoint_time is not None
    assert progress.mfu is None  # no peak for CPU devices


def test_a_periodic_save_is_reported_once_durable(write_config, tmp_path, monkeypatch) -> None:
    """Saves are asynchronous: the step is reported once committed, at a later step's report."""
    monkeypatch.setenv("TUNIX_ATTEMPT", "3")
    config = write_config(
        training={"steps": 12, "batchSize": 2, "seqLen": 16},
        checkpoint={"saveIntervalSteps": 4},
        metrics={"progressIntervalSeconds": 3600},
    )
    art, seen = tmp_path / "art", []

    def after_report(record: dict) -> None:  # on_progress runs right after progress.json is written
        seen.append(Progress.model_validate_json((art / "progress.json").read_text()))
        time.sleep(0.2)  # steps as slow as a save (tiny CPU steps take milliseconds)

    train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ck"), on_progress=after_report)
    reported = {p.checkpoint_step for p in seen} - {None}
    assert reported and reported <= {4, 8}, [(p.step, p.checkpoint_step) for p in seen]
    first = next(p for p in seen if p.checkpoint_step is not None)
    assert first.step > first.checkpoint_step and first.checkpoint_time is not None
    assert {p.attempt for p in seen} == {3}


def _state(value: float) -> dict:
    import jax.numpy as jnp

    return {"w": jnp.full((3, 2), value, jnp.float32)}


def test_durable_step_is_the_newest_committed_step_in_a_directory(tmp_path) -> None:
    ckpt = Checkpointer(str(tmp_path / "ck"), save_interval_steps=2, max_to_keep=2)
    assert ckpt.durable_step() is None
    ckpt.save(2, _state(2), {"step": 2})
    ckpt.wait()
    assert ckpt.durable_step() == 2
    (tmp_path / "ck" / "4.orbax-checkpoint-tmp-1").mkdir()  # a save not committed yet
    assert ckpt.durable_step() == 2
    ckpt.close()


def test_durable_step_on_an_object_store_follows_the_uploads(s3_bucket) -> None:
    ckpt = Checkpointer(f"{s3_bucket}/ck", save_interval_steps=2, max_to_keep=2)
    ckpt.save(2, _state(2), {"step": 2})
    assert ckpt.durable_step() is None  # saved locally, not uploaded
    ckpt.save(4, _state(4), {"step": 4})  # queues the upload of 2
    deadline = time.monotonic() + 60
    while ckpt.durable_step() != 2:
        assert time.monotonic() < deadline, "the upload of step 2 never committed"
        time.sleep(0.05)
    ckpt.wait()
    assert ckpt.durable_step() == 4
    ckpt.close()


@pytest.mark.parametrize("steps", [8, 10], ids=["last-step-saved", "last-periodic-save-2-steps-before"])
def test_the_final_progress_names_the_final_checkpoint(write_config, tmp_path, steps) -> None:
    """Written once every save is durable: the last periodic save (step 8) or the final one (step
    ``steps``), however little time the background save had before training ended."""
    config = write_config(
        training={"steps": steps, "batchSize": 2, "seqLen": 16},
        checkpoint={"saveIntervalSteps": 4},
        metrics={"progressIntervalSeconds": 3600},  # only forced writes after the first
    )
    art = tmp_path / "art"
    train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ck"))
    progress = Progress.model_validate_json((art / "progress.json").read_text())
    ckpt = Checkpointer(str(art / "ck"), save_interval_steps=4, max_to_keep=2)
    assert ckpt.latest_step() == steps
    ckpt.close()
    assert (progress.step, progress.checkpoint_step) == (steps, steps)
    assert progress.checkpoint_time is not None
