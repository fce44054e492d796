"""``tunix-rt``: validate a TunixRun, or run it on this machine with the in-cluster trainer.

    tunix-rt validate FILE
    tunix-rt run FILE --local [--artifacts DIR] [--steps N] [--plot PNG] [--no-progress]
                              [--resume latest|none|N]

A local run validates the same YAML a cluster would get, trains in this process, writes
the same artifacts (metrics.jsonl, progress.json, summary.json, checkpoints) and prints the
``.status`` block the operator would set. Ctrl-C saves a checkpoint and exits 75
(PREEMPTED); running the same command again resumes from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import yaml

from tunix_api.artifacts import METRICS_FILE, join_uri
from tunix_api.exit_codes import ExitCode
from tunix_api.run import API_VERSION, KIND
from tunix_api.training import RESUME_PATTERN
from tunix_trainer.config import LoadedRun, load_run, parse_run
from tunix_trainer.entry import INTERRUPTED, report_failure, stop_on_signals
from tunix_trainer.errors import ConfigError, PreemptedError
from tunix_trainer.locations import run_locations
from tunix_trainer.plot import PlotUnavailable, plot_loss, require_matplotlib
from tunix_trainer.status import status_from_summary

log = logging.getLogger("tunix_trainer.cli")

PROG = "tunix-rt"


# --------------------------------------------------------------------------- pure helpers


def with_steps(run: LoadedRun, steps: int | None) -> LoadedRun:
    """``run`` with ``spec.training.steps`` overridden and validated again (config hash updated).

    ``warmupSteps`` is lowered to at most the new step count.
    """
    if steps is None:
        return run
    spec = run.spec.to_wire()
    training = spec["training"]
    training["steps"] = steps
    training["warmupSteps"] = min(training.get("warmupSteps", 0), steps)
    metadata = {"name": run.name} | ({"namespace": run.namespace} if run.namespace else {})
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    return parse_run(document, base_dir=run.base_dir)


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS``; ``-:--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "-:--:--"
    total = round(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def format_progress(
    step: int,
    total: int,
    loss: float | None,
    tokens_per_second: float | None,
    eta_seconds: float | None,
    width: int = 20,
    eval_loss: float | None = None,
) -> str:
    """``[#####.....] 120/300  loss 2.314  12,345 tok/s  ETA 0:00:14`` (``eval 2.401`` after the loss
    once an evaluation ran)."""
    filled = min(width, width * step // total) if total > 0 else 0
    loss_text = f"{loss:.3f}" if isinstance(loss, int | float) and loss == loss else "nan"
    rate = f"{tokens_per_second:,.0f}" if isinstance(tokens_per_second, int | float) else "-"
    evaluated = f"  eval {eval_loss:.3f}" if isinstance(eval_loss, int | float) else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {step}/{total}  loss {loss_text}{evaluated}  "
        f"{rate} tok/s  ETA {format_duration(eta_seconds)}"
    )


# --------------------------------------------------------------------------- progress display


class ProgressDisplay:
    """Shows ``on_progress`` records: a live bar on a TTY, a line every 10% (or minute) otherwise."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        redraw_seconds: float = 0.1,
        line_seconds: float = 60.0,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.enabled = enabled
        self._clock = clock
        self._redraw_seconds = redraw_seconds
        self._line_seconds = line_seconds
        self._last_draw: float | None = None
        self._next_mark = 0
        self._bar_shown = False

    def update(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        step, total = int(record["step"]), int(record.get("total_steps") or 0)
        now, final = self._clock(), step >= total > 0
        line = format_progress(
            step,
            total,
            record.get("loss"),
            record.get("tokens_per_second"),
            record.get("eta_seconds"),
            eval_loss=record.get("eval_loss"),
        )
        if self.tty:
            if final or self._last_draw is None or now - self._last_draw >= self._redraw_seconds:
                self.stream.write("\r" + line + "\x1b[K")
                self.stream.flush()
                self._last_draw, self._bar_shown = now, True
            return
        due = self._last_draw is None or now - self._last_draw >= self._line_seconds
        if final or step >= self._next_mark or due:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_draw = now
            self._next_mark = step + max(total // 10, 1)

    def finish(self) -> None:
        """End the live bar's line so later output starts on a fresh line."""
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


# --------------------------------------------------------------------------- commands


def _notice(stream: TextIO) -> None:
    stream.write("\nstopping: saving a checkpoint (Ctrl-C again to abort)\n")
    stream.flush()


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        run = load_run(args.file, base_dir=os.getcwd())
    except ConfigError as exc:
        print(f"{args.file}: invalid TunixRun", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return int(exc.exit_code)
    spec = run.spec
    print(f"OK: {run.name} ({spec.mode.value}, {spec.training.steps} steps, {run.config_hash})")
    return int(ExitCode.SUCCESS)


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        print(
            f"{PROG}: run needs --local (to run on a cluster: kubectl apply -f {args.file})", file=sys.stderr
        )
        return int(ExitCode.INVALID_CONFIG)
    display = ProgressDisplay(sys.stderr, enabled=not args.no_progress)
    try:
        if args.plot:
            require_matplotlib()
        run = with_steps(load_run(args.file, base_dir=os.getcwd()), args.steps)
        return _run_local(run, args, display)
    except PlotUnavailable as exc:
        print(f"{PROG}: --plot: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    except KeyboardInterrupt:
        display.finish()
        print(f"{PROG}: aborted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        display.finish()
        log.debug("run failed", exc_info=True)
        return report_failure(PROG, exc, termination_log=None)


def _run_local(run: LoadedRun, args: argparse.Namespace, display: ProgressDisplay) -> int:
    from tunix_api.storage import fsspec_options
    from tunix_trainer.artifacts import RunArtifacts
    from tunix_trainer.loop import train  # JAX: imported only to train

    artifacts_uri, checkpoint_uri = run_locations(run, args.artifacts)
    print(f"{PROG}: running {run.name}: artifacts in {artifacts_uri}", file=sys.stderr)
    stop_event = threading.Event()
    try:
        with stop_on_signals(stop_event, notice=lambda: _notice(sys.stderr)):
            summary = train(
                run,
                artifacts_uri=artifacts_uri,
                checkpoint_uri=checkpoint_uri,
                on_progress=display.update,
                stop_event=stop_event,
                resume=args.resume,
            )
    except PreemptedError as exc:
        display.finish()
        if exc.step == 0:
            print(f"{PROG}: stopped before the first step; no checkpoint was saved.", file=sys.stderr)
        else:
            print(
                f"{PROG}: stopped after step {exc.step}; checkpoint in {checkpoint_uri}. "
                "Run the same command again to resume.",
                file=sys.stderr,
            )
        return int(exc.exit_code)
    display.finish()

    status = status_from_summary(
        summary,
        metrics_uri=join_uri(artifacts_uri, METRICS_FILE),
        checkpoint_uri=checkpoint_uri,
        latest_checkpoint_step=latest_checkpoint_step(run, checkpoint_uri),
    )
    sys.stdout.write(yaml.safe_dump({"status": status}, sort_keys=False))
    if args.plot:
        options = fsspec_options(artifacts_uri, run.spec.storage)
        records = RunArtifacts(artifacts_uri, storage_options=options).read_metrics()
        what = "training and evaluation loss" if run.spec.evaluation else "training loss"
        plot_loss(records, args.plot, title=f"{run.name}: {what}")
        print(f"{PROG}: loss curve written to {args.plot}", file=sys.stderr)
    return int(ExitCode.SUCCESS)


def latest_checkpoint_step(run: LoadedRun, checkpoint_uri: str) -> int | None:
    """The newest durable checkpoint step of the run."""
    from tunix_api.storage import fsspec_options
    from tunix_trainer.checkpoint import Checkpointer

    checkpointer = Checkpointer(
        checkpoint_uri,
        save_interval_steps=run.spec.checkpoint.save_interval_steps,
        max_to_keep=run.spec.checkpoint.max_to_keep,
        storage_options=fsspec_options(checkpoint_uri, run.spec.storage),
    )
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


# --------------------------------------------------------------------------- entry point


def _resume(value: str) -> str:
    if not re.match(RESUME_PATTERN, value):
        raise argparse.ArgumentTypeError("expected latest, none or a step number")
    return value


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Validate or locally run a TunixRun.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks)")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="validate a TunixRun file")
    validate.add_argument("file", help="TunixRun YAML (or its spec alone)")
    validate.set_defaults(func=cmd_validate)

    run = commands.add_parser("run", help="run a TunixRun")
    run.add_argument("file", help="TunixRun YAML (or its spec alone)")
    run.add_argument("--local", action="store_true", help="train on this machine, in this process")
    run.add_argument("--artifacts", metavar="DIR", help="artifact directory or URI (./artifacts/<name>)")
    run.add_argument("--steps", type=_positive, metavar="N", help="override spec.training.steps")
    run.add_argument("--plot", metavar="PNG", help="write the loss curve to this PNG at the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    run.add_argument(
        "--resume", type=_resume, metavar="latest|none|N", help="override spec.checkpoint.resume"
    )
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (exit 2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else int(ExitCode.INVALID_CONFIG)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
