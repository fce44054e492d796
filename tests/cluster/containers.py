"""The two kinds of container a process kubelet runs: a local process (in a private mount+UTS namespace,
through :mod:`tests.cluster.podshim`) and a simulated one (ended by a script or a test).

Each reports its end once, as an :class:`Exit`, and calls ``on_exit`` so the pod's worker looks again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tests.cluster.podstatus import now, terminated_reason

SHIM = pathlib.Path(__file__).with_name("podshim.py")
START_ERROR_EXIT = 128  # podshim's exit code when exec fails (runc's StartError)


def shim_command(spec_path: pathlib.Path) -> list[str]:
    """The container's first process: the shim, in a private mount and UTS namespace."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, "--mount", "--uts", "--propagation", "private", "--",
            sys.executable, "-I", "-S", str(SHIM), str(spec_path)]  # fmt: skip


@dataclass(frozen=True)
class Exit:
    """How a container ended: exit code, reason, the raw termination message, when."""

    exit_code: int
    reason: str
    message: bytes
    finished_at: str
    cannot_run: bool = False  # it never ran (no fallback to logs)


@dataclass
class ContainerResult:
    """How a simulated container ends: its exit code, termination message, and optional reason and log."""

    exit_code: int
    message: str = ""
    reason: str | None = None
    logs: str = ""


class SimulatedContainer:
    """Running from creation until :meth:`finish` (or a signal: SIGTERM ends it at once with 143)."""

    kind = "simulated"

    def __init__(self, name: str, log_path: pathlib.Path, on_exit: Callable[[], None]) -> None:
        self.name = name
        self.log_path = log_path
        self.started_at = now()
        self.exit: Exit | None = None
        self.done = threading.Event()
        self._on_exit = on_exit
        self._lock = threading.Lock()
        log_path.touch()

    def finish(self, result: ContainerResult) -> bool:
        """End with ``result`` (its log appended); False when it had already ended."""
        with self._lock:
            if self.exit is not None:
                return False
            if result.logs:
                with self.log_path.open("a") as log:
                    log.write(result.logs)
            reason = result.reason or terminated_reason(result.exit_code)
            self.exit = Exit(result.exit_code, reason, result.message.encode(), now())
        self.done.set()
        self._on_exit()
        return True

    def terminate(self) -> None:
        self.finish(ContainerResult(exit_code=128 + signal.SIGTERM))

    def kill(self) -> None:
        self.finish(ContainerResult(exit_code=128 + signal.SIGKILL))


class ProcessContainer:
    """``argv`` as a local process in its own session (process group), mount and UTS namespaces.

    ``mounts`` are podshim mounts; the termination-message file (``directory``/termination-log) is bound
    at ``message_path``. stdout and stderr go to ``log_path``. The whole process group is killed when the
    first process exits, as a container's processes end with it.
    """

    kind = "process"

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        mounts: Sequence[dict],
        hostname: str,
        cwd: str,
        message_path: str,
        directory: pathlib.Path,
        log_path: pathlib.Path,
        on_exit: Callable[[], None],
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.exit: Exit | None = None
        self.done = threading.Event()
        self._on_exit = on_exit
        directory.mkdir(parents=True, exist_ok=True)
        self._message_file = directory / "termination-log"
        self._message_file.write_bytes(b"")
        self._start_error = directory / "start-error"
        self._start_error.unlink(missing_ok=True)
        spec = {
            "mounts": [*mounts, {"source": str(self._message_file), "target": message_path}],
            "hostname": hostname,
            "argv": list(argv),
            "cwd": cwd,
            "scratch": str(directory),
            "startError": str(self._start_error),
        }
        spec_path = directory / "shim.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        command = shim_command(spec_path)
        self.started_at = now()
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._waiter = threading.Thread(
            target=self._wait, name=f"container-{name}-{self._proc.pid}", daemon=True
        )
        self._waiter.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _wait(self) -> None:
        code = self._proc.wait()
        self._signal(signal.SIGKILL)  # what is left of the container's processes
        exit_code = 128 - code if code < 0 else code
        start_error = self._start_error.read_text() if self._start_error.exists() else ""
        if exit_code == START_ERROR_EXIT and start_error:
            self.exit = Exit(exit_code, "StartError", start_error.encode(), now(), cannot_run=True)
        else:
            self.exit = Exit(exit_code, terminated_reason(exit_code), _read(self._message_file), now())
        self.done.set()
        self._on_exit()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to the container's processes."""
        if not self.done.is_set():
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the container's processes."""
        if not self.done.is_set():
            self._signal(signal.SIGKILL)


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


Container = SimulatedContainer | ProcessContainer
