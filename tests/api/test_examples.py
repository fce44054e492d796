"""Every example is admitted by the CRD (schema + CEL) and by the pydantic models, and what a
real API server would refuse is refused by both.

Unknown fields: the API server *prunes* them silently unless the client asks for strict field
validation; ``kubectl apply`` does (``--validate=strict`` is its default since 1.27), and the
operator parses every spec with ``extra="forbid"`` models, so a typo never trains silently.
The admission helper therefore validates with strict field validation.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tests.api.crd_validation import admit, apply_defaults, cel_errors
from tunix_api.crd import build_crd
from tunix_api.names import MULTI_HOST_NAME_MESSAGE
from tunix_api.run import TunixRun
from tunix_api.training import CEL_RULES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _validate(obj: dict) -> TunixRun:
    """The models as the local run applies them: strictly typed JSON, as the API server sees it."""
    return TunixRun.model_validate_json(json.dumps(obj), strict=True)


def test_the_expected_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"run.yaml", "cpu-cluster.yaml", "gpu-125m.yaml", "multi-host.yaml", "benchmark.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_by_the_crd(path: Path, schema: dict) -> None:
    obj = _load(path)
    assert obj["apiVersion"] == "tunix.dev/v1alpha1" and obj["kind"] == "TunixRun"
    assert admit(obj, schema) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_models(path: Path) -> None:
    run = _validate(_load(path))
    assert run.metadata.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_api_server_defaults_agree_with_the_models(path: Path, schema: dict) -> None:
    """The stored (defaulted) object means the same run as the user's object."""
    obj = _load(path)
    defaulted = apply_defaults(obj, schema)
    assert _validate(defaulted).spec == _validate(obj).spec


# --------------------------------------------------------------------------- rejections

BASE = "run.yaml"


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node[part]
        del node[leaf]

    return mutate


