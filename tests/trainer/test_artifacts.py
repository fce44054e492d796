"""The trainer's artifacts: metric chunks, consolidation, exactly-once resumes, progress, summary."""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import pytest

from tunix_api.artifacts import METRICS_FILE, PROGRESS_FILE, SUMMARY_FILE, TERMINATION_MESSAGE_LIMIT
from tunix_api.run import Progress, Summary
from tunix_api.storage import fsspec_options
from tunix_api.training import StorageSpec
from tunix_trainer.artifact_io import read_json
from tunix_trainer.artifacts import RunArtifacts
from tunix_trainer.metric_store import chunk_name, decode_records, encode_records, parse_chunk_name
from tunix_trainer.summary import compact_summary, summarize


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "file", "memory", "s3"])
def run_uri(request: pytest.FixtureRequest, tmp_path) -> str:
    """An artifact directory on each kind of storage."""
    if request.param == "local":
        return str(tmp_path / "run")
    if request.param == "file":
        return f"file://{tmp_path}/run"
    if request.param == "memory":
        return f"memory://artifacts-{uuid.uuid4().hex}/run"
    return request.getfixturevalue("s3_bucket") + "/runs/demo"


def record(step: int, loss: float = 1.0, **extra) -> dict:
    return {"step": step, "loss": loss, "tokens": 64, "step_time_seconds": 0.5, **extra}


def list_names(uri: str, sub: str = "") -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri)
    target = path.rstrip("/") + ("/" + sub if sub else "")
    fs.invalidate_cache()
    try:
        return sorted(name.rsplit("/", 1)[-1] for name in fs.ls(target, detail=False))
    except FileNotFoundError:
        return []


def read_text(uri: str, name: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    return fs.cat_file(path.rstrip("/") + "/" + name).decode()


# ----------------------------------------------------------------------------- metrics


def test_flush_writes_immutable_chunks_and_close_consolidates(run_uri: str) -> None:
    artifacts = RunArtifacts(run_uri, flush_every_steps=4, consolidate_every_flushes=100)
    artifacts.start(0)
    for step in range(1, 11):
        artifacts.log_step(record(step, loss=10.0 / step))

    assert list_names(run_uri, "metrics") == [chunk_name(1, 4), chunk_name(5, 8)]
    assert [r["step"] for r in artifacts.read_metrics()] == list(range(1, 9))  # 9, 10 still buffered
    assert read_text(run_uri, METRICS_FILE) == ""  # consolidated only at start so far

    artifacts.close()
    assert list_names(run_uri, "metrics") == [chunk_name(1, 4), chunk_name(5, 8), chunk_name(9, 10)]
    lines = read_text(run_uri, METRICS_FILE).splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 11))
    assert json.loads(lines[1]) == record(2, loss=5.0)
    assert artifacts.read_metrics() == [json.loads(line) for line in lines]


def test_explicit_flush_and_periodic_consolidation(run_uri: str) -> None:
    artifacts = RunArtifacts(run_uri, flush_every_steps=1000, consolidate_every_flushes=2)
    artifacts.start(0)
    artifacts.log_step(record(1))
    artifacts.log_step(record(2))
    artifacts.flush()  # as at a checkpoint save
    artifacts.flush()  # nothing buffered: no empty chunk
    assert list_names(run_uri, "metrics") == [chunk_name(1, 2)]
    assert read_text(run_uri, METRICS_FILE) == ""
    artifacts.log_step(record(3))
    artifacts.flush()  # second flush consolidates
    assert [json.loads(line)["step"] for line in read_text(run_uri, METRICS_FILE).splitlines()] == [1, 2, 3]


def test_resume_keeps_each_step_exactly_once(run_uri: str) -> None:
    first = RunArtifacts(run_uri, flush_every_steps=4, consolidate_every_flushes=1)
    first.start(0)
    for step in range(1, 11):
        first.log_step(record(step, attempt=0))
    # The pod dies here: steps 9 and 10 were never flushed; the last checkpoint is step 6.
    assert [json.loads(x)["step"] for x in read_text(run_uri, METRICS_FILE).splitlines()] == list(range(1, 9))

    second = RunArtifacts(run_uri, flush_every_steps=4, consolidate_every_flushes=1)
    second.start(6)
    assert [r["step"] for r in second.read_metrics()] == list(range(1, 7))
    assert list_names(run_uri, "metrics") == [chunk_name(1, 4), chunk_name(5, 6)]
    assert [json.loads(x)["step"] for x in read_text(run_uri, METRICS_FILE).splitlines()] == list(range(1, 7))
    assert second.missing_steps is None

    for step in range(7, 13):
        second.log_step(record(step, attempt=1))
    second.close()

    records = second.read_metrics()
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [r["attempt"] for r in records] == [0] * 6 + [1] * 6
    consolidated = [json.loads(x) for x in read_text(run_uri, METRICS_FILE).splitlines()]
    assert consolidated == records


