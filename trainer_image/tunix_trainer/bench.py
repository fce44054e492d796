"""``tunix-bench``: time the trainer's training step for a TunixRun (Benchmark mode).

    tunix-bench --config PATH [--artifacts-uri URI] [--warmup N] [--steps N] [--profile]
                [--json] [--termination-log PATH]

Reads the same TunixRun as ``tunix-train`` (``spec.mode`` Benchmark; Train is accepted too) and
runs the same jitted step on synthetic tokens at the model's full vocabulary (or the dataset
when ``spec.benchmark.syntheticData`` is false). Writes no checkpoints. Reports compile time,
per-step latency percentiles (each step awaited), steady-state throughput (steps dispatched back
to back) and MFU from the latter: ``flops_per_token * tokens_per_step / step_time / (peak *
devices)`` with ``flops_per_token = 6N + 6*L*T*H*h`` (attention counted once, for causality).

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
import traceback
from collections.abc import Sequence

from pydantic import ValidationError

from tunix_api.artifacts import TERMINATION_LOG
from tunix_api.exit_codes import ExitCode, exit_reason
from tunix_api.training import BenchmarkSpec
from tunix_trainer.config import format_validation_error, load_run
from tunix_trainer.data import DataError
from tunix_trainer.errors import ConfigError, TrainerError
from tunix_trainer.train import install_signal_handlers, write_termination_message

PROG = "tunix-bench"
_SIGINT_EXIT = 130


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
    termination_log = args.termination_log or (TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)
    if stop_event is None:
        stop_event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            install_signal_handlers(stop_event)
    try:
        from tunix_trainer.benchmark.output import write_benchmark_json
        from tunix_trainer.benchmark.output import write_termination_message as write_status
        from tunix_trainer.benchmark.report import format_table, termination_message
        from tunix_trainer.benchmark.session import run_benchmark  # imports JAX
        from tunix_trainer.devices import maybe_initialize_distributed

        maybe_initialize_distributed()
        run = load_run(args.config)
        settings = resolve_settings(
            run.spec.benchmark, warmup=args.warmup, steps=args.steps, profile=args.profile
        )
        artifacts_uri = args.artifacts_uri or run.spec.storage.uri or os.path.join("artifacts", run.name)
        result = run_benchmark(run, settings, artifacts_uri=artifacts_uri, stop_event=stop_event)
        document = result.to_json()
        import jax

        if jax.process_index() == 0:
            from tunix_trainer.loop import options_for

            write_benchmark_json(artifacts_uri, document, options_for(artifacts_uri, run.spec.storage))
        write_status(termination_log, termination_message(result))
    except TrainerError as exc:
        return fail(exc.exit_code, exc.label, str(exc), termination_log)
    except DataError as exc:
        return fail(ExitCode.DATA_ERROR, "data error", str(exc), termination_log)
    except KeyboardInterrupt:
        return fail(_SIGINT_EXIT, "interrupted", "interrupted", termination_log)
    except Exception as exc:
        traceback.print_exc()
        return fail(ExitCode.ERROR, "error", f"{type(exc).__name__}: {exc}", termination_log)
    print(json.dumps(document, indent=2) if args.json else format_table(result))
    return ExitCode.SUCCESS


def fail(code: int, label: str, message: str, termination_log: str | None) -> int:
    """Print one line to stderr, write the termination message, return ``code``."""
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or label
    print(f"{PROG}: {label}: {line}", file=sys.stderr)
    if termination_log:
        write_termination_message(termination_log, f"{exit_reason(code)}: {line}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
