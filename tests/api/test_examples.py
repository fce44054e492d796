"""Every example is admitted by the real API server (the installed CRD's schema, defaults and CEL rules)
and by the pydantic models, and what the server refuses is refused by both, with the message
``kubectl apply`` shows.

Unknown fields: the API server *prunes* them silently unless the client asks for strict field
validation; ``kubectl apply`` does (``--validate=strict`` is its default since 1.27), and the
operator parses every spec with ``extra="forbid"`` models, so a typo never trains silently.
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

from tests.api.admission import dry_run_apply
from tunix_api.names import MULTI_HOST_NAME_MESSAGE
from tunix_api.run import TunixRun
from tunix_api.training import CEL_RULES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _validate(obj: dict) -> TunixRun:
    """The models as the local run applies them: strictly typed JSON, as the API server sees it."""
    return TunixRun.model_validate_json(json.dumps(obj), strict=True)


def test_the_expected_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"run.yaml", "cpu-cluster.yaml", "gpu-125m.yaml", "multi-host.yaml", "benchmark.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_by_the_api_server(path: Path, kubeconfig: Path) -> None:
    obj = _load(path)
    assert obj["apiVersion"] == "tunix.dev/v1alpha1" and obj["kind"] == "TunixRun"
    answer = dry_run_apply(kubeconfig, obj)
    assert answer.admitted, answer.error


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_models(path: Path) -> None:
    run = _validate(_load(path))
    assert run.metadata.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_api_server_defaults_agree_with_the_models(path: Path, kubeconfig: Path) -> None:
    """The object the API server would store (defaulted) means the same run as the user's object."""
    obj = _load(path)
    stored = dry_run_apply(kubeconfig, obj).stored
    assert stored is not None and stored["spec"] != obj["spec"]  # the server did default something
    assert _validate({**obj, "spec": stored["spec"]}).spec == _validate(obj).spec


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


