"""Load and validate a run's config: a whole TunixRun resource, or just its spec (YAML or JSON)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunix_api.run import API_VERSION, KIND, TunixRun, TunixRunSpec
from tunix_trainer.errors import ConfigError

_RESOURCE_KEYS = frozenset({"apiVersion", "kind", "spec"})
_DEFAULT_NAME = "run"


@dataclass(frozen=True)
class LoadedRun:
    """A validated run: what the trainer needs from the TunixRun."""

    name: str
    namespace: str | None
    spec: TunixRunSpec
    config_hash: str  # "sha256:<hex>" of the canonical JSON of the spec
    base_dir: str | None = None  # relative dataset paths resolve against this (None: the working dir)


def load_run(path_or_text: str | os.PathLike[str], *, base_dir: str | None = None) -> LoadedRun:
    """Read ``path_or_text`` (a file path, or the YAML/JSON text itself) and validate it.

    Raises ConfigError naming every invalid field, one per line, as ``spec.training.steps: ...``.
    """
    text, source = _read_source(path_or_text)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {_one_line(str(exc))}") from exc
    return parse_run(document, base_dir=base_dir)


def parse_run(document: Any, *, base_dir: str | None = None) -> LoadedRun:
    """Validate an already-parsed document (a TunixRun or a spec mapping)."""
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"config: expected a mapping (a TunixRun or its spec), got {type(document).__name__}"
        )
    if is_resource(document):
        return _from_resource(document, base_dir)
    return _from_spec(document, base_dir)


def is_resource(document: Mapping[str, Any]) -> bool:
    """A whole resource has apiVersion/kind/spec at the top; a bare spec has none of them."""
    return any(key in document for key in _RESOURCE_KEYS)


def config_hash(spec: TunixRunSpec) -> str:
    """A stable hash of the spec's canonical JSON (sorted keys, defaults included)."""
    canonical = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def format_validation_error(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> str:
    """One line per error: ``spec.training.batchSize: Input should be a valid integer``."""
    lines = []
    for error in exc.errors():
        path = format_loc(prefix + tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines.append(f"{path}: {message}" if path else message)
    return "\n".join(lines)


def format_loc(loc: Sequence[str | int]) -> str:
    """``('spec', 'tolerations', 0, 'key')`` -> ``spec.tolerations[0].key``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _from_resource(document: Mapping[str, Any], base_dir: str | None) -> LoadedRun:
    # Unknown top-level keys (e.g. status written back by the API server) are not the trainer's concern,
    # but apiVersion and kind must say this is a TunixRun.
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: expected {API_VERSION!r}, got {document.get('apiVersion')!r}")
    if document.get("kind") != KIND:
        problems.append(f"kind: expected {KIND!r}, got {document.get('kind')!r}")
    resource = {k: document[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in document}
    if "spec" not in resource:
        problems.append("spec: Field required")
    try:
        run = TunixRun.model_validate(resource)
    except ValidationError as exc:
        details = [
            line
            for line in format_validation_error(exc).splitlines()
            if not line.startswith(("apiVersion:", "kind:"))
        ]
        problems.extend(line for line in details if line not in problems)
        raise ConfigError("\n".join(problems)) from exc
    if problems:
        raise ConfigError("\n".join(problems))
    return LoadedRun(
        name=run.metadata.name or _DEFAULT_NAME,
        namespace=run.metadata.namespace,
        spec=run.spec,
        config_hash=config_hash(run.spec),
        base_dir=base_dir,
    )


def _from_spec(document: Mapping[str, Any], base_dir: str | None) -> LoadedRun:
    try:
        spec = TunixRunSpec.model_validate(dict(document))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix=("spec",))) from exc
    return LoadedRun(
        name=_DEFAULT_NAME, namespace=None, spec=spec, config_hash=config_hash(spec), base_dir=base_dir
    )


def _read_source(path_or_text: str | os.PathLike[str]) -> tuple[str, str]:
    """(text, name for messages). A single line that looks like neither YAML nor JSON is a path."""
    if isinstance(path_or_text, os.PathLike) or _looks_like_path(path_or_text):
        path = Path(path_or_text)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from exc
    return str(path_or_text), "config"


def _looks_like_path(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and "\n" not in stripped and ": " not in stripped and not stripped.startswith("{")


def _one_line(text: str) -> str:
    return " ".join(text.split())
