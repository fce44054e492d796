"""Multi-process training on the CPU, as a multi-host run does it in a cluster.

Two ``tunix-train`` processes get what the operator gives the pods of an Indexed Job
(``TUNIX_COORDINATOR_ADDRESS``, ``TUNIX_NUM_PROCESSES``, ``TUNIX_PROCESS_ID``), rendezvous through
the coordinator and train data-parallel over one CPU device each with JAX's CPU collectives (gloo).
Their losses match a one-process run of the same global batches; only process 0 writes artifacts;
a SIGTERM to one process stops both at the same step with one checkpoint, and they resume from it.

The loss tolerance and its derivation: ``tests/trainer/data_parallel.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset
from tests.trainer.data_parallel import assert_losses_match
from tunix_api.exit_codes import ExitCode

pytestmark = pytest.mark.slow

STEPS = 100  # room for the stop: the processes agree on a step some steps (0.1 s here) after the signal
TOKENS = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]  # target tokens of a global batch
PROCESSES = 2
TIMEOUT = 240  # seconds for one multi-process attempt (compilation on a loaded 2-core machine)
COMPILE_CACHE = "jax-compile-cache"  # shared by the attempts: the second one compiles nothing


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of ``STEPS`` steps: periodic checkpoints every 40, every step logged and flushed."""
    root = tmp_path_factory.mktemp("multiprocess")
    document = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "mp"},
        "spec": {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(write_dataset(root / "data.jsonl"))},
            "device": {"kind": "cpu"},
            "training": {**SMALL_TRAINING, "steps": STEPS},
            "checkpoint": {"saveIntervalSteps": 40, "maxToKeep": 3},
            "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
        },
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(config: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The metrics of the same run in one process (this one)."""
    from tunix_trainer.train import main

    out = tmp_path_factory.mktemp("one-process")
    argv = ["--config", str(config), "--artifacts-uri", str(out), "--resume", "none"]
    assert main(argv, stop_event=threading.Event()) == ExitCode.SUCCESS
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    return records


class World:
    """``PROCESSES`` trainer processes of one attempt; artifacts per process, one checkpoint directory."""

    def __init__(self, root: Path, config: Path, resume: str) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        port = _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        for index in range(PROCESSES):
            env = {
                **os.environ,
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                "TUNIX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "TUNIX_NUM_PROCESSES": str(PROCESSES),
                "TUNIX_PROCESS_ID": str(index),
                "JAX_COMPILATION_CACHE_DIR": str(config.parent / COMPILE_CACHE),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            }
            argv = [
                sys.executable, "-m", "tunix_trainer.train", "--config", str(config),
                "--artifacts-uri", str(self.artifacts(index)), "--checkpoint-uri", str(self.checkpoints),
                "--resume", resume, "--termination-log", str(root / f"termination-{index}"),
            ]  # fmt: skip
            with open(self.log(index), "ab") as log:
                self.procs.append(
                    subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
                )

    def artifacts(self, index: int) -> Path:
        return self.root / f"artifacts-{index}"

    def log(self, index: int) -> Path:
        return self.root / f"process-{index}.log"

    def wait(self) -> list[int]:
        """Exit codes, once every process ended (all are killed after ``TIMEOUT``)."""
        deadline = time.monotonic() + TIMEOUT
        try:
            return [proc.wait(timeout=max(deadline - time.monotonic(), 1)) for proc in self.procs]
        finally:
            self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- process {i}\n{self.log(i).read_text()[-3000:]}" for i in range(PROCESSES))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _progress_step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_two_processes_train_like_one_stop_together_and_resume(
    config: Path, reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    world = World(tmp_path, config, resume="none")
    progress = world.artifacts(0) / "progress.json"
    deadline = time.monotonic() + TIMEOUT
    while _progress_step(progress) < 2:  # the processes met and trained two steps together
        if time.monotonic() > deadline or any(p.poll() is not None for p in world.procs):
            world.kill()
            pytest.fail("the processes did not reach step 2\n" + world.logs())
        time.sleep(0.01)
    world.procs[1].send_signal(signal.SIGTERM)  # one pod is evicted: both must stop after one step
    codes = world.wait()
    assert codes == [ExitCode.PREEMPTED] * PROCESSES, world.logs()
    stopped = _checkpoint_steps(world.checkpoints)[-1]
    assert 2 <= stopped < STEPS
    for index in range(PROCESSES):
        assert f"stopped by SIGTERM at step {stopped}" in world.log(index).read_text(), world.logs()
    metrics = world.artifacts(0) / "metrics.jsonl"
    assert_losses_match(read_jsonl(metrics), reference[:stopped], TOKENS)

    resumed = World(tmp_path, config, resume="latest")
    codes = resumed.wait()
    assert codes == [ExitCode.SUCCESS] * PROCESSES, resumed.logs()
    assert_losses_match(read_jsonl(metrics), reference, TOKENS)  # each step once, across the restart
    summary = json.loads((world.artifacts(0) / "summary.json").read_text())
    assert summary["total_steps"] == STEPS
    assert summary["provenance"]["process_count"] == PROCESSES
    assert summary["provenance"]["device_count"] == PROCESSES
    assert json.loads((tmp_path / "termination-0").read_text())["totalSteps"] == STEPS
    assert not world.artifacts(1).exists()  # only process 0 writes artifacts
    assert _checkpoint_steps(world.checkpoints)[-1] == STEPS
