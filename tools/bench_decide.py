#!/usr/bin/env python3
"""CPU cost of one ``state.decide`` and the size of the status it writes, as the attempt history grows.

A Running run after ``n`` preempted attempts (each with progress, a checkpoint and an eviction),
decided ``--reps`` times on one new progress report; with ``n`` above the 20 kept records the oldest
are folded into ``status.earlierAttempts``. Prints one line per ``n``: CPU microseconds per decide
(``time.process_time``) and the status's compact JSON size in bytes (the object etcd stores).

    .venv/bin/python tools/bench_decide.py --attempts 0 5 20 100
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.operator.factories import at, job, pod, run_body
from tests.operator.test_attempts import ckpt, progress, running
from tests.operator.test_state import SETTINGS, step
from tunix_operator.state import Observed, decide


def history(n: int) -> dict:
    """A run whose attempts 0..n-1 were each preempted after some steps."""
    body = run_body(retryPolicy={"maxPreemptions": 10_000, "maxRestarts": 0})
    step(body)
    for a in range(n):
        t = 100 * a
        step(body, running(a, progress(a, 10 * a + 1, t + 10) | ckpt(10 * a, t + 5)), at(t + 10))
        evicted = Observed(job=job(f"r1-{a}"), pods=[pod(attempt=a, phase="Failed", reason="Evicted")])
        step(body, evicted, at(t + 100))
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, nargs="+", default=[0, 5, 20, 100])
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    for n in args.attempts:
        body = history(n)
        observed = running(n, progress(n, 10 * n + 5, 100 * n + 50) | ckpt(10 * n, 100 * n + 40))
        start = time.process_time()
        for _ in range(args.reps):
            decide(body, observed, at(100 * n + 60), SETTINGS)
        cpu_us = (time.process_time() - start) / args.reps * 1e6
        step(body, observed, at(100 * n + 60))
        size = len(json.dumps(body["status"], separators=(",", ":")))
        kept = len(body["status"]["attempts"])
        print(
            f"ended attempts {n:4d}: decide {cpu_us:6.0f} us CPU; status {size:6d} bytes; {kept} records kept"
        )


if __name__ == "__main__":
    main()
