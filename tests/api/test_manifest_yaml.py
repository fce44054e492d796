"""The manifest YAML reader and writer: what one writes, the other reads back equal."""

from __future__ import annotations

import pytest

from tunix_api.manifest_yaml import MAX_DEPTH, StrictYAMLError, dump, load

TRICKY = ["1e3", "2E-5", "-1.5e+3", ".5e1", "yes", "off", "null", "~", "0x1f", "1_000", ".inf", "12:30", ""]


def test_strings_that_look_like_other_types_round_trip_as_strings() -> None:
    document = {"strings": TRICKY, "numbers": [1, 1.5, 1e-8, -3], "nested": {"b": True, "n": None}}
    assert load(dump(document)) == document


def test_dump_keeps_key_order() -> None:
    assert dump({"b": 1, "a": 2}).splitlines() == ["b: 1", "a: 2"]


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
