"""The operator applies the CRD's name rules itself (objects stored before the CRD had them)."""

from __future__ import annotations

import pytest

from tunix_operator.state import parse_run

SPEC = {"mode": "Benchmark", "training": {"steps": 1}}


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("a.b", SPEC, "metadata.name: 'a.b' must be a DNS-1123 label"),
        ("r" * 46, SPEC, "metadata.name: 46 characters, at most 45"),
        (
            "0run",
            {**SPEC, "accelerator": {"hosts": 2}},
            "must start with a letter when accelerator.hosts > 1",
        ),
    ],
)
def test_names_the_operator_cannot_name_children_after_are_invalid(name, spec, expected) -> None:
    run, problem = parse_run({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})
    assert run is None and expected in problem


def test_a_good_name_parses() -> None:
    run, problem = parse_run({"metadata": {"name": "0run", "namespace": "ns"}, "spec": SPEC})
    assert problem is None and run.metadata.name == "0run"
