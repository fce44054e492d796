"""Every status the operator writes fits the CRD's status schema (what the API server would keep)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from tests.operator.factories import at, job, pod, run_body
from tunix_operator.settings import OperatorSettings
from tunix_operator.state import Observed, decide

CRD_PATH = pathlib.Path(__file__).resolve().parents[2] / "crds" / "tunixrun.yaml"
SETTINGS = OperatorSettings(artifacts_base_uri="s3://b/runs")


def status_schema() -> dict[str, Any]:
    if CRD_PATH.exists():
        crd = next(
            d
            for d in yaml.safe_load_all(CRD_PATH.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        )
    else:
        from tunix_api.crd import build_crd

        crd = build_crd()
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


def strict(schema: Any) -> Any:
    """Forbid properties the schema does not list (the API server would prune them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


SUMMARY = json.dumps({"finalLoss": 1.0, "totalSteps": 100, "provenance": {"jax": "0.10.2"}})
PROGRESS = {
    "step": 5,
    "totalSteps": 100,
    "loss": 3.0,
    "tokensPerSecond": 9.0,
    "etaSeconds": 1.0,
    "updatedAt": "2026-01-01T12:00:01Z",
}
SCENARIOS = {
    "created": [Observed()],
    "image-pull": [Observed(), Observed(job=job(), pods=[pod(phase="Pending", waiting="ImagePullBackOff")])],
    "running": [Observed(), Observed(job=job(), pods=[pod()], progress=PROGRESS)],
    "succeeded": [
        Observed(),
        Observed(job=job(condition="Complete"), pods=[pod(phase="Succeeded", exit_code=0, message=SUMMARY)]),
    ],
    "restarting": [
        Observed(),
        Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=1)]),
    ],
    "failed": [Observed(), Observed(job=job(condition="Failed"), pods=[pod(phase="Failed", exit_code=3)])],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_status_fits_the_crd(scenario: str) -> None:
    schema = strict(status_schema())
    body = run_body(checkpoint={"volume": {"size": "1Gi"}})
    for i, observed in enumerate(SCENARIOS[scenario]):
        body["status"] = decide(body, observed, at(i), SETTINGS).status
        jsonschema.validate(body["status"], schema)


def test_invalid_spec_status_fits_the_crd() -> None:
    body = run_body(training={"steps": 0})
    body["status"] = decide(body, Observed(), at(0), SETTINGS).status
    jsonschema.validate(body["status"], strict(status_schema()))
