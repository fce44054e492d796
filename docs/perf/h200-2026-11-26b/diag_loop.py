"""Run ``tunix-rt run ... --local`` with timestamps of each step's batch transfer, dispatch and
completion note, and Python's GC pauses (what delays a completion note). Writes the events to
``$OUT/diag-events.jsonl``. Run on the H200 by ``run4.sh`` (2026-11-26)."""

import gc
import json
import os
import threading
import time

import tunix_trainer.loop as loop_module
import tunix_trainer.step_timing as timing
from tunix_trainer import cli

EVENTS: list[dict] = []
T0 = time.perf_counter()
GC_START: dict[str, float] = {}


def event(kind: str, **fields) -> None:
    EVENTS.append(
        {
            "t_ms": round(1e3 * (time.perf_counter() - T0), 2),
            "kind": kind,
            "thread": threading.current_thread().name,
            **fields,
        }
    )


def on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        GC_START["t"] = time.perf_counter()
        return
    ms = 1e3 * (time.perf_counter() - GC_START.get("t", time.perf_counter()))
    if ms > 2:
        event("gc", gen=info.get("generation"), ms=round(ms, 2))


def install() -> None:
    gc.callbacks.append(on_gc)
    put, settle, watch = loop_module.put_batch, timing.Completion._settle, timing.CompletionWatch.watch

    def put_batch(*args, **kwargs):
        event("put_start")
        result = put(*args, **kwargs)
        event("put_end")
        return result

    def noted(self, moment, error):
        event("noted")
        settle(self, moment, error)

    def watched(self, outputs):
        event("dispatched")
        return watch(self, outputs)

    loop_module.put_batch = put_batch
    timing.Completion._settle = noted
    timing.CompletionWatch.watch = watched


def main() -> None:
    install()
    try:
        cli.main()
    finally:
        with open(os.path.join(os.environ["OUT"], "diag-events.jsonl"), "w") as f:
            for e in EVENTS:
                f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
