"""Checkpoints (local and S3 via moto), preemption and exact resume, divergence."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, stop_at, write_dataset
from tunix_api.exit_codes import ExitCode
from tunix_trainer import loop as loop_module
from tunix_trainer.checkpoint import COMMIT_MARKER, Checkpointer, is_remote, local_path, parse_resume
from tunix_trainer.config import load_run
from tunix_trainer.errors import ConfigError, PreemptedError
from tunix_trainer.loop import train
from tunix_trainer.train import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def _state(value: float) -> dict:
    return {"w": jnp.full((3, 2), value, jnp.float32), "count": jnp.asarray(int(value), jnp.int32)}


def _target() -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0.0))


# -- Checkpointer ------------------------------------------------------------------------------
def test_uri_helpers(tmp_path):
    assert not is_remote(str(tmp_path)) and not is_remote("file:///x") and not is_remote("C:/x")
    assert is_remote("s3://b/x") and is_remote("gs://b/x")
    assert local_path("file:///data/ckpt") == "/data/ckpt"
    assert local_path("rel/dir") == os.path.abspath("rel/dir")
    assert parse_resume("latest") == "latest" and parse_resume("NONE") == "none" and parse_resume("12") == 12
    with pytest.raises(ConfigError, match=r"spec\.checkpoint\.resume"):
        parse_resume("yesterday")


def _roundtrip(uri: str, **options) -> None:
    ckpt = Checkpointer(uri, save_interval_steps=2, max_to_keep=2, storage_options=options or None)
    assert ckpt.restore("latest", _target()) is None
    assert [s for s in range(1, 7) if ckpt.should_save(s)] == [2, 4, 6]
    for step in (2, 4, 6):
        ckpt.save(step, _state(step), {"step": step, "data": {"epoch": 0, "cursor": step}})
    assert not ckpt.should_save(6)
    ckpt.close()

    ckpt = Checkpointer(uri, save_interval_steps=2, max_to_keep=2, storage_options=options or None)
    assert ckpt.all_steps() == [4, 6]  # max_to_keep
    restored = ckpt.restore("latest", _target())
    assert restored.step == 6 and restored.meta == {"step": 6, "data": {"epoch": 0, "cursor": 6}}
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 2), 6.0))
    assert int(restored.state["count"]) == 6
    with pytest.raises(ConfigError, match=r"step 5 not found in .* \(available: 4, 6\)"):
        ckpt.restore("5", _target())
    # Resuming from an older step drops the later ones: training continues from there.
    assert ckpt.restore("4", _target()).step == 4
    assert ckpt.all_steps() == [4]
    ckpt.save(6, _state(60), {"step": 6})
    ckpt.wait()
    assert ckpt.all_steps() == [4, 6]
    # "none" starts over.
    assert ckpt.restore("none", _target()) is None
    assert ckpt.all_steps() == []
    ckpt.close()


def test_checkpointer_local_directory(tmp_path):
    _roundtrip(str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt" / "2").exists()


def test_checkpointer_file_uri(tmp_path):
    _roundtrip(f"file://{tmp_path}/ckpt")


def test_checkpointer_s3_mirror(s3_bucket):
    uri = f"{s3_bucket}/ckpt"
    _roundtrip(uri)
    fs, _ = fsspec.core.url_to_fs(uri)
    assert fs.find(uri.removeprefix("s3://")) == []  # "none" removed everything


def test_s3_mirror_layout_and_uncommitted_steps(s3_bucket):
    uri = f"{s3_bucket}/ckpt"
    ckpt = Checkpointer(uri, save_interval_steps=1, max_to_keep=3)
    ckpt.save(1, _state(1), {"step": 1})
    ckpt.save(2, _state(2), {"step": 2})
    ckpt.close()
    fs, root = fsspec.core.url_to_fs(uri)
    files = {p.removeprefix(root + "/") for p in fs.find(root)}
    assert {f"1/{COMMIT_MARKER}", f"2/{COMMIT_MARKER}", "2/_CHECKPOINT_METADATA", "2/meta/metadata"} <= files
    # A step whose upload did not finish (no marker) is not a checkpoint.
    fs.rm(f"{root}/2/{COMMIT_MARKER}")
    ckpt = Checkpointer(uri, save_interval_steps=1, max_to_keep=3)
    assert ckpt.all_steps() == [1]
    assert ckpt.restore("latest", _target()).step == 1
    ckpt.close()


def test_save_returns_before_the_write_and_keeps_a_copy_of_the_state(tmp_path, monkeypatch):
    """The background save writes a device snapshot: the caller may donate (here: delete) the
    state as soon as save() returns, and the checkpoint still holds the values it had."""
    ckpt = Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1, max_to_keep=3)
    started, release = threading.Event(), threading.Event()
    real_save = ckpt._manager.save

    def slow_save(*args, **kwargs):
        started.set()
        assert release.wait(30)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt._manager, "save", slow_save)
    state = _state(7.0)
    ckpt.save(1, state, {"step": 1})  # returns while Orbax has not even started
    assert started.wait(30)
    for leaf in jax.tree.leaves(state):
        leaf.delete()  # what the donating train step does to the live state
    release.set()
    ckpt.wait()
    restored = ckpt.restore("latest", _target())
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 2), 7.0))
    ckpt.close()


def test_save_without_room_for_a_snapshot_saves_in_the_calling_thread(tmp_path, monkeypatch):
    from tunix_trainer import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "has_room_for_copy", lambda state: False)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1, max_to_keep=3)
    threads = []
    real_save = ckpt._manager.save

    def recording_save(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt._manager, "save", recording_save)
    ckpt.save(1, _state(3.0), {"step": 1})
    assert threads == [threading.main_thread()]
    ckpt.close()
    ckpt = Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1, max_to_keep=3)
    np.testing.assert_array_equal(ckpt.restore("latest", _target()).state["w"], np.full((3, 2), 3.0))
    ckpt.close()


def test_a_failed_background_save_is_raised_by_wait(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path / "ckpt"), save_interval_steps=1, max_to_keep=3)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt._manager, "save", broken_save)
    ckpt.save(1, _state(1.0), {"step": 1})
    with pytest.raises(OSError, match="disk full"):
        ckpt.wait()
    ckpt.close()


class _FakeDevice:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


class _FakeShard:
    def __init__(self, device, nbytes):
        self.device, self.data = device, SimpleNamespace(nbytes=nbytes)


class _FakeArray:
    def __init__(self, *shards):
        self.addressable_shards = list(shards)


def test_room_for_a_snapshot_counts_every_device_against_its_peak_use():
    from tunix_trainer.checkpoint import has_room_for_copy

    roomy = _FakeDevice({"bytes_limit": 1000, "bytes_in_use": 100, "peak_bytes_in_use": 400})
    tight = _FakeDevice({"bytes_limit": 1000, "bytes_in_use": 100, "peak_bytes_in_use": 900})
    cpu = _FakeDevice(None)
    two_leaves = {"a": _FakeArray(_FakeShard(roomy, 300)), "b": _FakeArray(_FakeShard(roomy, 300))}
    assert has_room_for_copy(two_leaves)
    # 700 bytes of state on one device with 600 free after the peak: no snapshot.
    assert not has_room_for_copy([_FakeArray(_FakeShard(roomy, 400)), _FakeArray(_FakeShard(roomy, 300))])
    assert not has_room_for_copy([_FakeArray(_FakeShard(roomy, 50), _FakeShard(tight, 150))])
    assert has_room_for_copy([_FakeArray(_FakeShard(cpu, 10**12))])  # no statistics: the host


# -- training: preemption, resume, divergence ---------------------------------------------------
def _losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(path / "metrics.jsonl")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 8 steps: (config path, its metrics by step, its artifacts dir)."""
    root = tmp_path_factory.mktemp("reference")
    dataset = write_dataset(root / "data.jsonl")
    doc = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "unit"},
        "spec": {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(dataset)},
            "training": SMALL_TRAINING,
            "checkpoint": {"saveIntervalSteps": 4, "maxToKeep": 2},
            "metrics": {"flushEverySteps": 2, "progressIntervalSeconds": 0},
        },
    }
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    art = root / "art"
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"))
    assert summary["total_steps"] == 8
    return config, _losses(art), art


