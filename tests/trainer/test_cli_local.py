"""The local-run CLI (tunix-rt), its progress display, the status block and the loss plot."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import textwrap

import fsspec
import pytest
import yaml

from tunix_api.artifacts import METRICS_FILE, SUMMARY_FILE
from tunix_api.exit_codes import ExitCode
from tunix_api.run import Phase, Summary, TunixRunStatus, provenance_strings
from tunix_trainer import cli
from tunix_trainer.artifacts import RunArtifacts, read_json
from tunix_trainer.config import load_run
from tunix_trainer.plot import (
    PlotUnavailable,
    ema,
    loss_series,
    plot_loss,
    render_loss_png,
    require_matplotlib,
)
from tunix_trainer.status import status_from_summary

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "run.yaml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RUN_YAML = """\
apiVersion: tunix.dev/v1alpha1
kind: TunixRun
metadata:
  name: {name}
spec:
  model: {{dModel: 32, nLayers: 1, nHeads: 2, dFf: 64}}
  dataset: {{uri: data/tiny.jsonl}}
  training: {{steps: {steps}, batchSize: 2, seqLen: 16, learningRate: 1.0e-2, warmupSteps: 4,
             computeDtype: float32}}
  checkpoint: {{saveIntervalSteps: 2, maxToKeep: 2}}
  metrics: {{flushEverySteps: 2, progressIntervalSeconds: 0}}
  device: {{kind: cpu}}
"""


def write_run(directory, name: str = "tiny-local", steps: int = 40) -> str:
    (directory / "data").mkdir(exist_ok=True)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    lines = [json.dumps({"text": " ".join(words[(i + j) % 6] for j in range(12))}) for i in range(64)]
    (directory / "data" / "tiny.jsonl").write_text("\n".join(lines) + "\n")
    path = directory / "run.yaml"
    path.write_text(RUN_YAML.format(name=name, steps=steps))
    return str(path)


# ----------------------------------------------------------------------------- validate


def test_validate_example_is_ok(capsys) -> None:
    assert cli.main(["validate", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: tiny-golden (Train, 300 steps, sha256:")


def test_validate_bad_file_names_the_field(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            apiVersion: tunix.dev/v1alpha1
            kind: TunixRun
            metadata: {name: bad}
            spec:
              dataset: {uri: data.jsonl}
              training: {steps: 10, batchSize: 6, gradAccumSteps: 4, bogusField: 1}
            """
        )
    )
    assert cli.main(["validate", str(bad)]) == ExitCode.INVALID_CONFIG == 2
    err = capsys.readouterr().err
    assert "invalid TunixRun" in err and "spec.training.bogusField" in err


def test_validate_missing_file(tmp_path, capsys) -> None:
    assert cli.main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys) -> None:
    assert cli.main([]) == 2
    assert cli.main(["run", EXAMPLE, "--local", "--steps", "0"]) == 2
    assert cli.main(["run", EXAMPLE, "--local", "--resume", "sometimes"]) == 2
    capsys.readouterr()


def test_run_needs_local(capsys) -> None:
    assert cli.main(["run", EXAMPLE]) == 2
    assert "kubectl apply -f" in capsys.readouterr().err


def test_run_with_invalid_config_prints_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: tunix.dev/v1alpha1\nkind: TunixRun\nspec: {training: {steps: -1}}\n")
    assert cli.main(["run", str(bad), "--local", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tunix-rt: invalid config:") and "spec.training.steps" in err[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../escape", "metadata.name: '../escape' must be a DNS-1123 label"),
        ("/tmp/escape", "metadata.name: '/tmp/escape' must be a DNS-1123 label"),
        ("Tiny-Local", "metadata.name: 'Tiny-Local' must be a DNS-1123 label"),
        ("t" * 64, "metadata.name: 64 characters, at most 45"),
    ],
)
def test_names_the_api_server_refuses_are_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, name: str, expected: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    write_run(work, name=f"'{name}'")
    monkeypatch.chdir(work)
    assert cli.main(["validate", "run.yaml"]) == ExitCode.INVALID_CONFIG
    assert f"\n  {expected}" in capsys.readouterr().err
    assert cli.main(["run", "run.yaml", "--local", "--no-progress"]) == ExitCode.INVALID_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tunix-rt: invalid config: ") and expected in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "run.yaml", "tiny.jsonl", "work"]


def test_validate_names_a_duplicate_key_and_its_line(tmp_path, capsys) -> None:
    path = write_run(tmp_path)
    with open(path, "a") as f:
        f.write("  device: {kind: gpu}\n")
    assert cli.main(["validate", path]) == ExitCode.INVALID_CONFIG
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: invalid TunixRun",
        f"  {path}: line 13: duplicate key 'device' (first at line 12)",
    ]


