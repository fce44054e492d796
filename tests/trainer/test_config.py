"""Config loading: whole resources and bare specs, field-named errors, the config hash, exit codes."""

from __future__ import annotations

import json

import pytest
import yaml

from tunix_api.exit_codes import ExitCode
from tunix_trainer.config import format_loc, load_run, parse_run
from tunix_trainer.errors import ConfigError
from tunix_trainer.train import main


def test_whole_resource_from_file(write_config, tmp_path):
    path = write_config()
    run = load_run(path)
    assert run.name == "unit"
    assert run.namespace is None
    assert run.spec.training.steps == 8
    assert run.spec.training.batch_size == 4
    assert run.config_hash.startswith("sha256:") and len(run.config_hash) == len("sha256:") + 64


def test_bare_spec_as_yaml_and_json_text(run_resource):
    spec = run_resource()["spec"]
    from_yaml = load_run(yaml.safe_dump(spec))
    from_json = load_run(json.dumps(spec))
    assert from_yaml.name == from_json.name == "run"
    assert from_yaml.spec == from_json.spec
    # The same spec inside a resource hashes the same: the hash covers the spec only.
    assert from_yaml.config_hash == parse_run(run_resource()).config_hash


def test_namespace_and_base_dir_are_kept(run_resource):
    doc = run_resource()
    doc["metadata"]["namespace"] = "team-a"
    run = parse_run(doc, base_dir="/data")
    assert (run.namespace, run.base_dir) == ("team-a", "/data")


def test_config_hash_ignores_formatting_but_not_content(run_resource):
    doc = run_resource()
    reordered = {
        "spec": dict(reversed(list(doc["spec"].items()))),
        **{k: v for k, v in doc.items() if k != "spec"},
    }
    assert parse_run(doc).config_hash == parse_run(reordered).config_hash
    # Spelling out a default does not change the spec, so it does not change the hash.
    explicit = run_resource(training={"gradAccumSteps": 1})
    assert parse_run(explicit).config_hash == parse_run(doc).config_hash
    assert parse_run(run_resource(training={"steps": 9})).config_hash != parse_run(doc).config_hash


def test_every_invalid_field_is_named_in_camel_case(run_resource):
    doc = run_resource(training={"steps": 0, "batchSize": "many", "bogusField": 1})
    with pytest.raises(ConfigError) as info:
        parse_run(doc)
    lines = str(info.value).splitlines()
    assert any(
        line.startswith("spec.training.steps: Input should be greater than or equal to 1") for line in lines
    )
    assert any(line.startswith("spec.training.batchSize: Input should be a valid integer") for line in lines)
    assert any(line.startswith("spec.training.bogusField: Extra inputs are not permitted") for line in lines)
    assert len(lines) == 3
    assert info.value.exit_code == ExitCode.INVALID_CONFIG


def test_cross_field_rule_names_its_object(run_resource):
    with pytest.raises(ConfigError, match=r"^spec\.training: batchSize must be divisible by gradAccumSteps$"):
        parse_run(run_resource(training={"gradAccumSteps": 3}))


def test_bare_spec_errors_are_prefixed_with_spec(run_resource):
    spec = run_resource(tolerations=[{"key": 5}])["spec"]
    with pytest.raises(ConfigError, match=r"spec\.tolerations\[0\]\.key: Input should be a valid string"):
        parse_run(spec)


def test_api_version_and_kind_are_checked(run_resource):
    doc = run_resource()
    doc["apiVersion"] = "tunix.dev/v9"
    doc["kind"] = "Job"
    with pytest.raises(ConfigError) as info:
        parse_run(doc)
    message = str(info.value)
    assert "apiVersion: expected 'tunix.dev/v1alpha1', got 'tunix.dev/v9'" in message
    assert "kind: expected 'TunixRun', got 'Job'" in message


def test_resource_without_spec():
    with pytest.raises(ConfigError, match="spec: Field required"):
        parse_run({"apiVersion": "tunix.dev/v1alpha1", "kind": "TunixRun", "metadata": {"name": "x"}})


@pytest.mark.parametrize("text", ["training: [unclosed", "- just\n- a list\n"])
def test_unparseable_or_non_mapping_documents(text):
    with pytest.raises(ConfigError):
        load_run(text + "\n")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_run(str(tmp_path / "absent.yaml"))


def test_format_loc():
    assert format_loc(("spec", "env", 2, "valueFrom")) == "spec.env[2].valueFrom"
    assert format_loc(()) == ""


def test_main_reports_invalid_config_with_exit_code(write_config, tmp_path, capsys):
    path = write_config(training={"steps": 0})
    log = tmp_path / "termination-log"
    code = main(
        ["--config", str(path), "--artifacts-uri", str(tmp_path / "a"), "--termination-log", str(log)]
    )
    assert code == ExitCode.INVALID_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tunix-train: invalid config: spec.training.steps: Input should be greater than or equal to 1"
    ]
    assert log.read_text() == "InvalidConfig: spec.training.steps: Input should be greater than or equal to 1"
    assert not (tmp_path / "a").exists()  # nothing was started


def test_main_joins_several_errors_on_one_line(write_config, tmp_path, capsys):
    path = write_config(training={"steps": 0, "seqLen": 1})
    assert main(["--config", str(path), "--artifacts-uri", str(tmp_path / "a")]) == ExitCode.INVALID_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "spec.training.steps: " in line and "; spec.training.seqLen: " in line
