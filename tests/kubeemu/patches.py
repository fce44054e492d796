"""The patch formats of the Kubernetes API as pure functions over JSON-like dicts.

- JSON patch (RFC 6902, ``application/json-patch+json``), via the ``jsonpatch`` package (a kmock dependency);
- JSON merge patch (RFC 7386, ``application/merge-patch+json``);
- strategic merge patch (``application/strategic-merge-patch+json``): treated as a merge patch, so lists
  are replaced as a whole instead of merged by their patch-merge keys (a documented simplification);
- server-side apply (``application/apply-patch+yaml``): the applied configuration is merged like a merge
  patch; there is no field ownership, so fields dropped from the applied configuration are not removed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import yaml

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


class PatchError(ValueError):
    """A malformed patch (400 BadRequest)."""


class PatchTestFailed(ValueError):
    """A JSON-patch ``test`` op (or another op) that cannot be applied (422, as the real server answers)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 on a copy of ``target``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise PatchError(str(exc)) from exc
    try:
        return patch.apply(copy.deepcopy(target))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchTestFailed(str(exc)) from exc


def decode_body(body: bytes, content_type: str) -> Any:
    """Decode a request body: YAML for apply patches (a JSON superset), JSON otherwise."""
    if not body.strip():
        raise PatchError("empty request body")
    try:
        return yaml.safe_load(body) if content_type == APPLY_PATCH else json.loads(body)
    except (yaml.YAMLError, ValueError) as exc:
        raise PatchError(f"cannot decode the body: {exc}") from exc


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Apply a decoded patch of one of :data:`PATCH_TYPES` to a copy of ``target``."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be an object")
        return merge_patch(target, patch)
    raise PatchError(f"unsupported patch type: {content_type}")