def test_resume_from_scratch_discards_everything(run_uri: str) -> None:
    first = RunArtifacts(run_uri, flush_every_steps=2)
    first.start(0)
    for step in range(1, 6):
        first.log_step(record(step))
    first.close()
    second = RunArtifacts(run_uri, flush_every_steps=2)
    second.start(0)
    assert second.read_metrics() == []
    assert list_names(run_uri, "metrics") == []


def test_lost_buffer_before_checkpoint_is_a_reported_gap(run_uri: str) -> None:
    first = RunArtifacts(run_uri, flush_every_steps=4)
    first.start(0)
    for step in range(1, 7):
        first.log_step(record(step))
    # Crash: 5 and 6 were buffered only, but the checkpoint of step 6 was saved.
    second = RunArtifacts(run_uri, flush_every_steps=4)
    second.start(6)
    assert second.missing_steps == (5, 6)
    for step in range(7, 9):
        second.log_step(record(step))
    second.close()
    records = second.read_metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4, 7, 8]
    summary = summarize(records, wall_time_seconds=10.0, provenance={})
    assert summary["total_steps"] == 8
    assert summary["total_tokens"] == 8 * 64  # the hole's steps still count


def test_sparse_logging_is_not_a_gap(tmp_path) -> None:
    uri = str(tmp_path / "run")
    first = RunArtifacts(uri, flush_every_steps=1, log_every_steps=5)
    first.start(0)
    for step in (5, 10):
        first.log_step(record(step))
    second = RunArtifacts(uri, log_every_steps=5)
    second.start(12)  # the last step <= 12 that is logged is 10: nothing is missing
    assert second.missing_steps is None
    third = RunArtifacts(uri, log_every_steps=5)
    third.start(15)
    assert third.missing_steps == (11, 15)


def test_overlapping_chunks_of_an_interrupted_resume_are_repaired(tmp_path) -> None:
    uri = str(tmp_path / "run")
    chunks = tmp_path / "run" / "metrics"
    chunks.mkdir(parents=True)
    # A resume to step 4 died after writing the truncated chunk and before deleting the old one.
    (chunks / chunk_name(1, 8)).write_bytes(encode_records(record(s) for s in range(1, 9)))
    (chunks / chunk_name(1, 4)).write_bytes(encode_records(record(s) for s in range(1, 5)))
    (chunks / "unrelated.txt").write_text("not a chunk")
    artifacts = RunArtifacts(uri)
    assert [r["step"] for r in artifacts.read_metrics()] == list(range(1, 9))
    artifacts.start(4)
    assert sorted(os.listdir(chunks)) == [chunk_name(1, 4), "unrelated.txt"]
    assert [r["step"] for r in artifacts.read_metrics()] == [1, 2, 3, 4]


def test_close_rewrites_only_when_something_changed(tmp_path) -> None:
    uri = str(tmp_path / "run")
    RunArtifacts(uri).close()  # never started: writes nothing
    assert not (tmp_path / "run").exists()
    artifacts = RunArtifacts(uri)
    artifacts.start(0)
    artifacts.log_step(record(1))
    artifacts.close()
    (tmp_path / "run" / METRICS_FILE).unlink()
    artifacts.close()  # the loop may close twice (preemption path): no second rewrite
    assert not (tmp_path / "run" / METRICS_FILE).exists()
    assert [r["step"] for r in artifacts.read_metrics()] == [1]  # still durable in its chunk


def test_log_step_guards(tmp_path) -> None:
    artifacts = RunArtifacts(str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="start"):
        artifacts.log_step(record(1))
    artifacts.start(3)
    with pytest.raises(ValueError, match="after step 3"):
        artifacts.log_step(record(3))
    with pytest.raises(ValueError, match="int 'step'"):
        artifacts.log_step({"loss": 1.0})
    artifacts.log_step(record(4))
    with pytest.raises(ValueError, match="after step 4"):
        artifacts.log_step(record(4))


def test_non_finite_values_become_null(tmp_path) -> None:
    artifacts = RunArtifacts(str(tmp_path / "run"), flush_every_steps=1)
    artifacts.start(0)
    artifacts.log_step(record(1, loss=float("nan"), grad_norm=float("inf")))
    assert artifacts.read_metrics() == [record(1, loss=None, grad_norm=None)]
    line = (tmp_path / "run" / "metrics" / chunk_name(1, 1)).read_text()
    assert "NaN" not in line and "Infinity" not in line


