"""Figures for docs/PERFORMANCE.md (issue 11): LoRA's memory and step time against full
fine-tuning, and the evaluation pass's share of training time, for SmolLM2-135M.

    python tools/measure_lora_eval.py --only memory            # state sizes, no weights read
    python tools/measure_lora_eval.py --only steps --steps 4   # step and eval-pass times
    python tools/measure_lora_eval.py --only flops --steps 3   # FLOPs and times of a step's parts

``memory`` builds the train states abstractly (``nnx.eval_shape``: shapes and dtypes only) from
``.cache/smollm2/config.json`` with the settings of ``examples/lora-smollm2.yaml``, and counts
bytes: parameters, optimizer state, and what a checkpoint holds (everything, or under LoRA all but
the frozen weights). ``steps`` times ``--steps`` training steps (after the compiling one) of the
example's shape (batchSize x seqLen, float32) with its LoRA settings and without them (full
fine-tuning), and one evaluation pass of ``maxBatches`` batches, in wall seconds and in CPU seconds
of this process (less sensitive to other jobs on a shared machine), on synthetic tokens.
``flops`` compiles three parts of a step at the example's shape, for full fine-tuning and LoRA
(with the example's dropout and without): the forward pass alone (the evaluation's), forward and
backward (the gradients the optimizer takes), and the whole step (with the AdamW update); for each
it reports XLA's own count of the compiled program (``compiled.cost_analysis()``: FLOPs, bytes
accessed, transcendentals) and the median CPU and wall seconds of ``--steps`` runs. The weights are
random (neither counts nor times depend on their values).
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


def _cost(compiled) -> dict:
    """FLOPs, bytes accessed and transcendentals of a compiled program, by XLA's cost analysis."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "flops": float(cost.get("flops", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "transcendentals": float(cost.get("transcendentals", 0.0)),
    }


def _timed(fn, args, n: int) -> dict:
    """Median wall and CPU seconds (this process) of ``n`` runs of ``fn(*args)`` after one warm-up."""
    import jax

    jax.block_until_ready(fn(*args))
    timings = []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        "wall_seconds_median": statistics.median(w for w, _ in timings),
        "cpu_seconds_median": statistics.median(c for _, c in timings),
    }


def flops(n: int, model_dir: Path, only: list[str] | None = None) -> dict:
    """XLA's FLOP count and the CPU time of the forward pass, forward + backward, and the whole
    step, full fine-tuning against LoRA (see the module docstring)."""
    import jax
    import yaml
    from flax import nnx

    from tunix_api.run import TunixRunSpec
    from tunix_trainer.data import SyntheticBatches
    from tunix_trainer.devices import make_mesh
    from tunix_trainer.evaluation import eval_sums
    from tunix_trainer.pretrained.hf_config import model_config_from_hf
    from tunix_trainer.train_step import accumulate_gradients, init_train_state, make_train_step, put_batch

    spec = TunixRunSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    config = json.loads((model_dir / "config.json").read_text())
    cfg = model_config_from_hf(
        config,
        source="config.json",
        valid_vocab_size=config["vocab_size"],
        compute_dtype="float32",
        param_dtype="float32",
    )
    mesh = make_mesh(jax.devices("cpu")[:1])
    t = spec.training
    data = SyntheticBatches(config["vocab_size"], batch_size=t.batch_size, seq_len=t.seq_len, seed=0)
    batch = put_batch(next(data), mesh, 1)  # [accum 1, batch, seq]
    flat = {k: v[0] for k, v in batch.items()}  # [batch, seq] for the forward pass
    out = {}
    variants = (
        ("full", None),
        ("lora", t.lora),
        ("lora, no dropout", t.lora.model_copy(update={"dropout": 0.0})),
    )
    for name, lora in variants:
        if only and name not in only:
            continue
        training = t.model_copy(update={"lora": lora})
        ts = init_train_state(cfg, training, mesh, t.seed)
        graphdef = ts.graphdef
        dropout = lora is not None and lora.dropout > 0

        def gradients(state, b, graphdef=graphdef, dropout=dropout):
            model, optimizer = nnx.merge(graphdef, state)
            key = jax.random.key(0) if dropout else None
            return accumulate_gradients(model, b, wrt=optimizer.wrt, dropout_key=key)

        parts = {
            "forward": (jax.jit(lambda s, b, g=graphdef: eval_sums(g, s, b)), flat),
            "forward_backward": (jax.jit(gradients), batch),
            "step": (make_train_step(graphdef, training, mesh, donate=False), batch),
        }
        out[name] = {}
        for part, (fn, b) in parts.items():
            start = time.perf_counter()
            compiled = fn.lower(ts.state, b).compile()
            figures = {**_cost(compiled), "compile_seconds": time.perf_counter() - start}
            figures.update(_timed(compiled, (ts.state, b), n))
            out[name][part] = figures
            print(name, part, json.dumps(figures), file=sys.stderr, flush=True)
        del ts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("memory", "steps", "flops"), action="append")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--variant",
        action="append",
        choices=("full", "lora", "lora, no dropout"),
        help="flops: only these (default all; the dropout one compiles for minutes on a CPU)",
    )
    parser.add_argument("--model", type=Path, default=REPO / ".cache" / "smollm2")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    only = args.only or ["memory", "steps", "flops"]
    out = {}
    if "memory" in only:
        out["memory"] = memory(args.model)
    if "steps" in only:
        out["steps"] = steps(args.steps, args.model)
    if "flops" in only:
        out["flops"] = flops(args.steps, args.model, args.variant)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
