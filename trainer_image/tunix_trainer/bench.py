"""``tunix-bench``: time the trainer's training step for a TunixRun (Benchmark mode).

    tunix-bench --config PATH [--artifacts-uri URI] [--warmup N] [--steps N] [--profile]
                [--checkpoint-cost N] [--json] [--termination-log PATH]

Reads the same TunixRun as ``tunix-train`` (``spec.mode`` Benchmark; Train is accepted too) and
runs the same jitted step on synthetic tokens at the model's full vocabulary (or the dataset
when ``spec.benchmark.syntheticData`` is false). Writes no checkpoints. Reports compile time,
per-step latency percentiles (each step awaited), steady-state throughput (steps dispatched back
to back) and MFU from the latter: ``flops_per_token * tokens_per_step / step_time / (peak *
devices)`` with ``flops_per_token = 6N + 6*L*T*H*h`` (attention counted once, for causality).
``--checkpoint-cost N`` then times N asynchronous Orbax saves of the state into a temporary
directory (blocking and durable time, size, and the amortised overhead at
``spec.checkpoint.saveIntervalSteps``); reported in ``benchmark.json`` and the table only.

Outputs: ``benchmark.json`` in the artifacts directory (``--artifacts-uri``, else
``spec.storage.uri``, else ``./artifacts/<name>``), a table (or the JSON with ``--json``) on
stdout, and a compact JSON with the fields of ``tunix_api.run.BenchmarkStatus`` plus
``"kind": "benchmark"`` in the termination log. Exit codes follow ``tunix_api.exit_codes``
(invalid config: 2; SIGTERM: 75), with one line on stderr for a failure, as ``tunix-train``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence

from pydantic import ValidationError

from tunix_api.artifacts import BENCHMARK_FILE, TERMINATION_LOG, join_uri
from tunix_api.exit_codes import ExitCode
from tunix_api.training import BenchmarkSpec
from tunix_trainer.config import format_validation_error, load_run
from tunix_trainer.entry import default_termination_log, run_guarded, stop_event_for
from tunix_trainer.errors import ConfigError
from tunix_trainer.termination import write_termination_message

PROG = "tunix-bench"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Benchmark the training step of a TunixRun.")
    parser.add_argument("--config", required=True, help="TunixRun YAML/JSON, or just its spec.")
    parser.add_argument("--artifacts-uri", help="Where benchmark.json (and the profile) go (path or URI).")
    parser.add_argument("--warmup", type=int, help="Warm-up steps (default: spec.benchmark.warmupSteps).")
    parser.add_argument("--steps", type=int, help="Measured steps (default: spec.benchmark.measureSteps).")
    parser.add_argument(
        "--profile",
        action="store_true",
        default=None,
        help="Capture a jax.profiler trace into <artifacts>/profile.",
    )
    parser.add_argument(
        "--checkpoint-cost",
        type=int,
        default=0,
        metavar="N",
        help="After the timed windows, time N async checkpoint saves into a temporary directory "
        "(default 0: off).",
    )
    parser.add_argument("--json", action="store_true", help="Print benchmark.json instead of a table.")
    parser.add_argument(
        "--termination-log", help=f"Termination message file (default: {TERMINATION_LOG} when it exists)."
    )
    return parser.parse_args(argv)


def resolve_settings(
    spec: BenchmarkSpec | None, *, warmup: int | None, steps: int | None, profile: bool | None
) -> BenchmarkSpec:
    """``spec.benchmark`` (defaults when absent) with the command-line overrides applied and validated."""
    values = (spec or BenchmarkSpec()).model_dump(by_alias=True)
    overrides = {"warmupSteps": warmup, "measureSteps": steps, "profile": profile}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return BenchmarkSpec.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix=("spec", "benchmark"))) from exc


def main(argv: Sequence[str] | None = None, *, stop_event: threading.Event | None = None) -> int:
    """Run the benchmark; returns the exit code. ``stop_event`` replaces the signal handlers."""
    args = parse_args(argv)
    termination_log = default_termination_log(args.termination_log)
    stop_event = stop_event_for(stop_event)

    def body() -> int:
        import jax

        from tunix_api.storage import fsspec_options
        from tunix_trainer.artifacts import write_json
        from tunix_trainer.benchmark.report import format_table, termination_message
        from tunix_trainer.benchmark.session import run_benchmark  # imports JAX
        from tunix_trainer.devices import maybe_initialize_distributed

        maybe_initialize_distributed()
        run = load_run(args.config)
        settings = resolve_settings(
            run.spec.benchmark, warmup=args.warmup, steps=args.steps, profile=args.profile
        )
        artifacts_uri = args.artifacts_uri or run.spec.storage.uri or os.path.join("artifacts", run.name)
        result = run_benchmark(
            run,
            settings,
            artifacts_uri=artifacts_uri,
            stop_event=stop_event,
            checkpoint_saves=args.checkpoint_cost,
        )
        document = result.to_json()
        if jax.process_index() == 0:
            target = join_uri(artifacts_uri, BENCHMARK_FILE)
            write_json(target, document, fsspec_options(artifacts_uri, run.spec.storage))
        write_termination_message(termination_log, termination_message(result))
        print(json.dumps(document, indent=2) if args.json else format_table(result))
        return ExitCode.SUCCESS

    return run_guarded(PROG, termination_log, body)


if __name__ == "__main__":
    sys.exit(main())
