"""tunix-train end to end: defaults, exit codes for each failure class, the summary on stdout."""

from __future__ import annotations

import errno
import json
import os

import pytest

from tests.trainer.conftest import read_jsonl
from tunix_api.exit_codes import ExitCode
from tunix_trainer.train import main, parse_args


def test_run_with_defaults_writes_artifacts_and_checkpoints(write_config, tmp_path, monkeypatch, capsys):
    config = write_config(training={"steps": 4}, checkpoint={"saveIntervalSteps": 2})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNIX_RESUME", raising=False)
    log = tmp_path / "termination-log"
    assert main(["--config", str(config), "--termination-log", str(log)]) == ExitCode.SUCCESS
    art = tmp_path / "artifacts" / "unit"
    summary = json.loads((art / "summary.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert summary["total_steps"] == 4
    assert [r["step"] for r in read_jsonl(art / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((art / "progress.json").read_text())["step"] == 4
    assert sorted(p.name for p in (art / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert [r["includes_compile"] for r in read_jsonl(art / "metrics.jsonl")] == [True, False, False, False]
    record = read_jsonl(art / "metrics.jsonl")[-1]
    assert set(record) == {
        "step",
        "loss",
        "learning_rate",
        "grad_norm",
        "tokens",
        "tokens_per_second",
        "step_time_seconds",
        "includes_compile",
        "wall_time_seconds",
        "timestamp",
    }
    assert record["timestamp"].endswith("Z")
    assert json.loads(log.read_text())["totalSteps"] == 4  # the compact summary for the operator

    # Running again finds the run complete: no new steps, same losses.
    assert main(["--config", str(config)]) == ExitCode.SUCCESS
    assert [r["step"] for r in read_jsonl(art / "metrics.jsonl")] == [1, 2, 3, 4]


def test_resume_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("TUNIX_RESUME", "none")
    assert parse_args(["--config", "x"]).resume == "none"
    assert parse_args(["--config", "x", "--resume", "7"]).resume == "7"
    monkeypatch.delenv("TUNIX_RESUME")
    assert parse_args(["--config", "x"]).resume is None


def test_missing_resume_step_from_env_is_invalid_config(write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNIX_RESUME", "7")
    code = main(["--config", str(write_config()), "--artifacts-uri", str(tmp_path / "a")])
    assert code == ExitCode.INVALID_CONFIG
    assert "spec.checkpoint.resume: step 7 not found" in capsys.readouterr().err


def test_bad_resume_value_is_invalid_config(write_config, tmp_path, capsys):
    code = main(["--config", str(write_config()), "--resume", "soon", "--artifacts-uri", str(tmp_path / "a")])
    assert code == ExitCode.INVALID_CONFIG
    assert "spec.checkpoint.resume" in capsys.readouterr().err


def test_gpu_on_a_cpu_machine_is_device_unavailable(write_config, tmp_path, capsys):
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("needs a CPU-only machine")
    log = tmp_path / "termination-log"
    code = main(
        [
            "--config",
            str(write_config(device={"kind": "gpu"})),
            "--artifacts-uri",
            str(tmp_path / "a"),
            "--termination-log",
            str(log),
        ]
    )
    assert code == ExitCode.DEVICE_UNAVAILABLE
    assert "tunix-train: device unavailable: spec.device.kind is gpu" in capsys.readouterr().err
    assert log.read_text().startswith("DeviceUnavailable: ")


def test_unreadable_dataset_is_a_data_error(write_config, tmp_path, capsys):
    config = write_config(dataset={"uri": str(tmp_path / "missing.jsonl")})
    assert main(["--config", str(config), "--artifacts-uri", str(tmp_path / "a")]) == ExitCode.DATA_ERROR
    assert "tunix-train: data error: cannot read dataset" in capsys.readouterr().err


def test_a_lone_surrogate_in_the_dataset_is_a_data_error_naming_the_line(write_config, tmp_path, capsys):
    data = tmp_path / "surrogate.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "half a pair: \\ud83d"}\n', encoding="utf-8")
    config = write_config(dataset={"uri": str(data)})
    assert main(["--config", str(config), "--artifacts-uri", str(tmp_path / "a")]) == ExitCode.DATA_ERROR
    err = capsys.readouterr().err
    assert f"tunix-train: data error: {data}:2: field 'text' holds a lone surrogate" in err
    assert "Traceback" not in err


def test_benchmark_mode_is_refused(write_config, tmp_path, capsys):
    config = write_config(mode="Benchmark")
    assert main(["--config", str(config), "--artifacts-uri", str(tmp_path / "a")]) == ExitCode.INVALID_CONFIG
    assert "spec.mode" in capsys.readouterr().err


def test_stop_before_the_first_step_exits_preempted_without_a_checkpoint(write_config, tmp_path, capsys):
    import threading

    stop = threading.Event()
    stop.set()
    art, log = tmp_path / "a", tmp_path / "termination-log"
    argv = ["--config", str(write_config()), "--artifacts-uri", str(art), "--termination-log", str(log)]
    assert main(argv, stop_event=stop) == ExitCode.PREEMPTED
    assert not [p for p in (art / "checkpoints").iterdir() if p.name.isdigit()]
    assert not (art / "summary.json").exists()
    message = "stopped by SIGTERM before the first step; no checkpoint to save"
    assert f"tunix-train: preempted: {message}" in capsys.readouterr().err
    assert log.read_text() == f"Preempted: {message}"


def _full_disk(_fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    from tunix_trainer.artifact_io import write_atomic

    monkeypatch.setattr(os, "fsync", _full_disk)
    target = tmp_path / "artifacts" / "metrics.jsonl"
    with pytest.raises(OSError) as info:
        write_atomic(LocalFileSystem(), str(target), b"{}\n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert list(target.parent.iterdir()) == []  # no temp file left behind


def test_train_on_a_full_artifacts_disk_says_which_path(write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", _full_disk)
    art = tmp_path / "a"
    code = main(["--config", str(write_config()), "--artifacts-uri", str(art)])
    assert code == ExitCode.ERROR  # retryable: space may be freed
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tunix-train: error: OSError: [Errno 28] No space left on device: ")
    assert f"'{art}/" in last
