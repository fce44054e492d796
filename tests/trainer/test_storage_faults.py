"""Storage faults: a failed metrics flush never leaves a checkpoint ahead of the metrics; outages of
object storage (refused and black-holed connections, through a proxy in front of moto) lose
nothing while shorter than the retry deadline and fail clearly past it.

``TUNIX_TEST_OUTAGE_SECONDS`` (default 3) sets the outage length of the outage tests, e.g. 60 to
reproduce the figure in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time

import fsspec
import pytest

from tests.trainer.conftest import read_jsonl
from tests.trainer.outage_proxy import OutageProxy
from tunix_api.exit_codes import ExitCode
from tunix_trainer import metric_store
from tunix_trainer.checkpoint import Checkpointer
from tunix_trainer.config import load_run
from tunix_trainer.entry import exit_code_of
from tunix_trainer.loop import train
from tunix_trainer.progress import ProgressWriter
from tunix_trainer.storage_retry import RetryPolicy, StorageUnavailableError, retrying
from tunix_trainer.train import main

OUTAGE_SECONDS = float(os.environ.get("TUNIX_TEST_OUTAGE_SECONDS", "3"))


# -- retries and best-effort progress (pure) -----------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retrying_backs_off_until_the_call_succeeds():
    fake, calls = FakeTime(), []

    def flaky() -> str:
        calls.append(fake.now)
        if len(calls) < 5:
            raise ConnectionRefusedError("refused")
        return "ok"

    policy = RetryPolicy(deadline=60, first_delay=0.25, max_delay=1.0)
    assert retrying("write of x", flaky, policy=policy, sleep=fake.sleep, clock=fake.clock) == "ok"
    assert fake.sleeps == [0.25, 0.5, 1.0, 1.0]


def test_retrying_gives_up_after_the_deadline_with_a_clear_message():
    fake = FakeTime()

    def down() -> None:
        raise TimeoutError("read timed out")

    policy = RetryPolicy(deadline=10, first_delay=1, max_delay=4)
    with pytest.raises(StorageUnavailableError) as info:
        retrying("write of b/run/metrics/chunk", down, policy=policy, sleep=fake.sleep, clock=fake.clock)
    assert str(info.value) == (
        "write of b/run/metrics/chunk: storage unreachable for 10 s "
        "(limit TUNIX_STORAGE_RETRY_SECONDS=10): TimeoutError: read timed out"
    )
    assert sum(fake.sleeps) == 10 and exit_code_of(info.value) == ExitCode.ERROR


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), PermissionError("denied"), ValueError("bug")])
def test_permanent_errors_are_not_retried(error):
    calls = []

    def fail() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        retrying("read of x", fail, policy=RetryPolicy(deadline=60), sleep=lambda s: None)
    assert calls == [1]


def test_bad_retry_setting_is_reported(monkeypatch):
    monkeypatch.setenv("TUNIX_STORAGE_RETRY_SECONDS", "soon")
    with pytest.raises(Exception, match=r"TUNIX_STORAGE_RETRY_SECONDS: expected a finite number"):
        RetryPolicy.from_env()


def test_progress_writes_are_best_effort():
    fake, written = FakeTime(), []
    fs = fsspec.filesystem("memory")
    failing = True

    def write(fs, path, data):
        if failing:
            raise ConnectionRefusedError("refused")
        written.append(json.loads(data))

    writer = ProgressWriter(fs, "/run", interval_seconds=0, quiet_seconds=30, clock=fake.clock, write=write)
    assert writer.write({"step": 1}) is False and writer.failures == 1  # no exception: training goes on
    fake.now = 10
    assert writer.write({"step": 2}, force=True) is False and writer.failures == 1  # quiet: not even tried
    failing, fake.now = False, 31
    assert writer.write({"step": 3}) is True and written == [{"step": 3}]


# -- item 3: metrics are durable before the checkpoint that resumes past them --------------------
def test_a_failed_flush_saves_no_checkpoint_and_the_next_attempt_loses_nothing(
    write_config, tmp_path, monkeypatch
):
    # Flushes happen only at checkpoints, so the checkpoint of step 4 needs the chunk of 1..4.
    config = write_config(metrics={"flushEverySteps": 100}, checkpoint={"saveIntervalSteps": 4})
    art = tmp_path / "art"
    real_write = metric_store.write_atomic
    failures = []

    def write_atomic(fs, path, data):
        if "chunk-" in path and path.endswith("-000000004.jsonl") and not failures:
            failures.append(path)
            raise OSError(28, "No space left on device (injected)")
        return real_write(fs, path, data)

    monkeypatch.setattr(metric_store, "write_atomic", write_atomic)
    assert main(["--config", str(config), "--artifacts-uri", str(art)]) == ExitCode.ERROR
    assert failures and not (art / "checkpoints" / "4").exists()  # no checkpoint ahead of the metrics

    assert main(["--config", str(config), "--artifacts-uri", str(art)]) == 0
    records = read_jsonl(art / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    summary = json.loads((art / "summary.json").read_text())
    assert summary["total_tokens"] == sum(r["tokens"] for r in records)


def test_a_run_never_exits_0_with_a_gap_in_its_metrics(write_config, tmp_path, capsys):
    config = write_config(checkpoint={"saveIntervalSteps": 4})
    art = tmp_path / "art"
    assert main(["--config", str(config), "--artifacts-uri", str(art)]) == 0
    # Metrics of steps 3..4 lost behind checkpoint 4 (as older trainers could leave them).
    kept = [r for r in read_jsonl(art / "metrics.jsonl") if r["step"] not in (3, 4)]
    shutil.rmtree(art / "metrics")
    (art / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    (art / "summary.json").unlink()
    code = main(["--config", str(config), "--artifacts-uri", str(art), "--resume", "4"])
    assert code == ExitCode.ERROR
    assert "the metrics of steps 3..4 were lost" in capsys.readouterr().err
    assert not (art / "summary.json").exists()


# -- item 4: outages of the object store ---------------------------------------------------------
@pytest.fixture
def proxied_s3(moto_server: str, s3_bucket: str, monkeypatch):
    """(proxy, bucket): the trainer reaches moto through an OutageProxy, with short timeouts."""
    import s3fs

    proxy = OutageProxy(int(moto_server.rsplit(":", 1)[1]))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.setenv("TUNIX_STORAGE_CONNECT_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("TUNIX_STORAGE_READ_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("TUNIX_STORAGE_RETRY_MAX_DELAY_SECONDS", "0.5")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield proxy, s3_bucket
    finally:
        proxy.close()
        s3fs.S3FileSystem.clear_instance_cache()


def _outage_at(step: int, proxy: OutageProxy, kind: str, seconds: float | None, timers: list):
    def on_progress(record: dict) -> None:
        if record["step"] == step and proxy.mode == "up" and not timers:
            getattr(proxy, kind)()
            timer = threading.Timer(seconds, proxy.restore) if seconds is not None else None
            timers.append(timer)
            if timer is not None:
                timer.start()

    return on_progress


@pytest.mark.parametrize("kind", ["refuse", "black_hole"])
def test_an_outage_shorter_than_the_deadline_loses_nothing(
    write_config, proxied_s3, kind, monkeypatch, caplog
):
    proxy, bucket = proxied_s3
    monkeypatch.setenv("TUNIX_STORAGE_RETRY_SECONDS", str(OUTAGE_SECONDS * 2 + 20))
    config = write_config(training={"steps": 12}, checkpoint={"saveIntervalSteps": 4, "maxToKeep": 2})
    art, ckpt = f"{bucket}/runs/unit", f"{bucket}/runs/unit/checkpoints"
    timers: list = []
    started = time.monotonic()
    summary = train(
        load_run(config),
        artifacts_uri=art,
        checkpoint_uri=ckpt,
        on_progress=_outage_at(3, proxy, kind, OUTAGE_SECONDS, timers),
    )
    elapsed = time.monotonic() - started
    assert timers and elapsed >= OUTAGE_SECONDS  # the outage happened during the run, which waited
    assert "retrying in" in caplog.text
    assert proxy.mode == "up"
    fs, _ = fsspec.core.url_to_fs(art)
    fs.invalidate_cache()
    records = [json.loads(line) for line in fs.cat_file(f"{art}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))  # complete, each step once
    assert summary["total_steps"] == 12 and summary["total_tokens"] == sum(r["tokens"] for r in records)
    assert json.loads(fs.cat_file(f"{art}/summary.json")) == summary
    assert Checkpointer(ckpt, save_interval_steps=4, max_to_keep=2).all_steps() == [8, 12]
    print(f"{kind} outage of {OUTAGE_SECONDS:.0f} s: run took {elapsed:.1f} s")


@pytest.mark.parametrize("kind", ["refuse", "black_hole"])
def test_an_outage_past_the_deadline_fails_with_a_clear_message(write_config, proxied_s3, kind, monkeypatch):
    proxy, bucket = proxied_s3
    monkeypatch.setenv("TUNIX_STORAGE_RETRY_SECONDS", "2")
    config = write_config()
    art = f"{bucket}/runs/unit"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        train(
            load_run(config),
            artifacts_uri=art,
            checkpoint_uri=f"{art}/checkpoints",
            on_progress=_outage_at(3, proxy, kind, None, []),
        )
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert message.startswith(f"write of {bucket.removeprefix('s3://')}/runs/unit/metrics/chunk-000000003-")
    assert re.search(r": storage unreachable for \d+ s \(limit TUNIX_STORAGE_RETRY_SECONDS=2\): \w+", message)
    assert exit_code_of(info.value) == ExitCode.ERROR  # retried by the operator, after its backoff
    assert elapsed < 60  # bounded: deadline + one try's timeouts + the final checkpoint wait


def test_outage_proxy_refuses_and_black_holes(moto_server):
    import socket

    proxy = OutageProxy(int(moto_server.rsplit(":", 1)[1]))
    try:
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        proxy.restore()
        proxy.black_hole()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as conn:
            conn.settimeout(1)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(TimeoutError):
                conn.recv(1)
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            conn.settimeout(5)
            assert conn.recv(12).startswith(b"HTTP/1.1")
    finally:
        proxy.close()