def test_preempted_run_resumes_to_identical_losses(reference, tmp_path):
    config, expected, _ = reference
    art, ckpt = tmp_path / "art", tmp_path / "art" / "ckpt"
    run = load_run(config)
    stop = threading.Event()
    # The loop sees the stop before dispatching the next step: step 5 is logged while step 6 runs,
    # so it stops after 6 and saves checkpoint 6 (the periodic ones are 4 and 8).
    with pytest.raises(PreemptedError) as info:
        train(
            run,
            artifacts_uri=str(art),
            checkpoint_uri=str(ckpt),
            stop_event=stop,
            on_progress=stop_at(5, stop),
        )
    assert info.value.step == 6 and info.value.exit_code == ExitCode.PREEMPTED
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [4, 6]
    assert sorted(_losses(art)) == [1, 2, 3, 4, 5, 6]  # flushed before exiting
    assert not (art / "summary.json").exists()

    seen = []
    summary = train(run, artifacts_uri=str(art), checkpoint_uri=str(ckpt), on_progress=seen.append)
    assert [r["step"] for r in seen] == [7, 8]
    records = read_jsonl(art / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))  # every step exactly once
    assert _losses(art) == expected  # exact on CPU: same data order, same state, same program
    assert summary == json.loads((art / "summary.json").read_text())
    assert summary["total_steps"] == 8
    assert summary["final_loss"] == records[-1]["loss"]
    assert summary["best_loss"] == min(r["loss"] for r in records)
    assert summary["total_tokens"] == sum(r["tokens"] for r in records)
    assert summary["provenance"]["config_hash"] == run.config_hash
    assert summary["provenance"]["platform"] == "cpu"


