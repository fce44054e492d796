"""Measure the pretrained-model path: load time, BPE tokenizer + packing throughput, fine-tune speed.

    python tools/measure_pretrained.py --model .cache/smollm2          # after `make smollm2`
    taskset -c 0 python tools/measure_pretrained.py --model .cache/smollm2 --only tokenize

Prints one JSON document:
* ``load``: seconds to read config.json + tokenizer and place every tensor of the model (float32)
  on the device, then the same again (warm page cache);
* ``tokenize``: seconds to the first batch and the sustained tokens/s of ``next(batches)`` (8 x 2048
  rows) over a seeded dataset: the streaming pipeline reads, parses, tokenizes (Hugging Face BPE,
  the chat template for prompt/completion records) and packs as it serves, in one thread with
  ``RAYON_NUM_THREADS=1`` (pin the process to one core with taskset for the figure);
  ``tools/bench_data.py throughput`` adds worker processes;
* ``finetune``: the example's training steps: processed tokens/s (batch x seqLen / step time,
  compile step excluded) and trained (completion) tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def measure_load(model: str) -> dict:
    import jax

    from tunix_trainer.devices import make_mesh
    from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
    from tunix_trainer.pretrained.loader import PretrainedModel

    mesh = make_mesh(jax.devices()[:1])
    out = {}
    for attempt in ("first", "again"):
        start = time.monotonic()
        pretrained = PretrainedModel(model)
        tokenizer = load_hf_tokenizer(pretrained.files, fallback_ids=pretrained.config)
        cfg = pretrained.model_config(tokenizer.vocab_size, "float32", "float32")
        params = pretrained.load_params(cfg, mesh)
        jax.block_until_ready(params)
        out[f"{attempt}_seconds"] = round(time.monotonic() - start, 2)
        del params
    return out


def measure_tokenize(model: str, records: int) -> dict:
    from tools.seed_dataset import seed_dataset
    from tunix_api.training import DatasetSpec
    from tunix_trainer.data import BatchIterator
    from tunix_trainer.pretrained.hf_tokenizer import load_hf_tokenizer
    from tunix_trainer.pretrained.source import ModelFiles

    tokenizer = load_hf_tokenizer(ModelFiles(model))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("text", "chat"):
            path = os.path.join(tmp, f"{kind}.jsonl")
            seed_dataset(kind, records, 1, path)
            spec = DatasetSpec(uri=path, packing=True)
            start = time.monotonic()
            batches = BatchIterator(spec, tokenizer, batch_size=8, seq_len=2048, seed=0)
            next(batches)
            seconds = time.monotonic() - start  # records are tokenized as batches are served
            start, served = time.monotonic(), 0
            while time.monotonic() - start < 10.0:  # streaming: read, parse, tokenize, pack
                served += next(batches).inputs.size
            batches.close()
            out[kind] = {
                "records": records,
                "bytes": os.path.getsize(path),
                "first_batch_seconds": round(seconds, 3),
                "tokens_per_second": round(served / (time.monotonic() - start)),
            }
    return out


def measure_finetune(steps: int) -> dict:
    from tunix_trainer.cli import with_steps
    from tunix_trainer.config import load_run
    from tunix_trainer.loop import train

    run = with_steps(load_run(str(REPO / "examples" / "finetune-smollm2.yaml"), base_dir=str(REPO)), steps)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        summary = train(run, artifacts_uri=os.path.join(tmp, "a"), checkpoint_uri=os.path.join(tmp, "c"))
        wall = time.monotonic() - start
        text = Path(tmp, "a", "metrics.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    timed = [r for r in records if not r["includes_compile"]]
    step_time = sum(r["step_time_seconds"] for r in timed) / len(timed)
    training = run.spec.training
    return {
        "steps": steps,
        "batch_size": training.batch_size,
        "seq_len": training.seq_len,
        "first_loss": records[0]["loss"],
        "final_loss": summary["final_loss"],
        "compile_step_seconds": round(records[0]["step_time_seconds"], 1),
        "step_seconds": round(step_time, 2),
        "processed_tokens_per_second": round(training.batch_size * training.seq_len / step_time),
        "trained_tokens_per_second": round(summary["avg_tokens_per_second"] or 0),
        "wall_seconds": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / ".cache" / "smollm2"))
    parser.add_argument("--records", type=int, default=20000, help="records per tokenize measurement")
    parser.add_argument("--steps", type=int, default=10, help="fine-tune steps (the first compiles)")
    parser.add_argument("--only", choices=("load", "tokenize", "finetune"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    result = {}
    if args.only in (None, "load"):
        result["load"] = measure_load(args.model)
    if args.only in (None, "tokenize"):
        result["tokenize"] = measure_tokenize(args.model, args.records)
    if args.only in (None, "finetune"):
        result["finetune"] = measure_finetune(args.steps)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
