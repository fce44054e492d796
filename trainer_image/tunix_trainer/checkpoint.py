"""Orbax checkpoints of the train state plus a JSON item with the loop's position.

Each checkpoint step holds two items: ``state`` (parameters and optimizer state, saved with
StandardSave and restored into the given abstract target, shardings included) and ``meta``
(JSON: step, tokens seen, seed, the data iterator's position, config hash, wall time).
Saves are asynchronous; ``wait()`` blocks until they are durable.

Saving without stalling the training loop: Orbax's async save still blocks its caller until the
state has been copied to host memory (about 0.4 s for the 4 GB ``350m`` state on an H200, 2.4% of
training time at 100-step intervals; ``docs/PERFORMANCE.md``). So ``save`` first takes an on-device
snapshot (one jitted copy, dispatched asynchronously, a few milliseconds of device time) and hands
the snapshot to a single background thread that runs Orbax's save; the loop goes on with the next
step at once, since the step donates the live state but never the snapshot. The snapshot needs
device memory for one more copy of the state: when the device reports less free memory than that
(``memory_stats``: limit minus peak use), the save runs in the calling thread as before. Errors of
a background save surface at the next ``save``/``wait``. A multi-process run always saves in the
calling thread: Orbax's save issues cross-process collectives (barriers, broadcasts of the step
list) that every process must issue in the same order as the training step's own, and a second
thread would interleave them differently on each process.

Where checkpoints go:

- a local path or ``file://`` URI (the mounted checkpoint volume in a cluster): Orbax writes there
  directly.
- an object-store URI (``s3://``, ``gs://``, ...): Orbax 0.12.8 builds TensorStore specs only for
  local files and ``gs://`` (an ``s3://`` path is handed to the ``file`` driver and fails), so the
  trainer uses a mirror instead: Orbax writes to a local staging directory and every finished step
  is copied to ``<uri>/<step>/`` with fsspec (credentials and endpoint as for the artifacts, e.g.
  ``AWS_ENDPOINT_URL_S3``), followed by a ``_TUNIX_COMMITTED`` marker written last. Only marked
  steps count as checkpoints; old ones are pruned to ``maxToKeep``. Restoring downloads the chosen
  step into staging first. The mirror needs a single process (multi-host runs use a shared volume).
  See ``tunix_trainer.checkpoint_mirror``.

Restoring never crash-loops on a damaged step: ``restore("latest")`` tries the steps newest first
and uses the first one that is complete and intact (``tunix_trainer.checkpoint_integrity``: Orbax's
commit marker and our meta item present, Orbax restores it, every array matches the CRC-32 saved
with it and is finite, and the caller accepts its meta, e.g. the data position). A step that fails
is reported with its path and reason and set aside as ``<step>.corrupt-<n>`` (renamed, never
deleted); when steps exist but none is usable, :class:`NoUsableCheckpointError` (exit 6) names the
directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from tunix_api.exit_codes import ExitCode
from tunix_trainer.checkpoint_integrity import (
    CHECKSUMS_KEY,
    checksums,
    layout_mismatch,
    read_step_meta,
    state_problem,
)
from tunix_trainer.checkpoint_mirror import COMMIT_MARKER, ObjectStoreMirror, set_aside_name
from tunix_trainer.errors import ConfigError, TrainerError

__all__ = ["COMMIT_MARKER", "Checkpointer", "NoUsableCheckpointError", "Restored"]

_STATE = "state"
_META = "meta"
_REASON_LIMIT = 300  # characters of an Orbax/TensorStore error kept in the one-line reason

# Orbax keeps the operation id of the save in progress in a process-wide variable
# (``OperationIdGenerator``), which the save's asynchronous parts read: two managers saving at
# once in one process (the run's checkpoints and keepBest's, each on its own save thread) mix up
# their ids (timeouts waiting for signals, a step directory created twice). So a save starts
# only after this process's previous save by another manager has finished.
_ORBAX_SAVES = threading.Lock()
_saving_manager: list[Any] = [None]  # the manager that saved last in this process


class NoUsableCheckpointError(TrainerError):
    """Checkpoints exist but none restores intact (each was set aside); retrying cannot help."""

    exit_code = ExitCode.NO_USABLE_CHECKPOINT
    label = "no usable checkpoint"


class DamagedCheckpoint(Exception):
    """One checkpoint step cannot be used; the message is the reason."""


@dataclass
class Restored:
    step: int
    state: Any
    meta: dict[str, Any]
    set_aside: list[str] = field(default_factory=list)  # damaged newer steps, where they went


def is_remote(uri: str) -> bool:
    """True for object-store URIs; False for plain paths and ``file://``."""
    scheme = urlparse(uri).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