def test_validate_a_config_that_is_not_utf8(tmp_path, capsys) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes(b"metadata: {name: caf\xe9}\n")
    assert cli.main(["validate", str(path)]) == ExitCode.INVALID_CONFIG
    err = capsys.readouterr().err
    assert f"{path}: not UTF-8 text: byte 0xe9 at line 1 (offset 20)" in err and "Traceback" not in err


def test_plot_without_matplotlib_fails_before_training(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["run", EXAMPLE, "--local", "--plot", "x.png"]) == 2
    assert "tunix-rt[plot]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pure helpers


def test_with_steps_revalidates_and_caps_warmup() -> None:
    run = load_run(EXAMPLE)
    assert cli.with_steps(run, None) is run
    short = cli.with_steps(run, 6)
    assert short.spec.training.steps == 6 and short.spec.training.warmup_steps == 6
    assert short.name == run.name and short.config_hash != run.config_hash
    assert short.spec.model == run.spec.model


def test_format_progress_line() -> None:
    assert cli.format_progress(120, 300, 2.31449, 12345.4, 14.2) == (
        "[########............] 120/300  loss 2.314  12,345 tok/s  ETA 0:00:14"
    )
    assert cli.format_progress(0, 10, float("nan"), None, None, width=10) == (
        "[..........] 0/10  loss nan  - tok/s  ETA -:--:--"
    )
    assert cli.format_duration(3 * 3600 + 61) == "3:01:01"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress_record(step: int, total: int) -> dict:
    return {"step": step, "total_steps": total, "loss": 1.0, "tokens_per_second": 10.0, "eta_seconds": 1.0}


def test_plain_progress_prints_every_tenth_and_the_end() -> None:
    stream, clock = io.StringIO(), Clock()
    display = cli.ProgressDisplay(stream, tty=False, clock=clock)
    for step in range(1, 101):
        display.update(progress_record(step, 100))
    display.finish()
    lines = stream.getvalue().splitlines()
    marks = (1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100)
    assert [line.split()[1] for line in lines] == [f"{s}/100" for s in marks]
    assert "\r" not in stream.getvalue()


def test_tty_progress_redraws_one_line() -> None:
    stream, clock = io.StringIO(), Clock()
    display = cli.ProgressDisplay(stream, tty=True, clock=clock)
    for step in range(1, 6):
        clock.now += 0.05  # every other update is within the redraw interval
        display.update(progress_record(step, 5))
    display.finish()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "5/5" in text


def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    display = cli.ProgressDisplay(stream, tty=True, enabled=False)
    display.update(progress_record(1, 1))
    display.finish()
    assert stream.getvalue() == ""


# ----------------------------------------------------------------------------- status


SUMMARY = {
    "final_loss": 1.25,
    "best_loss": 1.2,
    "best_step": 290,
    "total_steps": 300,
    "total_tokens": 614_400,
    "avg_tokens_per_second": 5000.0,
    "wall_time_seconds": 130.5,
    "provenance": {"config_hash": "sha256:abc", "device_count": 1, "devices": ["cpu:0"]},
}


def test_status_from_summary_shape() -> None:
    status = status_from_summary(
        SUMMARY,
        metrics_uri="s3://b/run/metrics.jsonl",
        checkpoint_uri="/checkpoints",
        latest_checkpoint_step=300,
    )
    assert status == {
        "phase": "Succeeded",
        "summary": {
            "finalLoss": 1.25,
            "bestLoss": 1.2,
            "bestStep": 290,
            "totalSteps": 300,
            "totalTokens": 614400,
            "avgTokensPerSecond": 5000.0,
            "wallTimeSeconds": 130.5,
        },
        "checkpoint": {"latestStep": 300, "uri": "/checkpoints"},
        "metricsUri": "s3://b/run/metrics.jsonl",
        "provenance": {"config_hash": "sha256:abc", "device_count": "1", "devices": '["cpu:0"]'},
    }
    parsed = TunixRunStatus.model_validate(status)
    assert parsed.phase == Phase.SUCCEEDED and parsed.to_wire() == status


def test_summary_mapping_accepts_both_spellings_and_ignores_extras() -> None:
    camel = {"finalLoss": 1.0, "totalSteps": 3, "provenance": {"a": "b"}, "newerField": 1}
    snake = {"final_loss": 1.0, "total_steps": 3, "unknown": True}
    assert (
        Summary.model_validate(camel)
        == Summary.model_validate(snake)
        == Summary(final_loss=1.0, total_steps=3)
    )
    assert provenance_strings({"n": 2, "s": "x", "d": {"b": 1, "a": [1]}}) == {
        "n": "2",
        "s": "x",
        "d": '{"a":[1],"b":1}',
    }