def _all(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        for m in mutations:
            m(obj)

    return mutate


# (id, mutation of examples/run.yaml, text expected in the CRD's error)
SCHEMA_REJECTIONS = [
    ("typo-in-field", _set("spec.training.stpes", 10), "'stpes' was unexpected"),
    ("typo-top-level", _set("spec.checkpoints", {}), "'checkpoints' was unexpected"),
    ("missing-training", _delete("spec.training"), "'training' is a required property"),
    ("missing-steps", _delete("spec.training.steps"), "'steps' is a required property"),
    ("wrong-enum-mode", _set("spec.mode", "Training"), "'Training' is not one of"),
    ("wrong-enum-preset", _set("spec.model.preset", "7b"), "'7b' is not one of"),
    ("wrong-enum-accelerator", _set("spec.accelerator.type", "nvidia/gpu"), "is not one of"),
    ("steps-below-minimum", _set("spec.training.steps", 0), "less than the minimum of 1"),
    ("lr-exclusive-minimum", _set("spec.training.learningRate", 0), "less than or equal to the minimum"),
    ("beta-exclusive-maximum", _set("spec.training.beta2", 1.0), "greater than or equal to the maximum"),
    ("hosts-above-maximum", _set("spec.accelerator.hosts", 5000), "greater than the maximum"),
    ("wrong-type", _set("spec.training.steps", "many"), "is not of type 'integer'"),
    ("integer-as-string", _set("spec.training.steps", "10"), "'10' is not of type 'integer'"),
    ("integer-as-boolean", _set("spec.training.batchSize", True), "True is not of type 'integer'"),
    ("number-as-string", _set("spec.training.learningRate", "0.1"), "'0.1' is not of type 'number'"),
    ("boolean-as-string", _set("spec.suspend", "true"), "'true' is not of type 'boolean'"),
    ("boolean-as-integer", _set("spec.dataset.packing", 1), "1 is not of type 'boolean'"),
    ("resume-pattern", _set("spec.checkpoint.resume", "earliest"), "does not match"),
    ("volume-size-pattern", _set("spec.checkpoint.volume", {"size": "lots"}), "does not match"),
    ("empty-image", _set("spec.image", ""), "should be non-empty"),
    ("quantity-not-a-list", _set("spec.resources", {"limits": {"cpu": ["1"]}}), "is not valid under any"),
    ("env-name-missing", _set("spec.env", [{"value": "x"}]), "'name' is a required property"),
    # metadata.name: a DNS-1123 label of <= 45 characters (the operator names Jobs and pods after it)
    ("name-uppercase", _set("metadata.name", "Tiny-Golden"), "does not match"),
    ("name-with-dot", _set("metadata.name", "tiny.golden"), "does not match"),
    ("name-absolute-path", _set("metadata.name", "/tmp/run"), "does not match"),
    ("name-parent-dir", _set("metadata.name", "../run"), "does not match"),
    ("name-trailing-dash", _set("metadata.name", "run-"), "does not match"),
    ("name-too-long", _set("metadata.name", "r" * 46), "is too long"),
    ("generate-name-too-long", _set("metadata.generateName", "r" * 41), "is too long"),
    ("generate-name-uppercase", _set("metadata.generateName", "Run-"), "does not match"),
    # label values the operator puts on the Job and pods
    ("pod-label-value-space", _set("spec.podLabels", {"team": "my team"}), "does not match"),
    ("pod-label-value-too-long", _set("spec.podLabels", {"team": "t" * 64}), "is too long"),
    ("node-selector-value", _set("spec.nodeSelector", {"pool": "-gpu"}), "does not match"),
    # names of the objects a run refers to (DNS-1123 subdomains)
    ("secret-name-uppercase", _set("spec.storage.credentialsSecret", "S3-Creds"), "does not match"),
    ("service-account-underscore", _set("spec.serviceAccountName", "my_sa"), "does not match"),
    ("claim-name-too-long", _set("spec.checkpoint.volume", {"claimName": "c" * 254}), "is too long"),
]

# What kube-apiserver v1.37.2 (kubectl apply --dry-run=server, strict field validation) answers to
# each SCHEMA_REJECTIONS case, for a harness with a real API server (CEL cases answer with their
# message). The name cases are refused before the CRD's schema by the server's own check (a
# DNS-1123 subdomain) or, for '/', by kubectl itself.
API_SERVER_SAYS = {
    "typo-in-field": 'unknown field "spec.training.stpes"',
    "typo-top-level": 'unknown field "spec.checkpoints"',
    "missing-training": "spec.training: Required value",
    "missing-steps": "spec.training.steps: Required value",
    "wrong-enum-mode": 'spec.mode: Unsupported value: "Training"',
    "wrong-enum-preset": 'spec.model.preset: Unsupported value: "7b"',
    "wrong-enum-accelerator": 'spec.accelerator.type: Unsupported value: "nvidia/gpu"',
    "steps-below-minimum": "spec.training.steps in body should be greater than or equal to 1",
    "lr-exclusive-minimum": "spec.training.learningRate in body should be greater than 0",
    "beta-exclusive-maximum": "spec.training.beta2 in body should be less than 1",
    "hosts-above-maximum": "spec.accelerator.hosts in body should be less than or equal to 4096",
    "wrong-type": "spec.training.steps in body must be of type integer",
    "integer-as-string": "spec.training.steps in body must be of type integer",
    "integer-as-boolean": "spec.training.batchSize in body must be of type integer",
    "number-as-string": "spec.training.learningRate in body must be of type number",
    "boolean-as-string": "spec.suspend in body must be of type boolean",
    "boolean-as-integer": "spec.dataset.packing in body must be of type boolean",
    "resume-pattern": "spec.checkpoint.resume in body should match",
    "volume-size-pattern": "spec.checkpoint.volume.size in body should match",
    "empty-image": "spec.image in body should be at least 1 chars long",
    "quantity-not-a-list": "spec.resources.limits.cpu in body must be of type integer,string",
    "env-name-missing": "spec.env[0].name: Required value",
    "name-uppercase": 'metadata.name: Invalid value: "Tiny-Golden": a lowercase RFC 1123 subdomain',
    "name-with-dot": "metadata.name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    "name-absolute-path": "invalid resource name \"/tmp/run\": [may not contain '/']",
    "name-parent-dir": "invalid resource name \"../run\": [may not contain '/']",
    "name-trailing-dash": 'metadata.name: Invalid value: "run-": a lowercase RFC 1123 subdomain',
    "name-too-long": "metadata.name: Too long: may not be more than 45 bytes",
    "generate-name-too-long": "metadata.generateName: Too long: may not be more than 40 bytes",
    "generate-name-uppercase": 'metadata.generateName: Invalid value: "Run-": a lowercase RFC 1123 subdomain',
    "pod-label-value-space": "spec.podLabels.team in body should match",
    "pod-label-value-too-long": "spec.podLabels.team: Too long: may not be more than 63 bytes",
    "node-selector-value": "spec.nodeSelector.pool in body should match",
    "secret-name-uppercase": "spec.storage.credentialsSecret in body should match",
    "service-account-underscore": "spec.serviceAccountName in body should match",
    "claim-name-too-long": "spec.checkpoint.volume.claimName: Too long: may not be more than 253 bytes",
}

# One violation per CEL rule, keyed by the rule's message (a test checks every rule is covered).
CEL_REJECTIONS = {
    "dataset is required when mode is Train": _delete("spec.dataset"),
    "accelerator.countPerHost needs an accelerator type": _set("spec.accelerator", {"countPerHost": 4}),
    "without a preset, dModel, nLayers, nHeads and dFf are required": _set("spec.model", {"dModel": 64}),
    "dModel must be divisible by nHeads": _set("spec.model", {"preset": "tiny", "dModel": 100, "nHeads": 3}),
    "nHeads must be divisible by nKvHeads": _set(
        "spec.model", {"preset": "tiny", "nHeads": 8, "nKvHeads": 3}
    ),
    "tokenizer.uri is required when kind is sentencepiece": _set(
        "spec.dataset.tokenizer", {"kind": "sentencepiece"}
    ),
    "pretrained excludes preset and dimensions (config.json gives the shape)": _all(
        _set("spec.model", {"pretrained": {"uri": "hf://org/model"}, "nLayers": 2}),
        _set("spec.dataset.tokenizer", {"kind": "huggingface"}),
    ),
    "dataset.tokenizer.uri is required when kind is huggingface without model.pretrained": _set(
        "spec.dataset.tokenizer", {"kind": "huggingface"}
    ),
    "model.pretrained needs the model's tokenizer: set dataset.tokenizer.kind to huggingface": _set(
        "spec.model", {"pretrained": {"uri": "hf://org/model"}}
    ),
    "batchSize must be divisible by gradAccumSteps": _all(
        _set("spec.training.batchSize", 10), _set("spec.training.gradAccumSteps", 4)
    ),
    "warmupSteps must not exceed steps": _set("spec.training.warmupSteps", 301),
    "checkpoint.volume needs exactly one of claimName or size": _set(
        "spec.checkpoint.volume", {"claimName": "data", "size": "10Gi"}
    ),
    MULTI_HOST_NAME_MESSAGE: _all(
        _set("metadata.name", "0-multi"), _set("spec.accelerator", {"type": "nvidia.com/gpu", "hosts": 2})
    ),
}


def _mutated(mutation: Callable[[dict], None]) -> dict:
    obj = copy.deepcopy(_load(REPO / "examples" / BASE))
    mutation(obj)
    return obj


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [(m, e) for _, m, e in SCHEMA_REJECTIONS],
    ids=[i for i, _, _ in SCHEMA_REJECTIONS],
)
def test_schema_violations_are_rejected_by_crd_and_models(mutation, expected: str, schema: dict) -> None:
    obj = _mutated(mutation)
    errors = admit(obj, schema)
    assert any(expected in e for e in errors), errors
    with pytest.raises(pydantic.ValidationError):
        _validate(obj)


