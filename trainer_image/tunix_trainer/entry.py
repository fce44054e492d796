"""What the trainer's entry points share: stop signals, and errors mapped to exit codes.

``tunix-train``, ``tunix-bench`` and ``tunix-rt run --local`` all end the same way: an error
prints one line (``<prog>: <label>: <message>``), writes ``<Reason>: <message>`` to the termination
log when there is one, and returns its code from the ``tunix_api.exit_codes`` table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from tunix_api.artifacts import TERMINATION_LOG
from tunix_api.exit_codes import ExitCode, exit_reason
from tunix_trainer.termination import write_termination_message

log = logging.getLogger(__name__)

INTERRUPTED = 128 + signal.SIGINT  # a second Ctrl-C: stopped without a checkpoint


def default_termination_log(path: str | None) -> str | None:
    """``path``, else Kubernetes' ``/dev/termination-log`` when it exists (in a pod)."""
    return path or (TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)


def install_stop_handlers(
    stop_event: threading.Event, notice: Callable[[], None] | None = None
) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop_event`` (the loop checkpoints and stops; ``notice`` is called once);
    a second SIGINT raises KeyboardInterrupt at once. Returns the previous handlers."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_event.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop_event.set()
        if notice is not None:
            notice()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event, notice: Callable[[], None] | None = None) -> Iterator[None]:
    """:func:`install_stop_handlers` for the duration of the block (main thread only), then the
    previous handlers again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = install_stop_handlers(stop_event, notice)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_event_for(stop_event: threading.Event | None) -> threading.Event:
    """The given event, or a new one set by SIGTERM/SIGINT (handlers only from the main thread)."""
    if stop_event is not None:
        return stop_event
    event = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(event)
    return event


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code for an error raised by the trainer (ERROR when it carries none)."""
    from tunix_trainer.data import DataError  # NumPy: imported only once something failed

    code = getattr(exc, "exit_code", None)
    if isinstance(code, int) and code in ExitCode._value2member_map_:
        return ExitCode(code)
    return ExitCode.DATA_ERROR if isinstance(exc, DataError) else ExitCode.ERROR


def describe(exc: BaseException) -> tuple[str, str]:
    """(label, one-line message) for an error: ``("invalid config", "spec.training.steps: ...")``."""
    label = getattr(exc, "label", None)
    if label is not None:  # a TrainerError
        text = str(exc)
    elif exit_code_of(exc) == ExitCode.DATA_ERROR:
        label, text = "data error", str(exc)
    else:
        label, text = "error", f"{type(exc).__name__}: {exc}"
    return label, "; ".join(line.strip() for line in text.splitlines() if line.strip())


def report_failure(prog: str, exc: BaseException, termination_log: str | None) -> int:
    """Print the error's line, write the termination message, return the exit code."""
    code = exit_code_of(exc)
    label, message = describe(exc)
    print(f"{prog}: {label}: {message}" if message else f"{prog}: {label}", file=sys.stderr)
    write_termination_message(termination_log, f"{exit_reason(code)}: {message or label}")
    return int(code)


def run_guarded(prog: str, termination_log: str | None, body: Callable[[], int]) -> int:
    """Run an entry point's ``body`` and turn whatever it raises into an exit code."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted before a checkpoint could be saved", file=sys.stderr)
        write_termination_message(termination_log, "Interrupted: stopped before a checkpoint was saved")
        return INTERRUPTED
    except Exception as exc:
        if exit_code_of(exc) == ExitCode.ERROR:  # unexpected: the traceback is for the logs
            traceback.print_exc()
        return report_failure(prog, exc, termination_log)
