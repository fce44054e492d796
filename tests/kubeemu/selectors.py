"""Label and field selectors as the Kubernetes API server parses and applies them (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector string that the API server would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    """One clause: ``key op values`` with op in =, !=, in, notin, exists, !exists."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects that lack the key, like the real server.
        return not present or value not in self.values


_SET_CLAUSE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_CLAUSE = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")


def _split_clauses(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    clauses, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            clauses.append("".join(current))
            current = []
        else:
            current.append(char)
    clauses.append("".join(current))
    return [clause for clause in clauses if clause.strip()]


def parse_label_selector(selector: str | None) -> tuple[Requirement, ...]:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k`` into requirements (empty selector: everything)."""
    requirements: list[Requirement] = []
    for clause in _split_clauses(selector or ""):
        eq = _EQ_CLAUSE.match(clause)
        if eq:
            key, op, value = eq.groups()
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
            continue
        match = _SET_CLAUSE.match(clause)
        if not match:
            raise SelectorError(f"unable to parse requirement: {clause!r}")
        negated, key, op, values = match.groups()
        if op:
            if negated:
                raise SelectorError(f"unable to parse requirement: {clause!r}")
            items = frozenset(v.strip() for v in values.split(",") if v.strip())
            requirements.append(Requirement(key, op, items))
        else:
            requirements.append(Requirement(key, "!exists" if negated else "exists"))
    return tuple(requirements)


def parse_field_selector(selector: str | None) -> tuple[Requirement, ...]:
    """Parse ``metadata.name=x,status.phase!=Running`` (only =, ==, != are allowed for fields)."""
    requirements: list[Requirement] = []
    for clause in _split_clauses(selector or ""):
        eq = _EQ_CLAUSE.match(clause)
        if not eq:
            raise SelectorError(f"invalid field selector: {clause!r}")
        key, op, value = eq.groups()
        requirements.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
    return tuple(requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value of a dotted field path in an object ("" when absent), as fields are compared."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def matches(
    obj: Mapping[str, Any],
    labels: tuple[Requirement, ...] = (),
    fields: tuple[Requirement, ...] = (),
) -> bool:
    """Whether an object satisfies all label and field requirements.

    Field selectors apply to any dotted path (a superset of the real server, which allows only a few
    fields per resource, e.g. metadata.name, metadata.namespace, status.phase for pods).
    """
    object_labels = (obj.get("metadata") or {}).get("labels") or {}
    if not all(req.matches(object_labels) for req in labels):
        return False
    return all(req.matches({req.key: field_value(obj, req.key)}) for req in fields)
