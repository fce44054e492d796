"""One rule for where a run's artifacts and checkpoints go (tunix-train and tunix-rt run --local)."""

from __future__ import annotations

from tunix_trainer.config import parse_run
from tunix_trainer.locations import absolute_uri, run_locations


def test_defaults_flags_and_spec(run_resource, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = parse_run(run_resource())
    assert run_locations(run) == (
        str(tmp_path / "artifacts/unit"),
        str(tmp_path / "artifacts/unit/checkpoints"),
    )
    assert run_locations(run, "s3://b/r/") == ("s3://b/r", "s3://b/r/checkpoints")
    assert run_locations(run, None, "/checkpoints") == (str(tmp_path / "artifacts/unit"), "/checkpoints")
    stored = parse_run(run_resource(storage={"uri": "out"}, checkpoint={"uri": "/mnt/ck"}))
    assert run_locations(stored) == (str(tmp_path / "out"), "/mnt/ck")
    assert run_locations(stored, "s3://b/x", "s3://b/ck") == ("s3://b/x", "s3://b/ck")


def test_absolute_uri() -> None:
    assert absolute_uri("s3://b/p/") == "s3://b/p"
    assert absolute_uri("a/../b", base_dir="/base") == "/base/b"
    assert absolute_uri("/x/y") == "/x/y"