def test_local_writes_leave_no_temporary_files(tmp_path) -> None:
    artifacts = RunArtifacts(str(tmp_path / "run"), flush_every_steps=2, progress_interval_seconds=0)
    artifacts.start(0)
    for step in range(1, 6):
        artifacts.log_step(record(step))
        artifacts.progress(step=step, total_steps=5, loss=1.0, tokens_per_second=1.0, eta_seconds=0.0)
    artifacts.write_summary({"final_loss": 1.0})
    artifacts.close()
    leftovers = [name for _, _, names in os.walk(tmp_path) for name in names if name.startswith(".tmp-")]
    assert leftovers == []


def test_decode_ignores_a_torn_last_line() -> None:
    data = encode_records([record(1), record(2)]) + b'{"step": 3, "lo'
    assert [r["step"] for r in decode_records(data)] == [1, 2]
    assert decode_records(b"") == []


def test_chunk_names_round_trip() -> None:
    assert chunk_name(7, 123) == "chunk-000000007-000000123.jsonl"
    assert parse_chunk_name("bucket/run/metrics/" + chunk_name(7, 123)) == (7, 123)
    assert parse_chunk_name("metrics.jsonl") is None
    assert parse_chunk_name(".tmp-abc.part") is None


# ----------------------------------------------------------------------------- progress


def test_progress_is_rate_limited_unless_forced(run_uri: str) -> None:
    clock = FakeClock()
    artifacts = RunArtifacts(run_uri, progress_interval_seconds=5.0, clock=clock)
    progress_uri = f"{run_uri}/{PROGRESS_FILE}"
    assert read_json(progress_uri) is None

    def send(step: int, *, force: bool = False) -> None:
        artifacts.progress(
            step=step, total_steps=100, loss=2.5, tokens_per_second=1234.5, eta_seconds=60.0, force=force
        )

    send(1)
    doc = read_json(progress_uri)
    assert set(doc) == {"step", "totalSteps", "loss", "tokensPerSecond", "etaSeconds", "updatedAt"}
    assert Progress.model_validate(doc).step == 1
    assert doc["updatedAt"].endswith("Z")

    clock.now += 4.9
    send(2)
    assert read_json(progress_uri)["step"] == 1
    send(3, force=True)
    assert read_json(progress_uri)["step"] == 3
    clock.now += 4.9
    send(4)
    assert read_json(progress_uri)["step"] == 3
    clock.now += 0.2
    send(5)
    assert read_json(progress_uri)["step"] == 5


def test_progress_omits_unknown_eta(tmp_path) -> None:
    artifacts = RunArtifacts(str(tmp_path))
    artifacts.progress(step=0, total_steps=10, loss=float("nan"), tokens_per_second=0.0, eta_seconds=None)
    doc = read_json(str(tmp_path / PROGRESS_FILE))
    assert "etaSeconds" not in doc and "loss" not in doc
    assert doc["step"] == 0 and doc["totalSteps"] == 10


# ----------------------------------------------------------------------------- summary


def test_summarize_hand_made_records() -> None:
    records = [
        {"step": 2, "loss": 3.0, "tokens": 100, "step_time_seconds": 1.0},
        {"step": 4, "loss": 1.5, "tokens": 100, "step_time_seconds": 0.5},
        {"step": 6, "loss": float("nan"), "tokens": 100, "step_time_seconds": 0.5},
        {"step": 8, "loss": 2.0, "tokens": 100, "step_time_seconds": 0.0},
    ]
    provenance = {"configHash": "sha256:x"}
    summary = summarize(list(reversed(records)), wall_time_seconds=12.5, provenance=provenance)
    assert summary == {
        "final_loss": 2.0,
        "best_loss": 1.5,
        "best_step": 4,
        "total_steps": 8,
        "total_tokens": 800,  # logged every 2 steps: each record stands for 2 steps
        "avg_tokens_per_second": 300 / 2.0,
        "wall_time_seconds": 12.5,
        "provenance": {"configHash": "sha256:x"},
    }


def test_summarize_leaves_compile_steps_out_of_the_average_throughput() -> None:
    records = [
        {"step": 1, "loss": 5.0, "tokens": 100, "step_time_seconds": 9.0, "includes_compile": True},
        {"step": 2, "loss": 4.0, "tokens": 100, "step_time_seconds": 0.5, "includes_compile": False},
        {"step": 3, "loss": 3.0, "tokens": 100, "step_time_seconds": 0.5},
    ]
    summary = summarize(records, wall_time_seconds=10.0, provenance={})
    assert summary["avg_tokens_per_second"] == 200 / 1.0
    assert summary["total_tokens"] == 300  # compile steps still count towards the totals


