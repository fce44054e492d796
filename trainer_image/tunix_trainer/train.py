"""``tunix-train``: the trainer container's entry point.

    tunix-train --config PATH [--resume latest|none|N] [--artifacts-uri URI]
                [--checkpoint-uri URI] [--termination-log PATH]

Defaults: artifacts go to ``spec.storage.uri``, else ``./artifacts/<name>``; checkpoints to
``spec.checkpoint.uri``, else ``<artifacts>/checkpoints``; ``--resume`` defaults to ``$TUNIX_RESUME``,
else ``spec.checkpoint.resume``. SIGTERM/SIGINT save a checkpoint and exit PREEMPTED (75). The exit
code follows ``tunix_api.exit_codes``; a failure prints one line to stderr and a short message to
the termination log (``/dev/termination-log`` when present).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType

from tunix_api.artifacts import TERMINATION_LOG, TERMINATION_MESSAGE_LIMIT, join_uri
from tunix_api.exit_codes import ExitCode, exit_reason
from tunix_trainer.checkpoint import parse_resume
from tunix_trainer.config import LoadedRun, load_run
from tunix_trainer.data import DataError
from tunix_trainer.errors import TrainerError

PROG = "tunix-train"
_SIGINT_EXIT = 128 + signal.SIGINT


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Train a TunixRun (Train mode).")
    parser.add_argument("--config", required=True, help="TunixRun YAML/JSON, or just its spec.")
    parser.add_argument(
        "--resume",
        default=os.environ.get("TUNIX_RESUME") or None,
        help="latest | none | <step> (default: $TUNIX_RESUME, else spec.checkpoint.resume).",
    )
    parser.add_argument("--artifacts-uri", help="Where metrics/progress/summary go (path or URI).")
    parser.add_argument("--checkpoint-uri", help="Checkpoint directory (path or URI).")
    parser.add_argument(
        "--termination-log",
        help=f"Termination message file (default: {TERMINATION_LOG} when it exists).",
    )
    return parser.parse_args(argv)


def default_uris(run: LoadedRun, artifacts_uri: str | None, checkpoint_uri: str | None) -> tuple[str, str]:
    """(artifacts, checkpoints) after applying the documented defaults."""
    artifacts = artifacts_uri or run.spec.storage.uri or os.path.join("artifacts", run.name)
    checkpoints = checkpoint_uri or run.spec.checkpoint.uri or join_uri(artifacts, "checkpoints")
    return artifacts, checkpoints


def install_signal_handlers(stop_event: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to checkpoint and stop; a second SIGINT interrupts at once."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_event.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main(argv: Sequence[str] | None = None, *, stop_event: threading.Event | None = None) -> int:
    """Run the trainer; returns the process exit code. ``stop_event`` replaces the signal handlers."""
    args = parse_args(argv)
    termination_log = args.termination_log or (TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)
    if stop_event is None:
        stop_event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            install_signal_handlers(stop_event)
    try:
        from tunix_trainer.devices import maybe_initialize_distributed  # imports JAX
        from tunix_trainer.loop import train

        if args.resume is not None:
            parse_resume(args.resume)  # reject a bad value before any work
        maybe_initialize_distributed()
        run = load_run(args.config)
        artifacts_uri, checkpoint_uri = default_uris(run, args.artifacts_uri, args.checkpoint_uri)
        summary = train(
            run,
            artifacts_uri=artifacts_uri,
            checkpoint_uri=checkpoint_uri,
            termination_log=termination_log,
            stop_event=stop_event,
            resume=args.resume,
        )
    except TrainerError as exc:
        return fail(exc.exit_code, exc.label, str(exc), termination_log)
    except DataError as exc:
        return fail(ExitCode.DATA_ERROR, "data error", str(exc), termination_log)
    except KeyboardInterrupt:
        return fail(
            _SIGINT_EXIT, "interrupted", "interrupted before a checkpoint could be saved", termination_log
        )
    except Exception as exc:
        traceback.print_exc()
        return fail(ExitCode.ERROR, "error", f"{type(exc).__name__}: {exc}", termination_log)
    print(json.dumps(summary, separators=(",", ":"), default=str))
    return ExitCode.SUCCESS


def fail(code: int, label: str, message: str, termination_log: str | None) -> int:
    """Print one line to stderr, write the termination message, return ``code``."""
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or label
    print(f"{PROG}: {label}: {line}", file=sys.stderr)
    if termination_log:
        write_termination_message(termination_log, f"{exit_reason(code)}: {line}")
    return int(code)


def write_termination_message(path: str, message: str) -> None:
    """Best effort: the kubelet keeps the first 4 KiB."""
    data = message.encode("utf-8")[: TERMINATION_MESSAGE_LIMIT - 1].decode("utf-8", "ignore")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(data)
    except OSError as exc:
        print(f"{PROG}: cannot write the termination message to {path}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
