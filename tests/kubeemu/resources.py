"""The resource types an emulated API server serves: built-ins (from kmock's bundle) and CRDs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kmock

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/plural with what discovery says about it."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: frozenset[str] = frozenset()
    crd_name: str | None = None  # the CustomResourceDefinition that declared it, if any
    printer_columns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are shared by all versions of a group/plural."""
        return self.group, self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def builtin_types() -> list[ResourceType]:
    """The built-in kinds of a recent cluster, taken from kmock's bundled discovery data."""
    bundle = kmock.KubernetesEmulator()
    bundle.resources.load_bundled()
    types = []
    for res in bundle.resources:
        info = bundle.resources[res]
        types.append(
            ResourceType(
                group=res.group,
                version=res.version,
                plural=res.plural,
                kind=info.kind or res.plural.capitalize(),
                singular=info.singular or (info.kind or res.plural).lower(),
                namespaced=bool(info.namespaced),
                short_names=tuple(sorted(info.shortnames)),
                categories=tuple(sorted(info.categories)),
                verbs=tuple(sorted(info.verbs)) or ALL_VERBS,
                subresources=frozenset(info.subresources),
            )
        )
    return types


def crd_types(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition declares (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = frozenset((version.get("subresources") or {}).keys())
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources,
                crd_name=(crd.get("metadata") or {}).get("name"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            )
        )
    return result


class Registry:
    """Resource types by (group, version, plural), with the lookups discovery and routing need."""

    def __init__(self, types: list[ResourceType] | None = None) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rtype in types or []:
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        self._types[rtype.group, rtype.version, rtype.plural] = rtype

    def remove_crd(self, crd_name: str) -> None:
        for key, rtype in list(self._types.items()):
            if rtype.crd_name == crd_name:
                del self._types[key]

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def any_version(self, group: str, plural: str) -> ResourceType | None:
        """Some served version of a group/plural (for watch and garbage collection bookkeeping)."""
        return next((t for t in self._types.values() if t.storage_key == (group, plural)), None)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def group_versions(self) -> dict[str, list[str]]:
        """Group name -> served versions (preferred first: the highest stable-looking one)."""
        groups: dict[str, set[str]] = {}
        for rtype in self._types.values():
            groups.setdefault(rtype.group, set()).add(rtype.version)
        return {group: sorted(versions, key=_version_priority) for group, versions in groups.items()}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if (t.group, t.version) == (group, version)]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    rank = {"": 0, "beta": 1, "alpha": 2}[stage or ""]
    return (rank, -int(major), -int(minor or 0))
