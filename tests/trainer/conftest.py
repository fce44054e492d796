"""Shared trainer fixtures: a small JSONL dataset and run configs for a model that compiles fast on CPU."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# A model small enough that init + step compile in about a second on CPU.
SMALL_MODEL: dict[str, Any] = {"dModel": 32, "nLayers": 1, "nHeads": 2, "dFf": 64}
SMALL_TRAINING: dict[str, Any] = {
    "steps": 8,
    "batchSize": 4,
    "seqLen": 32,
    "learningRate": 1.0e-2,
    "warmupSteps": 2,
    "computeDtype": "float32",
}

_WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
    "while", "seven", "tall", "trees", "sway", "in", "cold", "wind",
]  # fmt: skip


def write_dataset(path: Path, records: int = 120) -> Path:
    """Deterministic ``{"text": ...}`` records (about 7 KB of bytes)."""
    lines = []
    for i in range(records):
        words = [_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(8 + i % 5)]
        lines.append(json.dumps({"text": f"{i}: " + " ".join(words)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data.jsonl")


@pytest.fixture
def run_resource(dataset: Path) -> Callable[..., dict[str, Any]]:
    """``run_resource(**spec_overrides)`` -> a whole TunixRun document (nested dicts merge; None deletes)."""

    def make(name: str = "unit", **spec_overrides: Any) -> dict[str, Any]:
        spec = {
            "model": SMALL_MODEL,
            "dataset": {"uri": str(dataset)},
            "training": SMALL_TRAINING,
            "checkpoint": {"saveIntervalSteps": 4, "maxToKeep": 2},
            "metrics": {"flushEverySteps": 2, "progressIntervalSeconds": 0},
        }
        return {
            "apiVersion": "tunix.dev/v1alpha1",
            "kind": "TunixRun",
            "metadata": {"name": name},
            "spec": _merge(spec, spec_overrides),
        }

    return make


@pytest.fixture
def write_config(tmp_path: Path, run_resource: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    """``write_config(**spec_overrides)`` -> path of a run.yaml in tmp_path."""
    counter = iter(range(1_000_000))

    def write(**spec_overrides: Any) -> Path:
        path = tmp_path / f"run-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(run_resource(**spec_overrides)), encoding="utf-8")
        return path

    return write


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop_at(step: int, event: threading.Event) -> Callable[[dict], None]:
    """An ``on_progress`` callback that sets ``event`` (a SIGTERM stand-in) when ``step`` is reported."""

    def on_progress(record: dict) -> None:
        if record["step"] == step:
            event.set()

    return on_progress