# ----------------------------------------------------------------------------- plot


RECORDS = [{"step": s, "loss": 4.0 / s} for s in range(1, 21)] + [{"step": 21, "loss": None}]


def test_loss_series_and_ema() -> None:
    steps, losses = loss_series([*reversed(RECORDS), {"step": 22, "loss": float("nan")}])
    assert steps == list(range(1, 21)) and losses[0] == 4.0
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_plot_loss_writes_a_png(tmp_path) -> None:
    out = tmp_path / "plots" / "loss.png"
    assert plot_loss(RECORDS, str(out), title="demo") == str(out)
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no finite loss"):
        render_loss_png([{"step": 1, "loss": None}])


def test_missing_matplotlib_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'tunix-rt\[plot\]'"):
        require_matplotlib()


# ----------------------------------------------------------------------------- end to end


class InterruptAt(cli.ProgressDisplay):
    """A progress display that presses Ctrl-C once the run has reached ``step``."""

    step = 3

    def update(self, record: dict) -> None:
        if record["step"] == self.step:
            os.kill(os.getpid(), signal.SIGINT)
        super().update(record)


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        return handle.read()


def metrics_steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_local_run_interrupted_then_resumed(tmp_path, monkeypatch, capsys) -> None:
    write_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    artifacts = tmp_path / "artifacts" / "tiny-local"

    handler_before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "ProgressDisplay", InterruptAt)
    assert cli.main(["run", "run.yaml", "--local", "--steps", "6"]) == ExitCode.PREEMPTED
    err = capsys.readouterr().err
    assert "stopping: saving a checkpoint" in err and "Run the same command again to resume" in err
    stopped_at = metrics_steps(artifacts / METRICS_FILE)[-1]
    assert 3 <= stopped_at < 6
    assert signal.getsignal(signal.SIGINT) is handler_before

    monkeypatch.setattr(cli, "ProgressDisplay", cli.ProgressDisplay)
    code = cli.main(["run", "run.yaml", "--local", "--steps", "6", "--plot", "loss.png"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    status = yaml.safe_load(captured.out)["status"]
    TunixRunStatus.model_validate(status)
    assert status["phase"] == "Succeeded"
    assert status["summary"]["totalSteps"] == 6
    assert status["checkpoint"] == {"latestStep": 6, "uri": str(artifacts / "checkpoints")}
    assert status["metricsUri"] == str(artifacts / METRICS_FILE)
    assert status["provenance"]["config_hash"].startswith("sha256:")
    assert metrics_steps(artifacts / METRICS_FILE) == [1, 2, 3, 4, 5, 6]  # each step exactly once
    assert json.loads((artifacts / SUMMARY_FILE).read_text())["total_steps"] == 6
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert "6/6" in captured.err  # not a TTY: plain progress lines


def test_local_run_stopped_before_the_first_step_does_not_claim_a_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    write_run(tmp_path)
    monkeypatch.chdir(tmp_path)

    @contextlib.contextmanager
    def stop_at_once(stop_event, notice=None):
        stop_event.set()
        yield

    monkeypatch.setattr(cli, "stop_on_signals", stop_at_once)
    assert cli.main(["run", "run.yaml", "--local", "--no-progress"]) == ExitCode.PREEMPTED
    err = capsys.readouterr().err
    assert "tunix-rt: stopped before the first step; no checkpoint was saved." in err
    assert "checkpoint in" not in err and "checkpoint saved" not in err


def test_local_run_with_artifacts_on_s3(tmp_path, monkeypatch, capsys, s3_bucket: str) -> None:
    bucket = s3_bucket
    write_run(tmp_path, name="on-s3")
    monkeypatch.chdir(tmp_path)
    target = f"{bucket}/runs/on-s3"
    argv = ["run", "run.yaml", "--local", "--steps", "4", "--artifacts", target, "--no-progress"]
    code = cli.main([*argv, "--plot", f"{target}/loss.png"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    status = yaml.safe_load(captured.out)["status"]
    assert status["metricsUri"] == f"{target}/{METRICS_FILE}"
    assert status["checkpoint"] == {"latestStep": 4, "uri": f"{target}/checkpoints"}
    assert [r["step"] for r in RunArtifacts(target).read_metrics()] == [1, 2, 3, 4]
    assert read_json(f"{target}/{SUMMARY_FILE}")["total_steps"] == 4
    assert read_bytes(f"{target}/loss.png").startswith(PNG_MAGIC)  # plotted from the S3 metrics
    assert "4/4" not in captured.err  # --no-progress