@pytest.mark.parametrize("message", sorted(CEL_REJECTIONS))
def test_each_cel_rule_rejects_its_violation_like_the_models(message: str, schema: dict) -> None:
    obj = _mutated(CEL_REJECTIONS[message])
    errors = admit(obj, schema)
    assert [e for e in errors if e.endswith(message)] and len(errors) == 1, errors
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        _validate(obj)


def test_every_schema_rejection_says_what_the_api_server_answers() -> None:
    assert set(API_SERVER_SAYS) == {ident for ident, _, _ in SCHEMA_REJECTIONS}


def test_every_cel_rule_has_a_rejection_case() -> None:
    messages = {message for pairs in CEL_RULES.values() for _, message in pairs}
    assert messages == set(CEL_REJECTIONS)


def test_benchmark_mode_needs_no_dataset(schema: dict) -> None:
    obj = _mutated(_all(_delete("spec.dataset"), _set("spec.mode", "Benchmark")))
    assert admit(obj, schema) == []
    _validate(obj)


def test_nulls_are_pruned_before_validation(schema: dict) -> None:
    assert admit(_mutated(_set("spec.image", None)), schema) == []


def test_cel_evaluation_errors_are_reported_not_ignored(schema: dict) -> None:
    # Without defaulting, warmupSteps is absent and the rule cannot evaluate: the helper must say so.
    obj = {"spec": {"training": {"steps": 1}, "mode": "Benchmark"}}
    errors = cel_errors(obj, schema)
    assert any("failed to evaluate" in e for e in errors), errors