# (id, mutation of examples/run.yaml, what kube-apiserver v1.37.2 answers to `kubectl apply`). The name
# cases are refused by the server's own name check (a DNS-1123 subdomain) or, for '/', by kubectl itself.
SCHEMA_REJECTIONS = [
    ("typo-in-field", _set("spec.training.stpes", 10), 'unknown field "spec.training.stpes"'),
    ("typo-top-level", _set("spec.checkpoints", {}), 'unknown field "spec.checkpoints"'),
    ("missing-training", _delete("spec.training"), "spec.training: Required value"),
    ("missing-steps", _delete("spec.training.steps"), "spec.training.steps: Required value"),
    ("wrong-enum-mode", _set("spec.mode", "Training"), 'spec.mode: Unsupported value: "Training"'),
    ("wrong-enum-preset", _set("spec.model.preset", "7b"), 'spec.model.preset: Unsupported value: "7b"'),
    (
        "wrong-enum-accelerator",
        _set("spec.accelerator.type", "nvidia/gpu"),
        'spec.accelerator.type: Unsupported value: "nvidia/gpu"',
    ),
    (
        "steps-below-minimum",
        _set("spec.training.steps", 0),
        "spec.training.steps in body should be greater than or equal to 1",
    ),
    (
        "lr-exclusive-minimum",
        _set("spec.training.learningRate", 0),
        "spec.training.learningRate in body should be greater than 0",
    ),
    (
        "beta-exclusive-maximum",
        _set("spec.training.beta2", 1.0),
        "spec.training.beta2 in body should be less than 1",
    ),
    (
        "stall-timeout-below-minimum",
        _set("spec.retryPolicy.stallTimeoutSeconds", 5),
        "spec.retryPolicy.stallTimeoutSeconds in body should be greater than or equal to 10",
    ),
    (
        "hosts-above-maximum",
        _set("spec.accelerator.hosts", 5000),
        "spec.accelerator.hosts in body should be less than or equal to 4096",
    ),
    (
        "wrong-type",
        _set("spec.training.steps", "many"),
        "spec.training.steps in body must be of type integer",
    ),
    (
        "integer-as-string",
        _set("spec.training.steps", "10"),
        "spec.training.steps in body must be of type integer",
    ),
    (
        "integer-as-boolean",
        _set("spec.training.batchSize", True),
        "spec.training.batchSize in body must be of type integer",
    ),
    (
        "number-as-string",
        _set("spec.training.learningRate", "0.1"),
        "spec.training.learningRate in body must be of type number",
    ),
    ("boolean-as-string", _set("spec.suspend", "true"), "spec.suspend in body must be of type boolean"),
    (
        "boolean-as-integer",
        _set("spec.dataset.packing", 1),
        "spec.dataset.packing in body must be of type boolean",
    ),
    (
        "resume-pattern",
        _set("spec.checkpoint.resume", "earliest"),
        "spec.checkpoint.resume in body should match",
    ),
    (
        "volume-size-pattern",
        _set("spec.checkpoint.volume", {"size": "lots"}),
        "spec.checkpoint.volume.size in body should match",
    ),
    ("empty-image", _set("spec.image", ""), "spec.image in body should be at least 1 chars long"),
    (
        "quantity-not-a-list",
        _set("spec.resources", {"limits": {"cpu": ["1"]}}),
        "spec.resources.limits.cpu in body must be of type integer,string",
    ),
    ("env-name-missing", _set("spec.env", [{"value": "x"}]), "spec.env[0].name: Required value"),
    # metadata.name: a DNS-1123 label of <= 45 characters (the operator names Jobs and pods after it)
    (
        "name-uppercase",
        _set("metadata.name", "Tiny-Golden"),
        'metadata.name: Invalid value: "Tiny-Golden": a lowercase RFC 1123 subdomain',
    ),
    (
        "name-with-dot",
        _set("metadata.name", "tiny.golden"),
        "metadata.name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    ),
    (
        "name-absolute-path",
        _set("metadata.name", "/tmp/run"),
        "invalid resource name \"/tmp/run\": [may not contain '/']",
    ),
    (
        "name-parent-dir",
        _set("metadata.name", "../run"),
        "invalid resource name \"../run\": [may not contain '/']",
    ),
    (
        "name-trailing-dash",
        _set("metadata.name", "run-"),
        'metadata.name: Invalid value: "run-": a lowercase RFC 1123 subdomain',
    ),
    (
        "name-too-long",
        _set("metadata.name", "r" * 46),
        "metadata.name: Too long: may not be more than 45 bytes",
    ),
    (
        "generate-name-too-long",
        _set("metadata.generateName", "r" * 41),
        "metadata.generateName: Too long: may not be more than 40 bytes",
    ),
    (
        "generate-name-uppercase",
        _set("metadata.generateName", "Run-"),
        'metadata.generateName: Invalid value: "Run-": a lowercase RFC 1123 subdomain',
    ),
    # label values the operator puts on the Job and pods
    (
        "pod-label-value-space",
        _set("spec.podLabels", {"team": "my team"}),
        "spec.podLabels.team in body should match",
    ),
    (
        "pod-label-value-too-long",
        _set("spec.podLabels", {"team": "t" * 64}),
        "spec.podLabels.team: Too long: may not be more than 63 bytes",
    ),
    (
        "node-selector-value",
        _set("spec.nodeSelector", {"pool": "-gpu"}),
        "spec.nodeSelector.pool in body should match",
    ),
    # names of the objects a run refers to (DNS-1123 subdomains)
    (
        "secret-name-uppercase",
        _set("spec.storage.credentialsSecret", "S3-Creds"),
        "spec.storage.credentialsSecret in body should match",
    ),
    (
        "service-account-underscore",
        _set("spec.serviceAccountName", "my_sa"),
        "spec.serviceAccountName in body should match",
    ),
    (
        "claim-name-too-long",
        _set("spec.checkpoint.volume", {"claimName": "c" * 254}),
        "spec.checkpoint.volume.claimName: Too long: may not be more than 253 bytes",
    ),
    # LoRA and evaluation (issue 11)
    (
        "lora-rank-zero",
        _set("spec.training.lora", {"rank": 0}),
        "spec.training.lora.rank in body should be greater than or equal to 1",
    ),
    (
        "lora-unknown-target",
        _set("spec.training.lora", {"targetModules": ["qkv_proj"]}),
        'spec.training.lora.targetModules[0]: Unsupported value: "qkv_proj"',
    ),
    (
        "lora-no-target",
        _set("spec.training.lora", {"targetModules": []}),
        "spec.training.lora.targetModules in body should have at least 1 items",
    ),
    (
        "hold-out-zero",
        _set("spec.evaluation", {"holdOutFraction": 0}),
        "spec.evaluation.holdOutFraction in body should be greater than 0",
    ),
    (
        "hold-out-one",
        _set("spec.evaluation", {"holdOutFraction": 1}),
        "spec.evaluation.holdOutFraction in body should be less than 1",
    ),
]


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
    "lora.targetModules must name each module at most once": _set(
        "spec.training.lora", {"targetModules": ["q_proj", "v_proj", "q_proj"]}
    ),
    "evaluation needs exactly one of datasetUri or holdOutFraction": _set(
        "spec.evaluation", {"datasetUri": "eval.jsonl", "holdOutFraction": 0.1}
    ),
    "checkpoint.keepBest needs spec.evaluation": _set("spec.checkpoint.keepBest", True),
    "export.mergeAdapters needs training.lora": _set("spec.export", {"mergeAdapters": True}),
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
def test_schema_violations_are_rejected_by_api_server_and_models(
    mutation, expected: str, kubeconfig: Path
) -> None:
    obj = _mutated(mutation)
    answer = dry_run_apply(kubeconfig, obj)
    assert not answer.admitted and expected in answer.error, answer.error
    with pytest.raises(pydantic.ValidationError):
        _validate(obj)


@pytest.mark.parametrize("message", sorted(CEL_REJECTIONS))
def test_each_cel_rule_rejects_its_violation_like_the_models(message: str, kubeconfig: Path) -> None:
    obj = _mutated(CEL_REJECTIONS[message])
    answer = dry_run_apply(kubeconfig, obj)
    assert not answer.admitted and f"Invalid value: {message}" in answer.error, answer.error
    assert answer.error.count("Invalid value") == 1, answer.error  # this rule alone
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        _validate(obj)


def test_every_cel_rule_has_a_rejection_case() -> None:
    messages = {message for pairs in CEL_RULES.values() for _, message in pairs}
    assert messages == set(CEL_REJECTIONS)


def test_benchmark_mode_needs_no_dataset(kubeconfig: Path) -> None:
    obj = _mutated(_all(_delete("spec.dataset"), _set("spec.mode", "Benchmark")))
    assert dry_run_apply(kubeconfig, obj).admitted
    _validate(obj)


def test_nulls_are_pruned_before_validation(kubeconfig: Path) -> None:
    answer = dry_run_apply(kubeconfig, _mutated(_set("spec.image", None)))
    assert answer.admitted and "image" not in answer.stored["spec"], answer.error
