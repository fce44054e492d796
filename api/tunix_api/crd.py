"""The TunixRun CustomResourceDefinition, generated from the pydantic models.

One source of truth: ``TunixRun``'s JSON schema is turned into a *structural*
OpenAPI v3 schema (the dialect the API server accepts), the cross-field rules in
``tunix_api.training.CEL_RULES`` become ``x-kubernetes-validations``, and the
printer columns below are attached. ``tools/gen_crd.py`` writes the result to
``crds/`` and to the Helm chart.

Conversion rules (pydantic JSON schema -> structural schema):

- ``$ref``/``$defs`` are inlined; ``title`` is dropped;
- ``X | None`` becomes ``X`` (optional = not listed in ``required``), ``default: null`` is dropped;
- ``str | int`` becomes ``x-kubernetes-int-or-string`` (Kubernetes quantities);
- ``const`` becomes a one-value ``enum``; string enums get a ``maxLength`` (cheaper CEL);
- ``exclusiveMinimum: N`` becomes ``minimum: N, exclusiveMinimum: true`` (OpenAPI v3.0);
- ``dict[str, Any]`` becomes ``type: object`` + ``x-kubernetes-preserve-unknown-fields``;
- ``additionalProperties: false`` is dropped (forbidden in CRDs): unknown fields are
  rejected by strict field validation (``kubectl`` default) and by the operator's models.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tunix_api.names import GENERATE_NAME_PATTERN, MAX_NAME_LENGTH, NAME_PATTERN
from tunix_api.run import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, TunixRunSpec, TunixRunStatus
from tunix_api.training import CEL_RULES

ROOT_MODEL = "TunixRun"  # CEL rules declared for it sit at the schema's root (they read metadata.name)

CRD_NAME = f"{PLURAL}.{GROUP}"
CATEGORIES = ["tunix"]

# Keys of a pydantic JSON schema node that are copied as they are.
_KEPT_KEYS = frozenset(
    {
        "type",
        "description",
        "default",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "required",
        "minItems",
        "maxItems",
        "format",
    }
)
_DROPPED_KEYS = frozenset({"title"})
# ``self.a.b`` field paths; a trailing ``.name(`` is a method call (``matches``, ``size``), not a field.
_CEL_SELF_PATH = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*(?![A-Za-z0-9_(]))+)")


class SchemaConversionError(ValueError):
    """The pydantic schema uses a construct that has no structural equivalent."""


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry; ``priority`` 1 shows only with ``-o wide``."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""
    format: str = ""

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.format:
            column["format"] = self.format
        if self.priority:
            column["priority"] = self.priority
        if self.description:
            column["description"] = self.description
        return column


PRINTER_COLUMNS: list[PrinterColumn] = [
    PrinterColumn("Phase", ".status.phase", description="Lifecycle phase of the run."),
    PrinterColumn("Step", ".status.progress.stepOfTotal", description="Optimizer step / total steps."),
    PrinterColumn("Loss", ".status.progress.loss", "number", description="Latest training loss."),
    PrinterColumn(
        "Tokens/s", ".status.progress.tokensPerSecond", "number", description="Training throughput."
    ),
    PrinterColumn("Restarts", ".status.restarts", "integer", description="Failed attempts retried."),
    PrinterColumn(
        "Eval Loss", ".status.progress.evalLoss", "number", description="Latest held-out evaluation loss."
    ),
    PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    PrinterColumn("Mode", ".spec.mode", priority=1),
    PrinterColumn("Preset", ".spec.model.preset", priority=1),
    PrinterColumn("Final Loss", ".status.summary.finalLoss", "number", priority=1),
    PrinterColumn("Message", ".status.message", priority=1),
    PrinterColumn(
        "MFU", ".status.benchmark.mfu", "number", priority=1, description="Benchmark model FLOPs utilisation."
    ),
    PrinterColumn(
        "Bench Tok/s",
        ".status.benchmark.tokensPerSecond",
        "number",
        priority=1,
        description="Benchmark steady-state throughput.",
    ),
    PrinterColumn(
        "Step p50 ms",
        ".status.benchmark.stepTimeP50Ms",
        "number",
        priority=1,
        description="Benchmark median step time.",
    ),
    PrinterColumn(
        "Goodput",
        ".status.goodput.goodputPercent",
        "number",
        priority=1,
        description="Percent of the run's wall time spent on kept steps (docs/DESIGN.md, Goodput).",
    ),
    PrinterColumn(
        "Ckpt", ".status.checkpoint.latestStep", "integer", priority=1, description="Newest saved checkpoint."
    ),
    PrinterColumn(
        "Train MFU", ".status.progress.mfu", "number", priority=1, description="Live model FLOPs utilisation."
    ),
]


# --------------------------------------------------------------------------- conversion


def structural_schema(
    json_schema: Mapping[str, Any], cel_rules: Mapping[str, list[tuple[str, str]]] | None = None
) -> dict[str, Any]:
    """Convert a pydantic JSON schema (with ``$defs``) into a structural OpenAPI v3 schema.

    ``cel_rules`` maps a model (``$defs`` key) to ``(rule, message)`` pairs, attached to
    that model's object schema as ``x-kubernetes-validations``.
    """
    defs = json_schema.get("$defs", {})
    rules = cel_rules or {}
    unknown = sorted(set(rules) - set(defs) - {json_schema.get("title")})
    if unknown:
        raise SchemaConversionError(f"CEL rules name models absent from the schema: {unknown}")
    root = {k: v for k, v in json_schema.items() if k != "$defs"}
    return _convert(root, defs, rules, name=json_schema.get("title"))


def _convert(
    node: Mapping[str, Any],
    defs: Mapping[str, Any],
    rules: Mapping[str, list[tuple[str, str]]],
    name: str | None = None,
) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        ref_name = node.pop("$ref").rsplit("/", 1)[-1]
        target = _convert(defs[ref_name], defs, rules, name=ref_name)
        return _ordered({**target, **_convert_siblings(node, defs, rules)})
    if "anyOf" in node:
        return _convert_union(node, defs, rules)
    if "allOf" in node or "oneOf" in node or "not" in node:
        raise SchemaConversionError(f"unsupported schema combinator in {sorted(node)}")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out["properties"] = {k: _convert(v, defs, rules) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, rules)
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out["additionalProperties"] = _convert(value, defs, rules)
            elif value is True and "properties" not in node:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # False (extra="forbid") cannot be expressed in a CRD: see the module docstring.
        elif key == "description":
            out[key] = " ".join(str(value).split())
        elif key in _KEPT_KEYS:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaConversionError(f"unsupported JSON schema keyword {key!r}")

    if out.get("type") == "string" and "enum" in out and "maxLength" not in out:
        out["maxLength"] = max(len(str(v)) for v in out["enum"])
    if name is not None and rules.get(name):
        out["x-kubernetes-validations"] = [{"rule": rule, "message": msg} for rule, msg in rules[name]]
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """``type`` and ``description`` first, for readable YAML."""
    head = {k: node[k] for k in ("type", "description") if k in node}
    return {**head, **{k: v for k, v in node.items() if k not in head}}


def _convert_siblings(
    node: Mapping[str, Any], defs: Mapping[str, Any], rules: Mapping[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    """Keys written next to a ``$ref``/``anyOf`` (description, default) in structural form."""
    return _convert({k: v for k, v in node.items() if k not in ("$ref", "anyOf")}, defs, rules)


def _convert_union(
    node: Mapping[str, Any], defs: Mapping[str, Any], rules: Mapping[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    options = [o for o in node["anyOf"] if o != {"type": "null"}]
    siblings = _convert_siblings(node, defs, rules)
    if len(options) == 1:
        return _ordered({**_convert(options[0], defs, rules), **siblings})
    if sorted(o.get("type", "") for o in options) == ["integer", "string"] and all(
        len(o) == 1 for o in options
    ):
        return {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            **siblings,
        }
    raise SchemaConversionError(f"unsupported union {node['anyOf']!r}")


# --------------------------------------------------------------------------- checks


def schema_at(schema: Mapping[str, Any], path: Iterable[str]) -> Mapping[str, Any] | None:
    """The sub-schema at a dotted field path (``properties`` only), or None if absent."""
    node: Mapping[str, Any] | None = schema
    for part in path:
        if node is None:
            return None
        node = node.get("properties", {}).get(part)
    return node


def cel_field_paths(rule: str) -> list[tuple[str, ...]]:
    """The field paths a CEL rule reads through ``self`` (``self.a.b`` -> ``("a", "b")``)."""
    return [tuple(m.group(1).lstrip(".").split(".")) for m in _CEL_SELF_PATH.finditer(rule)]


def iter_validations(
    schema: Mapping[str, Any], path: str = ""
) -> Iterable[tuple[str, Mapping[str, Any], dict]]:
    """Yield ``(path, object schema, validation)`` for every ``x-kubernetes-validations`` entry."""
    for validation in schema.get("x-kubernetes-validations", []):
        yield path, schema, validation
    for key, sub in schema.get("properties", {}).items():
        yield from iter_validations(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), Mapping):
        yield from iter_validations(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from iter_validations(schema["additionalProperties"], f"{path}{{}}")


def check_references(root: Mapping[str, Any], columns: Iterable[PrinterColumn]) -> None:
    """Fail if a CEL rule or a printer column names a field the schema does not have."""
    for path, obj, validation in iter_validations(root):
        for fields in cel_field_paths(validation["rule"]):
            if schema_at(obj, fields) is None:
                raise SchemaConversionError(
                    f"CEL rule at {path or '.'} reads self.{'.'.join(fields)}, which is not in the schema: "
                    f"{validation['rule']}"
                )
    for column in columns:
        fields = column.json_path.lstrip(".").split(".")
        if fields[0] != "metadata" and schema_at(root, fields) is None:
            raise SchemaConversionError(f"printer column {column.name!r}: no field {column.json_path}")


# --------------------------------------------------------------------------- the CRD


def metadata_schema() -> dict[str, Any]:
    """``metadata``: the only restrictions a CRD may declare there are on ``name`` (see ``names``).

    No description on ``metadata`` itself: the API server allows nothing but ``type`` and the name
    restrictions there, and documents ObjectMeta on its own.
    """
    return {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "description": "The run's name: a DNS-1123 label of at most "
                f"{MAX_NAME_LENGTH} characters (lowercase letters, digits and '-'), because the "
                "operator names the Job <name>-<attempt>, its pods <name>-<attempt>-<index> and, "
                "for multi-host runs, the headless Service <name> (which must start with a letter).",
                "maxLength": MAX_NAME_LENGTH,
                "pattern": NAME_PATTERN,
            },
            # Declared so that CEL rules see name's maxLength (bounded cost) and generated names fit.
            "generateName": {
                "type": "string",
                "description": "Prefix of a name the API server generates by appending 5 characters: "
                f"at most {MAX_NAME_LENGTH - 5} characters, so that the name fits.",
                "maxLength": MAX_NAME_LENGTH - 5,
                "pattern": GENERATE_NAME_PATTERN,
            },
        },
    }


def openapi_schema() -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of a TunixRun object."""
    model_rules = {model: rules for model, rules in CEL_RULES.items() if model != ROOT_MODEL}
    spec = structural_schema(TunixRunSpec.model_json_schema(by_alias=True, mode="validation"), model_rules)
    status = structural_schema(TunixRunStatus.model_json_schema(by_alias=True, mode="validation"))
    root: dict[str, Any] = {
        "type": "object",
        "description": "A JAX training (or benchmark) run, executed by the tunix-rt operator as a Job.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"Versioned schema of this object: {GROUP}/{VERSION}.",
            },
            "kind": {"type": "string", "description": f"REST resource this object represents: {KIND}."},
            "metadata": metadata_schema(),
            "spec": spec,
            "status": status,
        },
    }
    if CEL_RULES.get(ROOT_MODEL):
        root["x-kubernetes-validations"] = [
            _root_rule(rule, message) for rule, message in CEL_RULES[ROOT_MODEL]
        ]
    return root


def _root_rule(rule: str, message: str) -> dict[str, Any]:
    """A root CEL rule; one about the name reports at ``metadata.name`` (not at ``<nil>``)."""
    validation = {"rule": rule, "message": message}
    if "self.metadata.name" in rule:
        validation["fieldPath"] = ".metadata.name"
    return validation


def build_crd(columns: Iterable[PrinterColumn] = PRINTER_COLUMNS) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition for TunixRun."""
    columns = list(columns)
    schema = openapi_schema()
    check_references(schema, columns)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "tunix-rt"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_crd() for c in columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def build_peering_crds() -> list[dict[str, Any]]:
    """kopf's peering CRDs (``kopf.dev/v1``), needed only when the operator runs with ``--peering``."""

    def crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {
                "group": "kopf.dev",
                "scope": scope,
                "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                                },
                            }
                        },
                    }
                ],
            },
        }

    return [
        crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]
