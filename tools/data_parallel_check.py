"""Measure how far a 2-process data-parallel run's losses are from a 1-process run of the same batches.

    python tools/data_parallel_check.py [--steps 16] [--workdir DIR]

Runs the config of ``tests/trainer/test_multiprocess.py`` (the small CPU model) three ways, each as
``tunix-train`` processes on one CPU device each: one process; two processes meeting at a local
coordinator (gloo collectives); and two processes with a deliberate bug (process 1 is fed the rows
of process 0), to show what the test's tolerance catches. Prints the relative loss difference per
step against the tolerance of ``tests/trainer/data_parallel.py``. Figures: docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.trainer.conftest import SMALL_MODEL, SMALL_TRAINING, read_jsonl, write_dataset  # noqa: E402
from tests.trainer.data_parallel import loss_tolerance, max_relative_difference  # noqa: E402

TOKENS = SMALL_TRAINING["batchSize"] * SMALL_TRAINING["seqLen"]
TRAIN = "import sys; from tunix_trainer.train import main; sys.exit(main(sys.argv[1:]))"
WRONG_ROWS = """
import sys
import tunix_trainer.data as data

lanes = data.host_lanes
data.host_lanes = lambda batch_size, accum, index, count: lanes(batch_size, accum, 0, count)
from tunix_trainer.train import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(directory: pathlib.Path, steps: int) -> pathlib.Path:
    spec = {
        "model": SMALL_MODEL,
        "dataset": {"uri": str(write_dataset(directory / "data.jsonl"))},
        "device": {"kind": "cpu"},
        "training": {**SMALL_TRAINING, "steps": steps},
        "checkpoint": {"saveIntervalSteps": max(steps // 2, 1), "maxToKeep": 3},
        "metrics": {"flushEverySteps": 1, "progressIntervalSeconds": 0},
    }
    document = {
        "apiVersion": "tunix.dev/v1alpha1",
        "kind": "TunixRun",
        "metadata": {"name": "dp"},
        "spec": spec,
    }
    path = directory / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def train(directory: pathlib.Path, config: pathlib.Path, processes: int, code: str) -> list[dict[str, Any]]:
    """Metrics of one run of ``processes`` trainer processes (``code`` is the entry point)."""
    directory.mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for index in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        if processes > 1:
            env.update(
                TUNIX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                TUNIX_NUM_PROCESSES=str(processes),
                TUNIX_PROCESS_ID=str(index),
            )
        argv = [sys.executable, "-c", code, "--config", str(config), "--resume", "none",
                "--artifacts-uri", str(directory / f"artifacts-{index}"),
                "--checkpoint-uri", str(directory / "checkpoints")]  # fmt: skip
        log = (directory / f"process-{index}.log").open("w")
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [proc.wait() for proc in procs]
    if codes != [0] * processes:
        raise SystemExit(f"{directory}: exit codes {codes}; see process-*.log there")
    return read_jsonl(directory / "artifacts-0" / "metrics.jsonl")


def report(name: str, records: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    largest = max_relative_difference(records, reference, len(records))
    print(f"{name}: largest relative loss difference {largest:.3g}")
    for mine, ref in zip(records, reference, strict=True):
        step, diff = mine["step"], abs(mine["loss"] - ref["loss"]) / abs(ref["loss"])
        print(f"  step {step:3d}  {diff:.3g}  (tolerance {loss_tolerance(TOKENS, step):.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="data-parallel-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, args.steps)
    reference = train(workdir / "one", config, 1, TRAIN)
    report("2 processes", train(workdir / "two", config, 2, TRAIN), reference)
    report(
        "2 processes, process 1 fed process 0's rows",
        train(workdir / "bug", config, 2, WRONG_ROWS),
        reference,
    )


if __name__ == "__main__":
    main()
