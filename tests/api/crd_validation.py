"""What a Kubernetes API server does with a custom resource, without an API server.

- ``structural_errors``: the structural-schema rules a CRD's ``openAPIV3Schema`` must obey
  (a slightly stricter subset: combinators only in the int-or-string pattern).
- ``admit``: drop nulls, apply schema defaults, validate against the schema with *strict
  field validation* (unknown fields rejected, as ``kubectl apply`` does by default since
  1.27), then evaluate every ``x-kubernetes-validations`` CEL rule with cel-python.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
import jsonschema

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_ALLOWED_KEYS = {
    "type", "format", "title", "description", "default", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "properties",
    "additionalProperties", "nullable", "anyOf", "allOf", "oneOf", "not", "example", "externalDocs",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
    "x-kubernetes-embedded-resource", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}  # fmt: skip
_INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]


# --------------------------------------------------------------------------- structural rules


def structural_errors(schema: Mapping[str, Any]) -> list[str]:
    """Reasons the API server would refuse ``schema`` as a structural schema (empty if none)."""
    errors = list(_node_errors(schema, "", root=True))
    metadata = schema.get("properties", {}).get("metadata")
    names = set(metadata.get("properties", {"name": None})) if metadata is not None else set()
    if metadata is not None and (
        set(metadata) - {"type", "properties"} or not names or names - {"name", "generateName"}
    ):
        errors.append(".metadata: only type (and restrictions on name and generateName) may be specified")
    return errors


def _node_errors(node: Mapping[str, Any], path: str, root: bool = False) -> Iterator[str]:
    where = path or "."
    for key in node:
        if key not in _ALLOWED_KEYS:
            yield f"{where}: keyword {key!r} is not allowed in a CRD schema"
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        yield f"{where}: x-kubernetes-preserve-unknown-fields must be true if set"
    if "type" in node:
        if node["type"] not in _TYPES:
            yield f"{where}: type {node['type']!r} is not one of {sorted(_TYPES)}"
        if int_or_string:
            yield f"{where}: x-kubernetes-int-or-string must not have a type"
    elif not int_or_string and not preserve:
        yield f"{where}: type is required (or x-kubernetes-int-or-string / preserve-unknown-fields)"
    for junctor in ("anyOf", "allOf", "oneOf", "not"):
        if junctor in node and not (
            junctor == "anyOf" and int_or_string and node[junctor] == _INT_OR_STRING_ANYOF
        ):
            yield f"{where}: {junctor} is only allowed in the int-or-string pattern"
    if node.get("nullable") is not True and "default" in node and node["default"] is None:
        yield f"{where}: default null on a non-nullable field"
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            yield f"{where}: {key} must be a boolean (OpenAPI v3.0)"
    additional = node.get("additionalProperties")
    if additional is False:
        yield f"{where}: additionalProperties: false is forbidden"
    if additional is not None and "properties" in node:
        yield f"{where}: additionalProperties and properties are mutually exclusive"
    if node.get("type") == "array" and "items" not in node:
        yield f"{where}: arrays need items"
    if root and node.get("type") != "object":
        yield ".: the root must be type: object"
    for name, sub in node.get("properties", {}).items():
        yield from _node_errors(sub, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from _node_errors(node["items"], f"{path}[]")
    if isinstance(additional, Mapping):
        yield from _node_errors(additional, f"{path}{{}}")


# --------------------------------------------------------------------------- admission


def drop_nulls(value: Any) -> Any:
    """Nulls on non-nullable fields are pruned before validation (none of ours is nullable)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Structural defaulting: fill absent properties with their default, then recurse."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        out = dict(value)
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            out = {k: (v if k in properties else apply_defaults(v, additional)) for k, v in out.items()}
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def strict_schema(schema: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
    """``schema`` with unknown fields rejected: what server-side strict field validation does
    (not in ``metadata``, which is ObjectMeta whatever the schema declares of it)."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {
            k: v if root and k == "metadata" else strict_schema(v, root=False)
            for k, v in out["properties"].items()
        }
        if not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
    if isinstance(out.get("items"), Mapping):
        out["items"] = strict_schema(out["items"], root=False)
    if isinstance(out.get("additionalProperties"), Mapping):
        out["additionalProperties"] = strict_schema(out["additionalProperties"], root=False)
    return out


def schema_errors(obj: Any, schema: Mapping[str, Any]) -> list[str]:
    """OpenAPI v3.0 (JSON Schema draft 4) validation errors, unknown fields included."""
    validator = jsonschema.Draft4Validator(strict_schema(schema))
    return [
        f".{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def iter_cel_targets(
    value: Any, schema: Mapping[str, Any], path: str = ""
) -> Iterator[tuple[str, Any, dict]]:
    """Every (path, value, validation) where a CEL rule applies to a value present in ``value``."""
    for validation in schema.get("x-kubernetes-validations", []):
        yield path, value, validation
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from iter_cel_targets(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, Mapping):
                yield from iter_cel_targets(item, additional, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from iter_cel_targets(item, schema["items"], f"{path}[{index}]")


def compile_rule(rule: str) -> celpy.Runner:
    """A cel-python program for ``rule``; raises celpy.CELParseError if it does not parse."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_errors(obj: Any, schema: Mapping[str, Any]) -> list[str]:
    """Messages of the CEL rules that evaluate to false (or fail) on ``obj``."""
    errors = []
    for path, value, validation in iter_cel_targets(obj, schema):
        try:
            result = compile_rule(validation["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:
            errors.append(f"{path or '.'}: rule {validation['rule']!r} failed to evaluate: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError):
            errors.append(f"{path or '.'}: rule {validation['rule']!r} failed to evaluate: {result}")
        elif not bool(result):
            errors.append(f"{path or '.'}: {validation.get('message', validation['rule'])}")
    return errors


def admit(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Errors the API server would answer a create of ``obj`` with (empty: admitted)."""
    defaulted = apply_defaults(drop_nulls(dict(obj)), schema)
    errors = schema_errors(defaulted, schema)
    return errors or cel_errors(defaulted, schema)
