"""Render the tunix-operator chart offline and read its RBAC rules (shared by chart and e2e tests)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "tunix-operator"
RELEASE = "tunix"
NAMESPACE = "tunix-system"


def render(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Every object the chart's templates render (CRDs from ``crds/`` not included)."""
    manifests = helm_python.Chart.load(CHART_DIR).render(dict(values or {}), name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: Mapping[str, Any] | None = None) -> str:
    manifests = helm_python.Chart.load(CHART_DIR).render(
        dict(values or {}), name=RELEASE, namespace=NAMESPACE
    )
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def chart_crds() -> list[dict[str, Any]]:
    """The CRD objects shipped in the chart's ``crds/``."""
    chart = helm_python.Chart.load(CHART_DIR)
    return [doc for crd in chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc]


def of_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def rbac_rules(objects: Iterable[Mapping[str, Any]], namespace: str | None = None) -> list[dict[str, Any]]:
    """The rules granted in ``namespace``: every ClusterRole's, plus the Roles in that namespace."""
    rules: list[dict[str, Any]] = []
    for obj in objects:
        if obj["kind"] == "ClusterRole" or (
            obj["kind"] == "Role" and obj["metadata"]["namespace"] == namespace
        ):
            rules.extend(obj.get("rules", []))
    return rules


def allows(rules: Iterable[Mapping[str, Any]], group: str, resource: str, verb: str) -> bool:
    """Whether ``rules`` allow ``verb`` on ``resource`` (``plural`` or ``plural/sub``) in ``group``."""
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        for rule in rules
    )
