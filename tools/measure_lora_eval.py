"""Figures for docs/PERFORMANCE.md (issue 11): LoRA's memory and step time against full
fine-tuning, and the evaluation pass's share of training time, for SmolLM2-135M.

    python tools/measure_lora_eval.py --only memory            # state sizes, no weights read
    python tools/measure_lora_eval.py --only steps --steps 4   # step and eval-pass times

``memory`` builds the train states abstractly (``nnx.eval_shape``: shapes and dtypes only) from
``.cache/smollm2/config.json`` with the settings of ``examples/lora-smollm2.yaml``, and counts
bytes: parameters, optimizer state, and what a checkpoint holds (everything, or under LoRA all but
the frozen weights). ``steps`` times ``--steps`` training steps (after the compiling one) of the
example's shape (batchSize x seqLen, float32) with its LoRA settings and without them (full
fine-tuning), and one evaluation pass of ``maxBatches`` batches, in wall seconds and in CPU seconds
of this process (less sensitive to other jobs on a shared machine), on synthetic tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lora-smollm2.yaml"


def _bytes(tree) -> int:
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def memory(model_dir: Path) -> dict:
    import jax
    import yaml
    from flax import nnx

    from tunix_api.run import TunixRunSpec
    from tunix_trainer.lora import checkpointed
    from tunix_trainer.pretrained.hf_config import model_config_from_hf
    from tunix_trainer.train_step import build_model_and_optimizer

    config = json.loads((model_dir / "config.json").read_text())
    spec = TunixRunSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    out = {}
    for name, param_dtype, lora in (
        ("full", "float32", None),
        ("lora", "float32", spec.training.lora),
        ("lora, bfloat16 base", "bfloat16", spec.training.lora),
    ):
        training = spec.training.model_copy(update={"lora": lora, "param_dtype": param_dtype})
        cfg = model_config_from_hf(
            config,
            source="config.json",
            valid_vocab_size=config["vocab_size"],
            compute_dtype="float32",
            param_dtype=param_dtype,
        )
        model, optimizer = nnx.eval_shape(lambda t=training, c=cfg: build_model_and_optimizer(c, t, 0))
        state = nnx.state((model, optimizer))
        trainable = nnx.state(model, nnx.LoRAParam if lora else nnx.Param)
        out[name] = {
            "parameters": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
            "trained_parameters": sum(x.size for x in jax.tree.leaves(trainable)),
            "parameter_bytes": _bytes(nnx.state(model, nnx.Param)),
            "optimizer_bytes": _bytes(nnx.state(optimizer)),
            "checkpoint_bytes": _bytes(checkpointed(state, training)),
        }
    return out


def steps(n: int, model_dir: Path) -> dict:
    """CPU seconds (this process) and wall seconds per training step, LoRA and full, and of one
    evaluation pass of the example (maxBatches batches of batchSize rows), on synthetic tokens."""
    import jax
    import yaml

    from tunix_api.run import TunixRunSpec
    from tunix_trainer.data import SyntheticBatches
    from tunix_trainer.devices import make_mesh
    from tunix_trainer.evaluation import Evaluator
    from tunix_trainer.pretrained.loader import PretrainedModel
    from tunix_trainer.train_step import make_train_step, put_batch

    spec = TunixRunSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    mesh = make_mesh(jax.devices("cpu")[:1])
    pretrained = PretrainedModel(str(model_dir))
    cfg = pretrained.model_config(pretrained.vocab_size, "float32", "float32")
    t = spec.training
    data = SyntheticBatches(pretrained.vocab_size, batch_size=t.batch_size, seq_len=t.seq_len, seed=0)
    out = {}
    for name, lora in (("lora", t.lora), ("full", None)):
        training = t.model_copy(update={"lora": lora})
        ts = pretrained.init_train_state(cfg, training, mesh)
        step = make_train_step(ts.graphdef, training, mesh)
        state, timings = ts.state, []
        for i in range(n + 1):  # the first compiles
            batch = put_batch(next(data), mesh, 1)
            wall, cpu = time.perf_counter(), time.process_time()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            if i:
                timings.append((time.perf_counter() - wall, time.process_time() - cpu))
        eval_batches = [
            {k: getattr(b, k) for k in ("inputs", "targets", "loss_mask")}
            for b in (next(data) for _ in range(spec.evaluation.max_batches))
        ]
        evaluator = Evaluator(ts.graphdef, eval_batches, mesh)
        evaluator(state)  # compiles
        wall, cpu = time.perf_counter(), time.process_time()
        evaluator(state)
        eval_wall, eval_cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[name] = {
            "step_wall_seconds_median": statistics.median(w for w, _ in timings),
            "step_cpu_seconds_median": statistics.median(c for _, c in timings),
            "eval_pass_wall_seconds": eval_wall,
            "eval_pass_cpu_seconds": eval_cpu,
        }
        del state, ts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("memory", "steps"), action="append")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", type=Path, default=REPO / ".cache" / "smollm2")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    only = args.only or ["memory", "steps"]
    out = {}
    if "memory" in only:
        out["memory"] = memory(args.model)
    if "steps" in only:
        out["steps"] = steps(args.steps, args.model)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
