"""``tunix-train``: the trainer container's entry point.

    tunix-train --config PATH [--resume latest|none|N] [--artifacts-uri URI]
                [--checkpoint-uri URI] [--termination-log PATH]

Defaults: artifacts go to ``spec.storage.uri``, else ``./artifacts/<name>``; checkpoints to
``spec.checkpoint.uri``, else ``<artifacts>/checkpoints``; ``--resume`` defaults to ``$TUNIX_RESUME``,
else ``spec.checkpoint.resume``. SIGTERM/SIGINT save a checkpoint and exit PREEMPTED (75). The exit
code follows ``tunix_api.exit_codes``; a failure prints one line to stderr and a short message to
the termination log (``/dev/termination-log`` when present). In a multi-host run (``TUNIX_NUM_PROCESSES``
> 1) only process 0 writes artifacts, the termination summary and the summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence

from tunix_api.artifacts import TERMINATION_LOG
from tunix_api.exit_codes import ExitCode
from tunix_trainer.checkpoint import parse_resume
from tunix_trainer.config import load_run
from tunix_trainer.entry import default_termination_log, run_guarded, stop_event_for
from tunix_trainer.locations import run_locations

PROG = "tunix-train"


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


def main(argv: Sequence[str] | None = None, *, stop_event: threading.Event | None = None) -> int:
    """Run the trainer; returns the process exit code. ``stop_event`` replaces the signal handlers."""
    args = parse_args(argv)
    termination_log = default_termination_log(args.termination_log)
    stop_event = stop_event_for(stop_event)

    def body() -> int:
        import jax

        from tunix_trainer.devices import maybe_initialize_distributed
        from tunix_trainer.loop import train

        if args.resume is not None:
            parse_resume(args.resume)  # reject a bad value before any work
        maybe_initialize_distributed()
        run = load_run(args.config)
        artifacts_uri, checkpoint_uri = run_locations(run, args.artifacts_uri, args.checkpoint_uri)
        summary = train(
            run,
            artifacts_uri=artifacts_uri,
            checkpoint_uri=checkpoint_uri,
            termination_log=termination_log,
            stop_event=stop_event,
            resume=args.resume,
        )
        if jax.process_index() == 0:  # the process that writes the artifacts
            print(json.dumps(summary, separators=(",", ":"), default=str))
        return ExitCode.SUCCESS

    return run_guarded(PROG, termination_log, body)


if __name__ == "__main__":
    sys.exit(main())
