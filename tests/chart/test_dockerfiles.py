"""The Dockerfiles cannot be built here: check what they reference against the repository."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"operator": REPO / "operator/Dockerfile", "trainer": REPO / "trainer_image/Dockerfile"}
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()
    ]


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(("name", "script"), [("operator", "tunix-operator"), ("trainer", "tunix-train")])
def test_entrypoint_is_a_console_script(name: str, script: str) -> None:
    (entrypoint,) = [args for op, args in _final_stage(DOCKERFILES[name]) if op == "ENTRYPOINT"]
    command = json.loads(entrypoint)
    assert command == [script]
    assert command[0] in SCRIPTS
    module = SCRIPTS[command[0]].split(":")[0]
    package_dir = {"tunix_operator": "operator", "tunix_trainer": "trainer_image"}[module.split(".")[0]]
    assert (REPO / package_dir / (module.replace(".", "/") + ".py")).parent.is_dir()


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_non_root_user_10001(name: str) -> None:
    final = _final_stage(DOCKERFILES[name])
    assert ("USER", "10001:10001") in final
    assert any(op == "RUN" and "--uid 10001" in args for op, args in final)
    assert final[0][1].startswith("${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILES[name].read_text()


def test_operator_image_has_no_jax() -> None:
    text = DOCKERFILES["operator"].read_text()
    assert '".[operator]"' in text and "--constraint constraints.txt" in text
    assert "jax" not in text.replace("! pip show jax", "")


def test_trainer_image_variants_and_golden_dataset() -> None:
    text = DOCKERFILES["trainer"].read_text()
    assert "ARG VARIANT=cuda" in text
    assert 'cuda) jax="jax[cuda12]"' in text and 'cpu) jax="jax"' in text
    assert '".[trainer]"' in text and "--constraint constraints.txt" in text
    final = _final_stage(DOCKERFILES["trainer"])
    (workdir,) = [args for op, args in final if op == "WORKDIR"]
    (seed,) = [args for op, args in final if op == "RUN" and "seed_golden_dataset" in args]
    output = seed.split("--output", 1)[1].split()[0]
    # examples/run.yaml's relative dataset path resolves, from the WORKDIR, to the seeded file.
    dataset = yaml.safe_load((REPO / "examples/run.yaml").read_text())["spec"]["dataset"]["uri"]
    assert Path(workdir) / dataset == Path(output)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copied_files_exist_and_are_not_ignored(name: str) -> None:
    ignored = _dockerignore()
    for op, args in _instructions(DOCKERFILES[name]):
        if op != "COPY" or args.startswith("--from"):
            continue
        sources = args.split()[:-1]
        for source in sources:
            if source == ".":
                continue
            assert (REPO / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_build_context_keeps_what_pip_install_needs() -> None:
    ignored = _dockerignore()
    for needed in ("pyproject.toml", "constraints.txt", "api", "trainer_image", "operator", "tools"):
        assert not any(fnmatch.fnmatch(needed, pattern) for pattern in ignored), needed
    for excluded in (".venv", "artifacts", "data", "tests", ".git"):
        assert excluded in ignored
