"""Load and validate a run's config: a whole TunixRun resource, or just its spec (YAML or JSON)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tunix_api import manifest_yaml
from tunix_api.manifest_yaml import lone_surrogate
from tunix_api.names import MAX_OBJECT_BYTES, MAX_REQUEST_BYTES
from tunix_api.run import API_VERSION, KIND, TunixRun, TunixRunSpec
from tunix_trainer.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
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

    The text is read as the API server would: UTF-8, at most ``MAX_REQUEST_BYTES``, no duplicate
    keys, aliases expanding to at most ``MAX_OBJECT_BYTES`` (see ``tunix_api.manifest_yaml``).
    Raises ConfigError naming every invalid field, one per line, as ``spec.training.steps: ...``.
    """
    text, source = _read_source(path_or_text)
    if (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_REQUEST_BYTES:
        raise ConfigError(f"{source}: {_too_big(size, MAX_REQUEST_BYTES)}")
    try:
        document = manifest_yaml.load(text)
    except manifest_yaml.StrictYAMLError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {_one_line(str(exc))}") from exc
    return parse_run(document, base_dir=base_dir)


def parse_run(document: Any, *, base_dir: str | None = None) -> LoadedRun:
    """Validate an already-parsed document (a TunixRun or a spec mapping)."""
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"config: expected a mapping (a TunixRun or its spec), got {type(document).__name__}"
        )
    prefix = () if is_resource(document) else ("spec",)
    problems = [f"{format_loc(prefix + loc)}: {why}" for loc, why in unsendable(document)]
    if problems:
        raise ConfigError("\n".join(problems))
    data = as_sent(document)
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > MAX_OBJECT_BYTES:
        raise ConfigError(f"config: {_too_big(size, MAX_OBJECT_BYTES)}")
    if is_resource(data):
        return _from_resource(data, base_dir)
    return _from_spec(data, base_dir)


def unsendable(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(location, why)`` of every value JSON (and so the API server) cannot carry: NaN and
    infinities (YAML's ``.nan``, ``.inf``) and strings with a lone surrogate (``"\\ud800"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield loc, f"{value} is not a finite number"
    elif isinstance(value, str) and (index := lone_surrogate(value)) is not None:
        yield loc, f"lone surrogate (\\u{ord(value[index]):04x}) at character {index + 1}: not Unicode text"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from unsendable(key, (*loc, "[key]"))
            yield from unsendable(item, (*loc, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unsendable(item, (*loc, index))


def as_sent(value: Any) -> Any:
    """``value`` as kubectl sends it to the API server: JSON data. Map keys become strings, YAML
    dates ISO strings and binary base64, and a float with no fraction an integer (Go's JSON
    encoder writes 10.0 as 10). Non-finite floats must have been refused before."""
    if isinstance(value, Mapping):
        return {_key(k): as_sent(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [as_sent(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.date):  # datetime too
        return value.isoformat()
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)  # null, true, false
    return str(as_sent(key))


def _strict(model: type[M], data: Any) -> M:
    """``data`` validated as the API server validates JSON: no strings for numbers or booleans, no
    booleans or fractions for integers (pydantic's lax mode would accept ``steps: "10"``)."""
    return model.model_validate_json(json.dumps(data), strict=True)


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
        run = _strict(TunixRun, resource)
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
        spec = _strict(TunixRunSpec, dict(document))
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
            if (size := path.stat().st_size) > MAX_REQUEST_BYTES:
                raise ConfigError(f"{path}: {_too_big(size, MAX_REQUEST_BYTES)}")
            with path.open("rb") as handle:  # bounded: a device or pipe has no size to check first
                data = handle.read(MAX_REQUEST_BYTES + 1)
            if len(data) > MAX_REQUEST_BYTES:
                raise ConfigError(f"{path}: more than {MAX_REQUEST_BYTES:,} bytes, the API server's limit")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from exc
        try:
            return data.decode("utf-8"), str(path)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigError(
                f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} (offset {exc.start})"
            ) from None
    return str(path_or_text), "config"


def _too_big(size: int, limit: int) -> str:
    return f"{size:,} bytes; the API server accepts at most {limit:,} bytes ({limit / 2**20:g} MiB)"


def _looks_like_path(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and "\n" not in stripped and ": " not in stripped and not stripped.startswith("{")


def _one_line(text: str) -> str:
    return " ".join(text.split())
