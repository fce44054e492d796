"""The first process of a process container, run by the kubelet as
``unshare --mount --uts --propagation private -- python -I -S podshim.py <spec.json>``.

Inside its private mount and UTS namespaces it bind-mounts the pod's files and volumes where the
container expects them (the per-pod hosts file over /etc/hosts, the termination-message file, each
volumeMount), sets the pod's hostname, changes to the working directory and execs the command with the
environment it was started with. Nothing it mounts is visible outside; the mounts end with the
container. Standard library only (it runs with ``-I -S``).

spec.json: {"mounts": [{"source", "target", "readOnly", "optional"}], "hostname", "argv", "cwd",
"startError"}; ``startError`` is a file for the reason exec failed (exit code 128, as runc's StartError).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
START_ERROR_EXIT = 128


def _mount(source: str, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _mount_point(source: str, target: str) -> None:
    """Create ``target`` like ``source`` (a directory, else an empty file) when it is missing."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        with open(target, "a"):
            pass


def bind(mount: dict) -> None:
    """Bind ``source`` over ``target`` (recursively), read-only when asked."""
    source, target = mount["source"], mount["target"]
    if mount.get("optional") and not os.path.exists(target):
        return
    _mount_point(source, target)
    _mount(source, target, MS_BIND | MS_REC)
    if mount.get("readOnly"):
        _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        # Parents before children, so a mount inside another volume lands on top of it.
        for mount in sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/")):
            bind(mount)
        socket.sethostname(spec["hostname"])
        os.makedirs(spec["cwd"], exist_ok=True)
        os.chdir(spec["cwd"])
        os.execvpe(spec["argv"][0], spec["argv"], dict(os.environ))
    except OSError as exc:
        message = f"failed to start container: {exc}"
        with open(spec["startError"], "w") as f:
            f.write(message)
        print(message, file=sys.stderr)
        os._exit(START_ERROR_EXIT)


if __name__ == "__main__":
    main(sys.argv[1])