def test_summarize_without_step_times_uses_wall_time() -> None:
    summary = summarize([{"step": 1, "loss": 4.0, "tokens": 50}], wall_time_seconds=5.0, provenance={})
    assert summary["avg_tokens_per_second"] == 10.0
    assert summary["final_loss"] == summary["best_loss"] == 4.0


def test_summarize_empty_and_diverged() -> None:
    empty = summarize([], wall_time_seconds=0.0, provenance={})
    assert empty["total_steps"] == 0 and empty["final_loss"] is None
    assert empty["avg_tokens_per_second"] is None
    diverged = summarize([{"step": 1, "loss": float("inf")}], wall_time_seconds=1.0, provenance={})
    assert diverged["final_loss"] is None and diverged["best_step"] is None
    json.dumps(diverged, allow_nan=False)


def _summary(provenance: dict) -> dict:
    return summarize([record(1, loss=2.0), record(2, loss=1.0)], wall_time_seconds=3.0, provenance=provenance)


def test_write_summary_and_small_termination_message(run_uri: str, tmp_path) -> None:
    huge = {f"key{i:03d}": "x" * 10_000 for i in range(50)} | {"devices": ["cpu:0"] * 500, "jax": "0.10.2"}
    termination_log = tmp_path / "termination-log"
    artifacts = RunArtifacts(run_uri, termination_log=str(termination_log))
    summary = _summary(huge)
    artifacts.write_summary(summary)

    assert read_json(f"{run_uri}/{SUMMARY_FILE}") == json.loads(json.dumps(summary))
    message = termination_log.read_bytes()
    assert len(message) < TERMINATION_MESSAGE_LIMIT
    doc = json.loads(message)
    assert Summary.model_validate(doc) == Summary(
        final_loss=1.0,
        best_loss=1.0,
        best_step=2,
        total_steps=2,
        total_tokens=128,
        avg_tokens_per_second=128.0,
        wall_time_seconds=3.0,
    )
    assert doc["finalLoss"] == 1.0 and doc["totalTokens"] == 128
    assert all(isinstance(v, str) for v in doc.get("provenance", {}).values())


def test_compact_summary_keeps_small_provenance_whole() -> None:
    doc = json.loads(compact_summary(_summary({"configHash": "sha256:abc", "steps": 2})))
    assert doc["provenance"] == {"configHash": "sha256:abc", "steps": "2"}
    assert doc["bestStep"] == 2


@pytest.mark.parametrize("limit", [300, 512, 1024, 4096])
@pytest.mark.parametrize(
    "provenance",
    [
        {"a": "y" * 100_000},
        {f"k{i}": "v" * 200 for i in range(400)},
        {"k" * 5000: "v", "other": "w"},
        {f"n{i}": i for i in range(2000)},
    ],
    ids=["one-huge-value", "many-values", "huge-key", "many-keys"],
)
def test_compact_summary_always_fits(provenance: dict, limit: int) -> None:
    text = compact_summary(_summary(provenance), limit=limit)
    assert len(text.encode()) < limit
    assert json.loads(text)["finalLoss"] == 1.0


def test_compact_summary_refuses_an_impossible_limit() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        compact_summary(_summary({}), limit=20)


def test_unwritable_termination_log_does_not_fail_the_run(tmp_path) -> None:
    artifacts = RunArtifacts(str(tmp_path / "run"), termination_log=str(tmp_path / "missing" / "dir" / "log"))
    artifacts.write_summary(_summary({}))
    assert read_json(str(tmp_path / "run" / SUMMARY_FILE))["total_steps"] == 2


# ----------------------------------------------------------------------------- storage


def test_explicit_endpoint_reaches_s3(s3_bucket: str, moto_server: str, monkeypatch) -> None:
    import s3fs

    bucket, endpoint = s3_bucket, moto_server
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    s3fs.S3FileSystem.clear_instance_cache()
    options = fsspec_options(bucket, StorageSpec(endpoint_url=endpoint, region="us-east-1"))
    artifacts = RunArtifacts(f"{bucket}/run", storage_options=options, flush_every_steps=1)
    artifacts.start(0)
    artifacts.log_step(record(1))
    artifacts.write_summary(_summary({}))
    artifacts.close()
    reader = RunArtifacts(f"{bucket}/run", storage_options=options)
    assert [r["step"] for r in reader.read_metrics()] == [1]
    assert read_json(f"{bucket}/run/{SUMMARY_FILE}", options)["total_steps"] == 2
    s3fs.S3FileSystem.clear_instance_cache()


def test_read_json_rejects_non_objects(tmp_path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_json(str(tmp_path / "list.json"))
    assert read_json(str(tmp_path / "absent.json")) is None
    (tmp_path / "doc.json").write_text('{"a": 1.5}')
    assert read_json(f"file://{tmp_path}/doc.json") == {"a": 1.5}
