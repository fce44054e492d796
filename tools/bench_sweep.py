#!/usr/bin/env python3
"""Run ``tunix-bench`` over several shapes and print one table (the H200 figures in
``docs/PERFORMANCE.md`` come from this script).

    PYTHONPATH=api:trainer_image python tools/bench_sweep.py --out DIR [--warmup 10] [--steps 50] \
        125m:b32:t1024 350m:b32:t1024:ckpt=5 1b:b8:t2048 "125m:b64:t1024:XLA_FLAGS=--flag=value"

Each case is ``PRESET:bBATCH:tSEQ`` followed by optional ``:key=value`` items: ``accum=N``
(gradAccumSteps), ``ckpt=N`` (``--checkpoint-cost N``), ``profile=1`` (``--profile``, summarised
with ``tools/profile_summary.py``), ``pretrained=DIR`` (``spec.model.pretrained.uri``: the shape
from that Hugging Face directory's config.json; PRESET is then only the case's label), ``lora=R``
(``spec.training.lora`` of rank R on all seven projections: only the adapters train, and the table's
"opt" column and ``benchmark.json``'s ``trainState`` show their optimizer state; MFU then still
counts 6 x parameters FLOP per token, so compare step times), and any
UPPER-CASE name as an environment variable of that run only (``XLA_FLAGS=...``). Every case runs
``examples/benchmark.yaml`` with those fields replaced, in its own process (so compile caches and
XLA flags never leak between cases). Output in ``DIR``: ``sweep.jsonl`` (one line per case: the
case, the exit code and its whole ``benchmark.json``), ``sweep.log`` (all output) and the table
on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = ROOT / "examples" / "benchmark.yaml"
LORA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Case:
    text: str
    preset: str
    batch: int
    seq: int
    accum: int = 1
    checkpoint_saves: int = 0
    profile: bool = False
    pretrained: str | None = None
    lora_rank: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in self.text)[:80]


def parse_case(text: str) -> Case:
    parts = text.split(":")
    if len(parts) < 3 or not parts[1].startswith("b") or not parts[2].startswith("t"):
        raise SystemExit(f"case {text!r}: expected PRESET:bBATCH:tSEQ[:key=value...]")
    case = Case(text, parts[0], int(parts[1][1:]), int(parts[2][1:]))
    for item in parts[3:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"case {text!r}: {item!r} is not key=value")
        if key == "accum":
            case.accum = int(value)
        elif key == "ckpt":
            case.checkpoint_saves = int(value)
        elif key == "profile":
            case.profile = value not in ("0", "false")
        elif key == "pretrained":
            case.pretrained = value
        elif key == "lora":
            case.lora_rank = int(value)
        elif key.isupper():
            case.env[key] = value
        else:
            raise SystemExit(f"case {text!r}: unknown option {key!r}")
    return case


def case_config(case: Case, device: str) -> dict:
    run = yaml.safe_load(BASE_CONFIG.read_text())
    run["spec"]["device"] = {"kind": device}
    run["metadata"]["name"] = f"bench-{case.preset}"
    if case.pretrained:  # the model's shape from its config.json (weights are not read)
        run["spec"]["model"] = {"pretrained": {"uri": case.pretrained}}
    else:
        run["spec"]["model"] = {"preset": case.preset}
    training = run["spec"]["training"]
    training.update(batchSize=case.batch, seqLen=case.seq, gradAccumSteps=case.accum)
    if case.lora_rank:
        training["lora"] = {"rank": case.lora_rank, "alpha": 2.0 * case.lora_rank, "targetModules": LORA_ALL}
    return run


def run_case(case: Case, out: Path, warmup: int, steps: int, device: str, log) -> dict:
    artifacts = Path(tempfile.mkdtemp(prefix=f"sweep-{case.slug}-"))
    config = artifacts / "run.json"
    config.write_text(json.dumps(case_config(case, device)))
    command = [sys.executable, "-m", "tunix_trainer.bench", "--config", str(config)]
    command += ["--artifacts-uri", str(artifacts), "--warmup", str(warmup), "--steps", str(steps)]
    command += ["--termination-log", str(artifacts / "termination")]
    if case.checkpoint_saves:
        command += ["--checkpoint-cost", str(case.checkpoint_saves)]
    if case.profile:
        command += ["--profile"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **case.env}
    log.write(f"\n===== {case.text}\n$ {' '.join(command)}\n")
    log.flush()
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    record: dict = {
        "case": case.text,
        "exitCode": proc.returncode,
        "wallSeconds": time.perf_counter() - start,
    }
    result = artifacts / "benchmark.json"
    if result.exists():
        record["benchmark"] = json.loads(result.read_text())
    if case.profile and (artifacts / "profile").exists():
        summary = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "profile_summary.py"), str(artifacts / "profile")],
            capture_output=True,
            text=True,
            check=False,
        )
        log.write(summary.stdout + summary.stderr)
        (out / f"profile-{case.slug}.txt").write_text(summary.stdout + summary.stderr)
    return record


def table_row(record: dict) -> str:
    bench = record.get("benchmark")
    if not bench:
        return f"| {record['case']} | exit {record['exitCode']} | | | | | | | |"
    mfu, memory = bench.get("mfu"), bench.get("peakMemoryBytes")
    ckpt = bench.get("checkpoint") or {}
    overhead = ckpt.get("amortizedOverheadPercent")
    optimizer = (bench.get("trainState") or {}).get("optimizerBytes")
    return (
        f"| {record['case']} | {bench['compileSeconds']:.1f} | {bench['stepTime']['p50Ms']:.2f} | "
        f"{bench['steadyState']['stepTimeMs']:.2f} | {bench['tokensPerSecond']:,.0f} | "
        f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} | "
        f"{'-' if memory is None else f'{memory / 2**30:.1f} GiB'} | "
        f"{'-' if overhead is None else f'{overhead:.3f}'} | "
        f"{'-' if optimizer is None else f'{optimizer / 2**20:,.1f} MiB'} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="gpu", help="spec.device.kind (default gpu).")
    parser.add_argument("cases", nargs="+", type=parse_case)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(args.out / "sweep.log", "a") as log, open(args.out / "sweep.jsonl", "a") as sink:
        for case in args.cases:
            record = run_case(case, args.out, args.warmup, args.steps, args.device, log)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            records.append(record)
            print(table_row(record), flush=True)
    print("| case | compile s | p50 ms | steady ms | tokens/s | MFU | peak mem | ckpt overhead % | opt |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for record in records:
        print(table_row(record))
    return 0 if all(r["exitCode"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
