"""Run `tunix-rt run ... --local` with timestamps of each step's data, put, dispatch, completion note and
Python GC pauses (to see what delays a completion note). Writes events to $OUT/diag-events.jsonl."""
import gc, json, os, sys, threading, time
import tunix_trainer.loop as L
import tunix_trainer.step_timing as T

events = []
t0 = time.perf_counter()
def ev(kind, **kw):
    events.append({"t_ms": round(1e3 * (time.perf_counter() - t0), 2), "kind": kind, "thread": threading.current_thread().name, **kw})

gc_start = {}
def on_gc(phase, info):
    if phase == "start":
        gc_start["t"] = time.perf_counter()
    else:
        ms = 1e3 * (time.perf_counter() - gc_start.get("t", time.perf_counter()))
        if ms > 2:
            ev("gc", gen=info.get("generation"), ms=round(ms, 2))
gc.callbacks.append(on_gc)

orig_put = L.put_batch
def put_batch(*a, **k):
    ev("put_start"); r = orig_put(*a, **k); ev("put_end"); return r
L.put_batch = put_batch

orig_settle = T.Completion._settle
def _settle(self, moment, error):
    ev("noted"); orig_settle(self, moment, error)
T.Completion._settle = _settle

orig_watch = T.CompletionWatch.watch
def watch(self, outputs):
    ev("dispatched"); return orig_watch(self, outputs)
T.CompletionWatch.watch = watch

from tunix_trainer import cli
try:
    cli.main()
finally:
    with open(os.path.join(os.environ["OUT"], "diag-events.jsonl"), "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
