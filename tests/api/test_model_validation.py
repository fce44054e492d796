"""The models refuse what the API server refuses: non-finite numbers (JSON cannot carry them, YAML's
``.inf`` can) with a message that says so, and names the operator cannot name children after."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pydantic
import pytest
import yaml

from tunix_api.crd import build_crd
from tunix_api.names import (
    MAX_NAME_LENGTH,
    MULTI_HOST_NAME_MESSAGE,
    generate_name_errors,
    name_errors,
    namespace_errors,
)
from tunix_api.run import Progress, TunixRun

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "examples" / "run.yaml").read_text())
NON_FINITE = [math.nan, math.inf, -math.inf]


def _number_fields(node: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every ``type: number`` field under ``node`` (objects only; none sits in a list)."""
    out = []
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "number":
            out.append((*path, key))
        out += _number_fields(sub, (*path, key))
    return out


SPEC_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
NUMBER_FIELDS = _number_fields(SPEC_SCHEMA)


def _with(path: tuple[str, ...], value: float) -> dict:
    obj = copy.deepcopy(BASE)
    node = obj["spec"]
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return obj


def test_the_float_fields_are_found() -> None:
    names = {path[-1] for path in NUMBER_FIELDS}
    assert {"weightDecay", "eps", "gradClipNorm", "ropeTheta", "learningRate", "normEps"} <= names
    assert len(NUMBER_FIELDS) >= 10


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", NUMBER_FIELDS, ids=".".join)
def test_every_float_field_refuses_non_finite_values_with_the_right_message(path, value) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        TunixRun.model_validate(_with(path, value))
    errors = [e for e in info.value.errors() if e["loc"] == ("spec", *path)]
    assert [e["msg"] for e in errors] == ["Input should be a finite number"], info.value.errors()


def test_non_finite_numbers_cannot_even_reach_the_api_server() -> None:
    """What kubectl sends is JSON, which has no NaN or infinity: the CRD never sees one."""
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json.dumps(_with(("training", "eps"), math.inf), allow_nan=False)


def test_status_keeps_a_nan_loss() -> None:
    """Status is read back, never validated for a user: a diverged run's NaN loss stays readable."""
    assert math.isnan(Progress.model_validate({"loss": "NaN"}).loss)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Tiny", "must be a DNS-1123 label"),
        ("tiny.golden", "must be a DNS-1123 label"),
        ("/tmp/run", "must be a DNS-1123 label"),
        ("../run", "must be a DNS-1123 label"),
        ("..", "must be a DNS-1123 label"),
        ("-run", "must be a DNS-1123 label"),
        ("run_1", "must be a DNS-1123 label"),
        ("", "must be a DNS-1123 label"),
        ("r" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
    ],
)
def test_names_the_api_server_refuses_are_refused(name: str, expected: str) -> None:
    (error,) = name_errors(name)
    assert error.startswith("metadata.name: ") and expected in error
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = name
    with pytest.raises(pydantic.ValidationError, match=r"metadata\.name"):
        TunixRun.model_validate(obj)


@pytest.mark.parametrize("name", ["a", "run-1", "0run", "r" * MAX_NAME_LENGTH])
def test_names_the_api_server_admits_are_admitted(name: str) -> None:
    assert name_errors(name) == []
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = name
    assert TunixRun.model_validate(obj).metadata.name == name


def test_a_multi_host_run_name_starts_with_a_letter() -> None:
    assert name_errors("0run", hosts=2) == [MULTI_HOST_NAME_MESSAGE]
    assert name_errors("run0", hosts=2) == []


@pytest.mark.parametrize(("namespace", "ok"), [("team-a", True), ("Team", False), ("a" * 64, False)])
def test_namespace_rules(namespace: str, ok: bool) -> None:
    assert (namespace_errors(namespace) == []) is ok


@pytest.mark.parametrize(
    ("prefix", "ok"), [("run-", True), ("r" * 40, True), ("r" * 41, False), ("Run-", False)]
)
def test_generate_name_leaves_room_for_the_suffix(prefix: str, ok: bool) -> None:
    assert (generate_name_errors(prefix) == []) is ok
    obj = copy.deepcopy(BASE)
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = prefix
    if ok:
        assert TunixRun.model_validate(obj).metadata.generate_name == prefix
    else:
        with pytest.raises(pydantic.ValidationError, match=r"metadata\.generateName"):
            TunixRun.model_validate(obj)


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("a", True), ("a.b_c-D9", True), ("-a", False), ("a b", False)]
)
def test_pod_label_and_node_selector_values_are_label_values(value: str, ok: bool) -> None:
    for field in ("podLabels", "nodeSelector"):
        obj = copy.deepcopy(BASE)
        obj["spec"][field] = {"k": value}
        if ok:
            TunixRun.model_validate(obj)
        else:
            with pytest.raises(pydantic.ValidationError, match=rf"spec\.{field}\.k"):
                TunixRun.model_validate(obj)
