"""A stand-in for ``tunix-train`` that the process kubelet runs as a real process, for tests of what the
operator makes of a trainer's progress: it "trains" ``FAKE_STEPS`` steps of ``FAKE_STEP_SECONDS``,
"saves a checkpoint" (a file holding the step) every ``FAKE_SAVE_EVERY`` steps and on SIGTERM (then
exits 75, preempted), writes progress.json as the real trainer does (attempt, step, restoredFrom,
checkpointStep/Time, updatedAt), resumes from its checkpoint, and at ``FAKE_HANG=<attempt>:<step>``
stops itself with SIGSTOP (a hung trainer: it can no longer even handle SIGTERM). At the end it writes
the summary to the termination message and exits 0.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import signal
import sys
import time

SCRIPT = """#!{python}
import sys
sys.path.insert(0, {root!r})
from tests.integration.fake_trainer import main
sys.exit(main(sys.argv[1:]))
"""


def install(bin_dir: pathlib.Path) -> pathlib.Path:
    """Write ``bin_dir/tunix-train`` running :func:`main` with this interpreter."""
    root = str(pathlib.Path(__file__).resolve().parents[2])
    path = bin_dir / "tunix-train"
    path.write_text(SCRIPT.format(python=sys.executable, root=root))
    path.chmod(0o755)
    return path


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: pathlib.Path, data: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def main(argv: list[str]) -> int:
    art = pathlib.Path(argv[argv.index("--artifacts-uri") + 1].removeprefix("file://"))
    art.mkdir(parents=True, exist_ok=True)
    attempt = int(os.environ["TUNIX_ATTEMPT"])
    steps = int(os.environ.get("FAKE_STEPS", "20"))
    pause = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    every = int(os.environ.get("FAKE_SAVE_EVERY", "4"))
    hang_attempt, _, hang_step = os.environ.get("FAKE_HANG", "-1:-1").partition(":")
    checkpoint = art / "fake-checkpoint.json"
    saved = json.loads(checkpoint.read_text()) if checkpoint.exists() else None
    restored = saved["step"] if saved else None
    state = {"step": restored or 0, "saved": saved}

    def report() -> None:
        doc = {
            "attempt": attempt,
            "step": state["step"],
            "totalSteps": steps,
            "loss": 2.0,
            "updatedAt": _now(),
        }
        if restored is not None:
            doc["restoredFrom"] = restored
        if state["saved"]:
            doc |= {"checkpointStep": state["saved"]["step"], "checkpointTime": state["saved"]["time"]}
        _write(art / "progress.json", doc)

    def save() -> None:
        state["saved"] = {"step": state["step"], "time": _now()}
        _write(checkpoint, state["saved"])

    def preempted(*_: object) -> None:
        save()
        report()
        sys.exit(75)

    signal.signal(signal.SIGTERM, preempted)
    while state["step"] < steps:
        time.sleep(pause)
        state["step"] += 1
        if state["step"] % every == 0:
            save()
        report()
        if attempt == int(hang_attempt) and state["step"] == int(hang_step):
            os.kill(os.getpid(), signal.SIGSTOP)
    pathlib.Path("/dev/termination-log").write_text(json.dumps({"finalLoss": 1.5, "totalSteps": steps}))
    return 0