def test_resume_from_an_older_step_rewrites_later_metrics(reference, tmp_path):
    config, expected, finished = reference
    art = tmp_path / "art"
    shutil.copytree(finished, art)  # the finished reference run: checkpoints 4 and 8
    before = read_jsonl(art / "metrics.jsonl")
    summary = train(load_run(config), artifacts_uri=str(art), checkpoint_uri=str(art / "ckpt"), resume="4")
    after = read_jsonl(art / "metrics.jsonl")
    assert [r["step"] for r in after] == list(range(1, 9))
    assert after[:4] == before[:4]  # kept
    assert all(a["timestamp"] != b["timestamp"] for a, b in zip(after[4:], before[4:], strict=True))  # redone
    assert _losses(art) == expected
    assert summary["total_steps"] == 8


def test_divergence_exits_diverged_and_saves_nothing_new(write_config, tmp_path, monkeypatch, capsys):
    real_make = loop_module.make_train_step

    def poisoned(graphdef, training, mesh):
        step_fn = real_make(graphdef, training, mesh)

        def step(state, batch):
            state, metrics = step_fn(state, batch)
            bad = state[1]["step"][...] >= 5  # the optimizer's count after this update
            metrics = {**metrics, "loss": jnp.where(bad, jnp.nan, metrics["loss"])}
            return state, metrics

        return step

    monkeypatch.setattr(loop_module, "make_train_step", poisoned)
    config = write_config(checkpoint={"saveIntervalSteps": 2})
    art, log = tmp_path / "art", tmp_path / "termination-log"
    code = main(["--config", str(config), "--artifacts-uri", str(art), "--termination-log", str(log)])
    assert code == ExitCode.DIVERGED
    assert capsys.readouterr().err.strip().endswith("tunix-train: diverged: loss is nan at step 5")
    assert log.read_text() == "Diverged: loss is nan at step 5"
    ckpts = sorted(int(p.name) for p in (art / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [2, 4]
    records = read_jsonl(art / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5] and records[-1]["loss"] is None


def test_checkpoints_and_metrics_on_s3(write_config, s3_bucket):
    config = write_config()
    run = load_run(config)
    art, ckpt = f"{s3_bucket}/runs/unit", f"{s3_bucket}/runs/unit/checkpoints"
    stop = threading.Event()
    with pytest.raises(PreemptedError):
        train(run, artifacts_uri=art, checkpoint_uri=ckpt, stop_event=stop, on_progress=stop_at(2, stop))
    summary = train(run, artifacts_uri=art, checkpoint_uri=ckpt)
    fs, _ = fsspec.core.url_to_fs(art)
    records = [json.loads(line) for line in fs.cat_file(f"{art}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert json.loads(fs.cat_file(f"{art}/summary.json")) == summary
    assert Checkpointer(ckpt, save_interval_steps=4, max_to_keep=2).all_steps() == [4, 8]
    assert not fs.exists(f"{ckpt}/3")  # the preemption checkpoint (3) was pruned by maxToKeep


def test_sigterm_to_the_process_checkpoints_and_exits_preempted(write_config, tmp_path):
    config = write_config(training={"steps": 100_000}, checkpoint={"saveIntervalSteps": 100_000})
    art = tmp_path / "art"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunix_trainer.train", "--config", str(config), "--artifacts-uri", str(art)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (art / "progress.json").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.PREEMPTED, err[-3000:]
    assert "tunix-train: preempted: stopped by SIGTERM at step" in err
    steps = [int(p.name) for p in (art / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and steps[0] >= 1
    assert [r["step"] for r in read_jsonl(art / "metrics.jsonl")] == list(range(1, steps[0] + 1))
