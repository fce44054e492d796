"""The first process of a process container, run by the kubelet as
``unshare --mount --uts --propagation private -- python -I -S podshim.py <spec.json>``.

Inside its private mount and UTS namespaces it bind-mounts the pod's files and volumes where the
container expects them (the per-pod hosts file over /etc/hosts, the termination-message file, each
volumeMount), sets the pod's hostname, changes to the working directory and execs the command with the
environment it was started with. Nothing it mounts is visible outside; the mounts end with the
container. Standard library only (it runs with ``-I -S``).

A mount point that does not exist (``/etc/tunix``, ``/checkpoints``, ``/dev/termination-log``) is made
without touching the machine: the nearest existing directory above it is shadowed, in this namespace
only, by a tmpfs holding a bind mount of each of its entries (for ``/``, the container then chroots into
it, as switch_root does), and the new entry is made in the tmpfs. Inside a volume, a missing mount point
is made in the volume, as the real kubelet does.

spec.json: {"mounts": [{"source", "target", "readOnly", "optional"}], "hostname", "argv", "cwd",
"scratch", "startError"}; ``scratch`` is a directory of the container's for the tmpfs staging points,
``startError`` a file for the reason exec failed (exit code 128, as runc's StartError).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import tempfile

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = 1, 32, 4096, 8192, 16384
START_ERROR_EXIT = 128


def _mount(source: str, target: str, flags: int, fstype: str | None = None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    kind = fstype.encode() if fstype else None
    if libc.mount(source.encode(), target.encode(), kind, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _under(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


class MountPoints:
    """Makes missing mount points in this mount namespace only (see the module docstring)."""

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch
        self.owned: set[str] = set()  # directories on a tmpfs of ours: new entries there are private
        self.volumes: set[str] = set()  # targets bound so far: new entries there go into the volume

    def make(self, path: str, *, directory: bool) -> None:
        """Create ``path`` (a directory, else an empty file) unless it exists."""
        path = os.path.normpath(path)
        if os.path.lexists(path):
            return
        missing = [path]
        while not os.path.lexists(os.path.dirname(missing[-1])):
            missing.append(os.path.dirname(missing[-1]))
        ancestor = os.path.dirname(missing[-1])
        if ancestor not in self.owned and not _under(ancestor, self.volumes):
            self._shadow(ancestor)
        private = ancestor in self.owned
        for part in reversed(missing):
            if part == path and not directory:
                with open(part, "a"):
                    pass
            else:
                os.mkdir(part)
                if private:
                    self.owned.add(part)

    def _shadow(self, directory: str) -> None:
        """Cover ``directory`` with a tmpfs holding bind mounts of its entries."""
        staging = tempfile.mkdtemp(dir=self.scratch)
        _mount("tmpfs", staging, 0, "tmpfs")
        os.chmod(staging, os.stat(directory).st_mode & 0o7777)
        with os.scandir(directory) as entries:
            for entry in entries:
                source, target = entry.path, os.path.join(staging, entry.name)
                try:
                    if entry.is_symlink():
                        os.symlink(os.readlink(source), target)
                    elif entry.is_dir(follow_symlinks=False):
                        os.mkdir(target)
                        _mount(source, target, MS_BIND | MS_REC)
                    else:
                        with open(target, "w"):
                            pass
                        _mount(source, target, MS_BIND)
                except FileNotFoundError:  # gone while listing
                    continue
        if directory == "/":  # switch_root: move the new root over / and enter it
            os.chdir(staging)
            _mount(staging, "/", MS_MOVE)
            os.chroot(".")
            os.chdir("/")
        else:
            _mount(staging, directory, MS_MOVE)
        self.owned.add(directory)

    def bind(self, mount: dict) -> None:
        """Bind ``source`` over ``target`` (recursively), read-only when asked."""
        source, target = mount["source"], os.path.normpath(mount["target"])
        if mount.get("optional") and not os.path.exists(target):
            return
        self.make(target, directory=os.path.isdir(source))
        _mount(source, target, MS_BIND | MS_REC)
        if mount.get("readOnly"):
            _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)
        self.volumes.add(target)


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    # Opened now: once directories are shadowed, the path may lead into this namespace's tmpfs.
    error_file = open(spec["startError"], "w")  # noqa: SIM115 (closed on exec: not inheritable)
    try:
        points = MountPoints(spec["scratch"])
        # Parents before children, so a mount inside another volume lands on top of it.
        for mount in sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/")):
            points.bind(mount)
        socket.sethostname(spec["hostname"])
        points.make(spec["cwd"], directory=True)
        os.chdir(spec["cwd"])
        os.execvpe(spec["argv"][0], spec["argv"], dict(os.environ))
    except OSError as exc:
        message = f"failed to start container: {exc}"
        error_file.write(message)
        error_file.flush()
        print(message, file=sys.stderr)
        os._exit(START_ERROR_EXIT)


if __name__ == "__main__":
    main(sys.argv[1])
