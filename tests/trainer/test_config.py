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


# --------------------------------------------------------------------------- read as the API server would

_RUN = """\
apiVersion: tunix.dev/v1alpha1
kind: TunixRun
metadata:
  name: {name}
spec:
  mode: Benchmark
  training:
    steps: 3
{extra}"""


def _doc(name: str = "unit", extra: str = "") -> str:
    return _RUN.format(name=name, extra=extra)


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


# (id, config text, text expected in the one-line error). Checked against kubectl and
# kube-apiserver v1.37.2 (apply --dry-run=server): they refuse the non-finite numbers (kubectl:
# "json: unsupported value: +Inf"), the lone surrogate, the types, the names and the sizes too.
# Stricter here on purpose: kubectl silently keeps the last of duplicate keys, and accepts nesting
# deeper than 100 levels.
TEXT_REJECTIONS = [
    ("duplicate-key", _doc(extra="    steps: 4\n"), "line 9: duplicate key 'steps' (first at line 8)"),
    ("duplicate-key-json", '{"training": {"steps": 1, "steps": 2}}', "line 1: duplicate key 'steps'"),
    ("duplicate-top-level", _doc() + "spec: {}\n", "line 9: duplicate key 'spec' (first at line 5)"),
    ("alias-bomb", _bomb(), "aliases expand the document past 1,572,864 bytes"),
    ("recursive-alias", "spec: &s {training: {steps: 1}, x: *s}\n", "recursive alias"),
    (
        "too-deep",
        _doc(extra=f"  affinity: {{a: {'[' * 5000}{']' * 5000}}}\n"),
        "line 9: nested deeper than 100",
    ),
    (
        "inf-weight-decay",
        _doc(extra="    weightDecay: .inf\n"),
        "spec.training.weightDecay: inf is not a finite",
    ),
    ("nan-eps", _doc(extra="    eps: .nan\n"), "spec.training.eps: nan is not a finite number"),
    ("-inf-grad-clip", _doc(extra="    gradClipNorm: -.inf\n"), "spec.training.gradClipNorm: -inf is not"),
    (
        "inf-rope",
        _doc(extra="  model: {preset: tiny, ropeTheta: .inf}\n"),
        "spec.model.ropeTheta: inf is not",
    ),
    ("inf-free-form", _doc(extra="  affinity: {x: [1, .inf]}\n"), "spec.affinity.x[1]: inf is not a finite"),
    ("overflow-to-inf", _doc(extra="    eps: 1e400\n"), "spec.training.eps: inf is not a finite number"),
    (
        "lone-surrogate",
        _doc(extra='  image: "a\\udc00"\n'),
        "spec.image: lone surrogate (\\udc00) at character 2",
    ),
    # JSON types, as the API server checks them (pydantic's lax mode would convert these)
    (
        "string-for-integer",
        _doc(extra='    batchSize: "4"\n'),
        "spec.training.batchSize: Input should be a valid integer",
    ),
    (
        "bool-for-integer",
        _doc(extra="    batchSize: true\n"),
        "spec.training.batchSize: Input should be a valid integer",
    ),
    (
        "fraction-for-integer",
        _doc(extra="    batchSize: 4.5\n"),
        "spec.training.batchSize: Input should be a valid integer",
    ),
    (
        "string-for-number",
        _doc(extra='    learningRate: "0.1"\n'),
        "spec.training.learningRate: Input should be a valid number",
    ),
    (
        "string-for-boolean",
        _doc(extra='  suspend: "true"\n'),
        "spec.suspend: Input should be a valid boolean",
    ),
    ("integer-for-boolean", _doc(extra="  suspend: 1\n"), "spec.suspend: Input should be a valid boolean"),
    ("name-uppercase", _doc(name="Unit"), "metadata.name: 'Unit' must be a DNS-1123 label"),
    ("name-absolute", _doc(name="/tmp/unit"), "metadata.name: '/tmp/unit' must be a DNS-1123 label"),
    ("name-parent", _doc(name="../unit"), "metadata.name: '../unit' must be a DNS-1123 label"),
    ("name-dot", _doc(name="un.it"), "must be a DNS-1123 label"),
    ("name-too-long", _doc(name="u" * 46), "metadata.name: 46 characters, at most 45"),
    (
        "namespace",
        _doc().replace("  name: unit\n", "  name: unit\n  namespace: Team_A\n"),
        "metadata.namespace",
    ),
    (
        "object-too-big",
        _doc(extra=f"  podAnnotations: {{a: {'x' * (1536 * 1024)}}}\n"),
        "the document is larger than 1,572,864 bytes, the API server's object size limit",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in TEXT_REJECTIONS], ids=[i for i, _, _ in TEXT_REJECTIONS]
)
def test_what_the_api_server_refuses_is_refused_with_a_clear_message(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_run(path)
    assert expected in str(info.value)
    if "finite" in expected:  # never a bound message ("greater than 0") for NaN or infinity
        assert "Input should be" not in str(info.value)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG


def test_yaml_merge_keys_may_override_without_being_duplicates():
    text = _doc(extra="    <<: &opt {batchSize: 4, seqLen: 64}\n    batchSize: 2\n")
    run = load_run(text)
    assert (run.spec.training.batch_size, run.spec.training.seq_len) == (2, 64)


def test_numbers_are_read_as_kubectl_reads_them():
    """``1e-8`` is a float to kubectl (a string to YAML 1.1), ``10.0`` an integer once sent as JSON."""
    run = load_run(_doc(extra="    eps: 1e-8\n    batchSize: 4.0\n    learningRate: 1\n    seqLen: 1e2\n"))
    training = run.spec.training
    assert (training.eps, training.batch_size, training.learning_rate, training.seq_len) == (
        1e-8,
        4,
        1.0,
        100,
    )


def test_nesting_up_to_the_limit_is_fine():
    run = load_run(_doc(extra=f"  affinity: {{a: {'[' * 95}{']' * 95}}}\n"))
    assert isinstance(run.spec.affinity["a"], list)


def test_a_small_document_with_aliases_is_fine():
    run = load_run(_doc(extra="  podLabels: &l {team: a}\n  podAnnotations: *l\n"))
    assert run.spec.pod_annotations == {"team": "a"}


def test_a_file_larger_than_a_request_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(3 * 1024 * 1024 + 1)
    monkeypatch.setattr("pathlib.Path.open", lambda *_, **__: pytest.fail("read a huge file"))
    with pytest.raises(ConfigError, match=r"huge\.yaml: 3,145,729 bytes; the API server accepts at most"):
        load_run(path)


def test_a_config_without_a_size_is_read_no_further_than_the_limit():
    with pytest.raises(ConfigError, match=r"^/dev/zero: more than 3,145,728 bytes, the API server's limit$"):
        load_run("/dev/zero")


def test_a_config_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(_doc().encode() + "  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_run(path)
    assert str(info.value) == f"{path}: not UTF-8 text: byte 0xe9 at line 9 (offset {len(_doc()) + 7})"


def test_train_main_exits_2_on_a_non_utf8_config_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\xff\xfe" + _doc().encode("utf-16-le"))
    code = main(["--config", str(path), "--artifacts-uri", str(tmp_path / "a")])
    assert code == ExitCode.INVALID_CONFIG
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"tunix-train: invalid config: {path}: not UTF-8 text: byte 0xff at line 1 (offset 0)"
    ]


def test_an_object_larger_than_etcd_accepts_is_refused(run_resource):
    doc = run_resource(podAnnotations={f"k{i}": "v" * 1000 for i in range(1600)})
    with pytest.raises(
        ConfigError, match=r"^config: 1,6\d\d,\d{3} bytes; the API server accepts at most 1,572,864"
    ):
        parse_run(doc)
    doc["spec"]["podAnnotations"] = {f"k{i}": "v" * 1000 for i in range(1500)}
    assert parse_run(doc).spec.pod_annotations["k0"] == "v" * 1000


def test_the_run_yaml_the_operator_writes_reads_back_as_the_same_run(run_resource):
    """Strings that kubectl's reader would take for numbers (1e3), and characters a YAML 1.1 reader
    refuses or reads as line breaks, survive the operator's dump."""
    from tunix_api.run import TunixRun
    from tunix_operator.manifests import CONFIG_ANNOTATION, RunRef, build_job
    from tunix_operator.settings import OperatorSettings

    notes = {"emoji": "\U0001f680", "controls": "del \x7f nel \x85 c1 \x9b", "breaks": "a\u2028b\u2029c"}
    doc = run_resource(
        nodeSelector={"pool": "1e3", "zone": "2E-5", "n": "10"}, image="1e5", podAnnotations=notes
    )
    doc["metadata"]["namespace"] = "team-a"
    run = TunixRun.model_validate(doc)
    settings = OperatorSettings(artifacts_base_uri="/tmp/artifacts")
    job = build_job(run, RunRef(name="unit", namespace="team-a", uid="u"), settings, attempt=0)
    loaded = load_run(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    assert loaded.spec == run.spec
    assert loaded.spec.node_selector == {"pool": "1e3", "zone": "2E-5", "n": "10"}
    assert loaded.spec.pod_annotations == notes
