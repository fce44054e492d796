"""Admission by the real API server: what ``kubectl apply`` answers for an object, without storing it.

``kubectl apply --dry-run=server`` runs the whole admission chain (strict field validation, the CRD's
structural schema, defaulting, CEL rules, admission plugins) and prints the stored object or the
error a user sees.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import yaml

from tests.cluster.fixtures import kubectl


@dataclass(frozen=True)
class Admission:
    """The server's answer: the object as it would be stored, or kubectl's error text."""

    stored: dict[str, Any] | None
    error: str

    @property
    def admitted(self) -> bool:
        return self.stored is not None


def dry_run_apply(kubeconfig: pathlib.Path, obj: dict[str, Any], namespace: str | None = None) -> Admission:
    args = ["apply", "--dry-run=server", "-o", "json", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    result = kubectl(kubeconfig, *args, input=yaml.safe_dump(obj), check=False)
    if result.returncode == 0:
        return Admission(json.loads(result.stdout), "")
    return Admission(None, result.stderr.strip())
