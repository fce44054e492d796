"""docs/EXIT_CODES.md and tunix_api.exit_codes say the same thing."""

import pathlib
import re

from tunix_api.exit_codes import ExitClass, ExitCode, classify_exit_code

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "EXIT_CODES.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([A-Z_()]+)\s*\|\s*(\w+)\s*\|")


def documented_rows() -> dict[int, tuple[str, str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if m := ROW.match(line):
            rows[int(m.group(1))] = (m.group(2), m.group(3))
    return rows


def test_every_exit_code_is_documented_with_its_class():
    rows = documented_rows()
    for code in ExitCode:
        assert code.value in rows, f"{code.name} missing from {DOC.name}"
        name, klass = rows[code.value]
        assert name == code.name
        assert klass == classify_exit_code(code).value


def test_documented_classes_match_the_classifier():
    for code, (_, klass) in documented_rows().items():
        assert ExitClass(klass) == classify_exit_code(code), code


def test_unknown_codes_are_retryable():
    assert classify_exit_code(42) is ExitClass.RETRYABLE
