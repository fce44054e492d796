"""The manifest YAML reader and writer: what one writes, the other reads back equal."""

from __future__ import annotations

import json

import pytest

from tunix_api.manifest_yaml import MAX_DEPTH, StrictYAMLError, dump_json, load

TRICKY = ["1e3", "2E-5", "-1.5e+3", ".5e1", "yes", "off", "null", "~", "0x1f", "1_000", ".inf", "12:30", ""]


def test_strings_that_look_like_other_types_round_trip_as_strings() -> None:
    document = {"strings": TRICKY, "numbers": [1, 1.5, 1e-8, -3], "nested": {"b": True, "n": None}}
    assert load(dump_json(document)) == document


# Characters JSON writes as they are that a YAML 1.1 reader refuses, or folds as line breaks.
EXOTIC = ["emoji \U0001f680", "del \x7f", "nel \x85", "c1 \x9b", "ls \u2028 ps \u2029", "\ufeffbom",
          "\ufffe \uffff", "tab\tnew\nline\r", "quote \" back \\ slash", "é ß 中文", "\x00\x1b"]  # fmt: skip


def test_json_dump_reads_back_equal_as_yaml_and_as_json() -> None:
    document = {
        "strings": TRICKY + EXOTIC,
        "numbers": [1, 1.5, 1e-8, 3e-3, -3, 10**20],
        "nested": {"b": True, "n": None, "l": [], "m": {}, "é \u2028": "key"},
    }
    text = dump_json(document)
    assert load(text) == document
    assert json.loads(text) == document


def test_json_dump_keeps_key_order_and_refuses_nan() -> None:
    assert list(load(dump_json({"b": 1, "a": 2}))) == ["b", "a"]
    with pytest.raises(ValueError):
        dump_json({"x": float("nan")})


def test_exponent_floats_are_numbers_as_kubectl_reads_them() -> None:
    assert load("a: [1e-8, 1e3, 10, 1.0, '1e3']") == {"a": [1e-8, 1000.0, 10, 1.0, "1e3"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a' (first at line 1)"),
        ("x: &x [*x]\n", "recursive alias"),
        ("a: 1\nb: " + "9" * 5000 + "\n", "line 2: cannot read this value: Exceeds the limit (4300 digits)"),
        ("a:\n  b: !!timestamp 2024-99-99\n", "line 2: cannot read this value: month must be in 1..12"),
        ("a: !!int abc\n", "line 1: cannot read this value: invalid literal for int()"),
        ("a: !!float abc\n", "line 1: cannot read this value: could not convert string to float"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_documents_kubectl_would_mangle_are_refused(text: str, message: str) -> None:
    with pytest.raises(StrictYAMLError) as info:
        load(text)
    assert message in str(info.value)


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(StrictYAMLError, match="aliases expand the document past 1,000 bytes"):
        load("\n".join(lines), max_bytes=1000)
    assert load("\n".join(lines[:2]), max_bytes=1000)["a1"][0] == ["x"] * 10
