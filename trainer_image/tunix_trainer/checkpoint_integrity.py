"""Is a checkpoint step complete and intact? Checks run before and after Orbax restores it.

- Complete: the step directory holds Orbax's commit marker (``commit_success.txt``), its step
  metadata (``_CHECKPOINT_METADATA``), the ``state`` item and our ``meta`` item as a readable
  JSON object.
- Intact: every array restores to the CRC-32 recorded at save time (``meta["checksums"]``, one per
  leaf with its dtype and shape, over the leaf's bytes on the host; computed on the background
  save thread) and every floating-point leaf is finite.
- Not a damage: a model whose arrays differ in path or shape from the saved ones (the spec
  changed); :func:`layout_mismatch` says so before anything is restored.

Steps saved before checksums existed are checked for finiteness only. Leaves not fully addressable
by this process (multi-host sharding) have no checksum.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ORBAX_COMMIT_MARKER = "commit_success.txt"
ORBAX_STEP_METADATA = "_CHECKPOINT_METADATA"
CHECKSUMS_KEY = "checksums"


def read_step_meta(
    step_dir: str, state_item: str, meta_item: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(our meta item, None) for a complete local step directory, else (None, why it is not)."""
    if not os.path.isdir(step_dir):
        return None, "not a directory"
    for name in (ORBAX_COMMIT_MARKER, ORBAX_STEP_METADATA):
        if not os.path.isfile(os.path.join(step_dir, name)):
            return None, f"incomplete: {name} is missing"
    if not os.path.isdir(os.path.join(step_dir, state_item)):
        return None, f"incomplete: the {state_item!r} item is missing"
    meta_file = os.path.join(step_dir, meta_item, "metadata")
    try:
        with open(meta_file, encoding="utf-8") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        return None, f"incomplete: {meta_item}/metadata is missing"
    except (OSError, ValueError) as exc:
        return None, f"{meta_item}/metadata is unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, f"{meta_item}/metadata is not a JSON object"
    return meta, None


def _host_array(leaf: Any) -> np.ndarray:
    """``leaf`` on the host (a PRNG key array as its key data)."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(jax.device_get(leaf))


def _host_bytes(leaf: Any) -> np.ndarray:
    return _host_array(leaf).reshape(-1).view(np.uint8)


def _crc32(leaf: Any) -> str:
    return f"{zlib.crc32(_host_bytes(leaf)):08x}"


def _leaves(state: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def checksums(state: Any) -> dict[str, dict[str, Any]]:
    """``{leaf path: {"crc32", "dtype", "shape"}}`` for every fully addressable array of ``state``."""
    return {
        name: {"crc32": _crc32(leaf), "dtype": str(leaf.dtype), "shape": list(leaf.shape)}
        for name, leaf in _leaves(state)
        if hasattr(leaf, "dtype") and getattr(leaf, "is_fully_addressable", True)
    }


def layout_mismatch(target: Any, saved: dict[str, dict[str, Any]] | None) -> str | None:
    """How the restore ``target`` differs from the saved arrays' paths and shapes (a changed
    model, not a damaged checkpoint), or None; unknown when nothing was recorded."""
    if not saved:
        return None
    wanted = {name: list(leaf.shape) for name, leaf in _leaves(target) if hasattr(leaf, "shape")}
    for name in sorted(set(wanted) | set(saved)):
        if name not in saved:
            return f"array {name} of the model is not in the checkpoint"
        if name not in wanted:
            return f"array {name} of the checkpoint is not in the model"
        if wanted[name] != list(saved[name].get("shape", wanted[name])):
            saved_shape, model_shape = tuple(saved[name]["shape"]), tuple(wanted[name])
            return f"array {name} has shape {saved_shape} in the checkpoint, {model_shape} in the model"
    return None


def state_problem(state: Any, saved: dict[str, dict[str, Any]] | None) -> str | None:
    """Why a restored ``state`` is not what was saved (checksum mismatch, non-finite), or None.

    A leaf restored into another dtype than it was saved in (a changed ``paramDtype``) is cast by
    Orbax, so its checksum cannot be compared; it is checked for finiteness only. Each leaf is
    copied to the host once for both checks."""
    saved = saved or {}
    for name, leaf in _leaves(state):
        if not hasattr(leaf, "dtype") or not getattr(leaf, "is_fully_addressable", True):
            continue
        entry = saved.get(name)
        compare = entry is not None and str(leaf.dtype) == entry.get("dtype")
        inexact = jnp.issubdtype(leaf.dtype, jnp.inexact)
        if not (compare or inexact):
            continue
        host = _host_array(leaf)
        if compare:
            got = f"{zlib.crc32(host.reshape(-1).view(np.uint8)):08x}"
            if got != entry.get("crc32"):
                return f"array {name} is corrupt (crc32 {got}, saved {entry.get('crc32')})"
        if inexact and not np.isfinite(host).all():
            return f"array {name} holds NaN or infinite values"
    missing = sorted(set(saved) - {name for name, _ in _leaves(state)})
    return f"array {missing[0]} is missing" if missing else None