def local_path(uri: str) -> str:
    """Absolute local directory for a path or ``file://`` URI (Orbax needs absolute paths)."""
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    return os.path.abspath(os.path.expanduser(uri))


def parse_resume(resume: str) -> int | str:
    """``"latest"`` / ``"none"`` stay strings; a step number becomes an int."""
    value = str(resume).strip().lower()
    if value in ("latest", "none"):
        return value
    if value.isdigit():
        return int(value)
    raise ConfigError(f"spec.checkpoint.resume: expected latest, none or a step number, got {resume!r}")


class Checkpointer:
    """Periodic asynchronous checkpoints of a train state, in a directory or an object store."""

    def __init__(
        self,
        uri: str,
        *,
        save_interval_steps: int,
        max_to_keep: int,
        storage_options: dict[str, Any] | None = None,
        staging_dir: str | None = None,
    ) -> None:
        self.uri = uri
        self.save_interval_steps = save_interval_steps
        self.max_to_keep = max_to_keep
        self._mirror = ObjectStoreMirror(uri, storage_options, max_to_keep) if is_remote(uri) else None
        if self._mirror is not None:
            if jax.process_count() > 1:
                raise ConfigError(
                    "spec.checkpoint.uri: object-store checkpoints need a single process; "
                    "use a shared volume for multi-host runs"
                )
            self._staging = tempfile.mkdtemp(prefix="tunix-ckpt-", dir=staging_dir)
            directory, keep = self._staging, max_to_keep + 1  # +1: the step being uploaded stays local
        else:
            self._staging = None
            directory, keep = local_path(uri), max_to_keep
        self._directory = directory
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=save_interval_steps, create=True
            ),
            item_names=(_STATE, _META),
        )
        self._in_flight: int | None = None
        self._last_saved: int | None = None
        self._durable: int | None = None  # see durable_step
        self._saver = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-save")
        self._saving: concurrent.futures.Future[None] | None = None

    # -- queries -------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Durable checkpoint steps, oldest first."""
        if self._mirror is not None:
            return self._mirror.steps()
        return local_steps(self._directory)

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    @property
    def latest_saved(self) -> int | None:
        """The step last saved or restored by this process (its save may still be in flight)."""
        return self._last_saved

    def durable_step(self) -> int | None:
        """The newest step known durable, without waiting: in a directory the newest committed step (Orbax
        moves a step into place when it commits it); for an object store the step restored or the newest
        whose upload committed (a step's upload starts at the next save, or at ``wait``)."""
        if self._mirror is None:
            steps = local_steps(self._directory)
            return steps[-1] if steps else None
        known = [s for s in (self._durable, self._mirror.last_committed) if s is not None]
        return max(known) if known else None

    def should_save(self, step: int) -> bool:
        """A periodic save is due after ``step`` completed optimizer steps."""
        return step % self.save_interval_steps == 0 and step != self._last_saved

    # -- save ----------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Start an asynchronous save of ``state`` and ``meta`` as checkpoint ``step``.

        Returns once a device snapshot of ``state`` is dispatched (or, without room for one, once
        Orbax has copied ``state`` to the host); ``state`` may be donated right after.
        """
        self._join_saver()  # one save at a time, in order (Orbax serialises them anyway)
        self._in_flight = step
        self._last_saved = step
        meta = dict(meta)
        # Multi-process: Orbax's save runs collectives (barriers, broadcasts) that must be issued
        # in the same order on every process as the training step's, so it stays on this thread.
        if jax.process_count() == 1 and has_room_for_copy(state):
            snapshot = device_snapshot(state)
            self._saving = self._saver.submit(self._save_now, step, snapshot, meta)
        else:
            self._save_now(step, state, meta)

    def wait(self) -> None:
        """Block until every started save is durable (uploaded too, for object stores)."""
        self._join_saver()
        self._manager.wait_until_finished()
        self._in_flight = None
        if self._mirror is not None:
            self._mirror_finished()
            self._mirror.drain()
        self._durable = self._last_saved

    def close(self) -> None:
        """Wait for pending saves, then release the manager (and the staging directory)."""
        try:
            self.wait()
        finally:
            self._saver.shutdown(wait=True)
            with _ORBAX_SAVES:
                if _saving_manager[0] is self._manager:
                    _saving_manager[0] = None
            self._manager.close()
            if self._mirror is not None:
                self._mirror.close()
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)

    # -- restore -------------------------------------------------------------------------------
    def restore(
        self, resume: str, target: Any, accept: Callable[[dict[str, Any]], None] | None = None
    ) -> Restored | None:
        """Restore per ``resume`` ("latest" | "none" | "<step>") into ``target`` (an abstract state).

        "none" starts over: existing checkpoints are deleted. "latest" takes the newest usable
        step, setting damaged ones aside; a step number that is not present raises ConfigError, one
        that is damaged NoUsableCheckpointError. Checkpoints after the restored step are deleted
        (training goes on from it). ``accept(meta)`` may reject a step's meta by raising
        ValueError, KeyError or TypeError (e.g. an impossible data position).
        """
        choice = parse_resume(resume)
        steps = self.all_steps()
        if choice == "none":
            self._delete(steps)
            return None
        if choice == "latest":
            candidates = steps[::-1]
        else:
            if int(choice) not in steps:
                available = ", ".join(map(str, steps)) or "none"
                raise ConfigError(
                    f"spec.checkpoint.resume: step {choice} not found in {self.uri} (available: {available})"
                )
            candidates = [int(choice)]
        set_aside: list[str] = []
        for step in candidates:
            try:
                state, meta = self._restore_step(step, target, accept)
            except DamagedCheckpoint as exc:
                where = self._set_aside(step)
                _say(f"checkpoint {step} in {self.uri} is unusable: {exc}; set aside as {where}")
                set_aside.append(where)
                continue
            self._delete([s for s in self.all_steps() if s > step])
            self._last_saved = self._durable = step
            if set_aside:
                _say(f"resuming from checkpoint {step}, the newest intact one in {self.uri}")
            return Restored(step=step, state=state, meta=meta, set_aside=set_aside)
        earlier = self._set_aside_names()
        if set_aside or (choice == "latest" and earlier):
            names = [where.rstrip("/").rsplit("/", 1)[-1] for where in set_aside] or earlier
            raise NoUsableCheckpointError(
                f"{self.uri}: every checkpoint step is damaged and was set aside "
                f"({', '.join(names)}); set spec.checkpoint.resume to none to start over"
            )
        return None

    def _restore_step(
        self, step: int, target: Any, accept: Callable[[dict[str, Any]], None] | None
    ) -> tuple[Any, dict[str, Any]]:
        """Restore one step and check it; DamagedCheckpoint says why it cannot be used."""
        if self._mirror is not None:
            self._mirror.download(step, self._staging)
        self._manager.reload()
        saved_meta, problem = read_step_meta(os.path.join(self._directory, str(step)), _STATE, _META)
        if saved_meta is None:
            raise DamagedCheckpoint(problem)
        mismatch = layout_mismatch(target, saved_meta.get(CHECKSUMS_KEY))
        if mismatch is not None:
            raise ConfigError(
                f"spec.model: checkpoint {step} in {self.uri} was saved by another model ({mismatch}); "
                "set spec.checkpoint.resume to none to start over"
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardRestore(target), _META: ocp.args.JsonRestore()}
                ),
            )
        except Exception as exc:  # Orbax/TensorStore: a truncated, missing or garbled file
            raise DamagedCheckpoint(f"restore failed: {_one_line(exc)}") from exc
        meta = dict(restored[_META])
        problem = state_problem(restored[_STATE], meta.pop(CHECKSUMS_KEY, None))
        if problem is not None:
            raise DamagedCheckpoint(problem)
        if accept is not None:
            try:
                accept(meta)
            except (ValueError, KeyError, TypeError) as exc:
                raise DamagedCheckpoint(f"its meta item is invalid: {_one_line(exc)}") from exc
        return restored[_STATE], meta

    def _set_aside(self, step: int) -> str:
        """Rename a damaged step to ``<step>.corrupt-<n>`` (remotely too); returns where it went."""
        local = os.path.join(self._directory, str(step))
        if self._mirror is not None:
            shutil.rmtree(local, ignore_errors=True)  # only a downloaded copy
            where = self._mirror.set_aside(step)
        else:
            where = os.path.join(self._directory, set_aside_name(step, set(os.listdir(self._directory))))
            with contextlib.suppress(FileNotFoundError):  # another process of a multi-host run was first
                os.rename(local, where)
        self._manager.reload()
        return where

    def _set_aside_names(self) -> list[str]:
        if self._mirror is not None:
            return self._mirror.set_aside_names()
        try:
            return sorted(n for n in os.listdir(self._directory) if ".corrupt-" in n)
        except FileNotFoundError:
            return []

    def discard_after(self, step: int) -> None:
        """Delete the checkpoints of steps after ``step`` (training goes on from ``step``)."""
        self._delete([s for s in self.all_steps() if s > step])

    def retain(self, steps: set[int]) -> None:
        """Delete every checkpoint whose step is not in ``steps``, once the saves started are durable
        (the keepBest checkpoints: ``tunix_trainer.evaluation.EvalTracker``)."""
        self.wait()
        self._delete([s for s in self.all_steps() if s not in steps])

    # -- internals -----------------------------------------------------------------------------
    def _save_now(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        if self._mirror is not None:
            self._mirror.drain()
        meta = {**meta, CHECKSUMS_KEY: checksums(state)}  # on the save thread when asynchronous
        with _ORBAX_SAVES:
            if _saving_manager[0] not in (None, self._manager):
                _saving_manager[0].wait_until_finished()
            _saving_manager[0] = self._manager
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
                ),
                force=True,
            )
        self._mirror_finished()

    def _join_saver(self) -> None:
        saving, self._saving = self._saving, None
        if saving is not None:
            saving.result()  # re-raises a background failure

    def _delete(self, steps: list[int]) -> None:
        if not steps:
            return
        print(f"tunix-train: deleting checkpoints {steps} in {self.uri}", file=sys.stderr)
        if self._mirror is not None:
            self._mirror.delete(steps)
        managed = set(self._manager.all_steps())
        for step in steps:
            if step in managed:  # in mirror mode: a downloaded copy in staging
                self._manager.delete(step)
            else:  # a step directory Orbax does not list (e.g. incomplete)
                shutil.rmtree(os.path.join(self._directory, str(step)), ignore_errors=True)

    def _mirror_finished(self) -> None:
        """Queue uploads of every finished local step not mirrored yet."""
        if self._mirror is None:
            return
        for step in sorted(self._manager.all_steps()):
            if step != self._in_flight:
                self._mirror.upload(step, os.path.join(self._staging, str(step)))


def local_steps(directory: str) -> list[int]:
    """Step numbers of the step directories (named by digits only) in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _say(message: str) -> None:
    print(f"tunix-train: {message}", file=sys.stderr, flush=True)


@jax.jit
def device_snapshot(state: Any) -> Any:
    """A copy of ``state`` in new device buffers (same shardings), dispatched asynchronously."""
    return jax.tree.map(jnp.copy, state)


def has_room_for_copy(state: Any) -> bool:
    """Whether every device holding part of ``state`` has free memory for one more copy of it:
    ``bytes_limit - peak_bytes_in_use`` (the peak includes the training step's activations).
    Devices that report no memory statistics (the CPU) count as having room."""
    needed: dict[Any, int] = {}
    for leaf in jax.tree.leaves(state):
        for shard in getattr(leaf, "addressable_shards", ()):
            needed[shard.device] = needed.get(shard.device, 0) + shard.data.nbytes
    for device, nbytes in needed.items():
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            peak = stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))
            if stats["bytes_limit"] - peak < nbytes:
                return False
    return True
