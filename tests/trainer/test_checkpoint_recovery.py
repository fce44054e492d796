"""Damaged checkpoints: each is set aside and the newest intact step is used; none usable -> exit 6."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.trainer.conftest import read_jsonl
from tunix_api.exit_codes import ExitClass, ExitCode, classify_exit_code
from tunix_trainer.checkpoint import Checkpointer, NoUsableCheckpointError
from tunix_trainer.errors import ConfigError
from tunix_trainer.train import main


def _state(value: float) -> dict:
    # Large enough that Orbax writes a sizeable data file; values vary so a flipped byte shows.
    return {
        "w": jnp.arange(64 * 64, dtype=jnp.float32).reshape(64, 64) / 7 + value,
        "n": jnp.asarray(value, jnp.float32),
    }


def _target() -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0.0))


def _save_steps(uri: str, steps=(2, 4, 6)) -> None:
    ckpt = Checkpointer(uri, save_interval_steps=2, max_to_keep=5)
    for step in steps:
        ckpt.save(step, _state(step), {"step": step, "data": {"epoch": 0, "cursor": step}})
    ckpt.close()


def _data_files(step_dir: Path) -> list[Path]:
    """The array data files of a step, largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _truncate(step_dir: Path) -> None:
    for path in _data_files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _missing_file(step_dir: Path) -> None:
    _data_files(step_dir)[0].unlink()


def _missing_manifest(step_dir: Path) -> None:
    (step_dir / "state" / "manifest.ocdbt").unlink()


def _missing_step_metadata(step_dir: Path) -> None:
    (step_dir / "_CHECKPOINT_METADATA").unlink()


def _missing_meta_item(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").unlink()


def _unreadable_meta_item(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_text('{"step": 6, "da')


def _empty_step_dir(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _bad_data_cursor(step_dir: Path) -> None:
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["data"]["cursor"] = -5
    meta_file.write_text(json.dumps(meta))


def _flipped_bytes(step_dir: Path) -> None:
    """Silent corruption: Orbax decodes these files into wrong values without an error."""
    path = _data_files(step_dir)[0]
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


def _accept(meta: dict) -> None:
    if meta["data"]["cursor"] < 0:
        raise ValueError(f"invalid data state {meta['data']!r}")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated array file": _truncate,
    "missing array file": _missing_file,
    "missing manifest": _missing_manifest,
    "missing step metadata": _missing_step_metadata,
    "missing meta item": _missing_meta_item,
    "unreadable meta item": _unreadable_meta_item,
    "empty step directory": _empty_step_dir,
    "bad data cursor": _bad_data_cursor,
    "flipped bytes": _flipped_bytes,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_newest_step_is_set_aside_and_the_next_one_used(tmp_path, capsys, damage):
    root = tmp_path / "ckpt"
    _save_steps(str(root))
    DAMAGE[damage](root / "6")

    ckpt = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    restored = ckpt.restore("latest", _target(), accept=_accept)
    assert restored.step == 4
    np.testing.assert_array_equal(restored.state["w"], np.asarray(_state(4)["w"]))
    assert restored.meta == {"step": 4, "data": {"epoch": 0, "cursor": 4}}
    assert restored.set_aside == [str(root / "6.corrupt-1")]
    assert ckpt.all_steps() == [2, 4]
    assert (root / "6.corrupt-1").is_dir() and not (root / "6").exists()  # renamed, not deleted
    err = capsys.readouterr().err
    assert f"checkpoint 6 in {root} is unusable: " in err
    assert "resuming from checkpoint 4, the newest intact one" in err
    # Training goes on: the next save of step 6 is a normal checkpoint.
    ckpt.save(6, _state(60), {"step": 6, "data": {"epoch": 0, "cursor": 6}})
    ckpt.close()
    again = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    assert again.restore("latest", _target(), accept=_accept).step == 6
    again.close()


def test_restore_reason_names_the_problem(tmp_path, capsys):
    root = tmp_path / "ckpt"
    _save_steps(str(root))
    _flipped_bytes(root / "6")
    _empty_step_dir(root / "4")
    ckpt = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    assert ckpt.restore("latest", _target()).step == 2
    ckpt.close()
    err = capsys.readouterr().err
    assert "checkpoint 6" in err and "['w'] is corrupt (crc32 " in err
    assert "checkpoint 4" in err and "incomplete: commit_success.txt is missing" in err


def test_non_finite_state_is_damaged(tmp_path):
    root = tmp_path / "ckpt"
    ckpt = Checkpointer(str(root), save_interval_steps=1, max_to_keep=5)
    ckpt.save(1, _state(1), {"step": 1})
    bad = _state(2)
    bad["w"] = bad["w"].at[3, 3].set(jnp.inf)
    ckpt.save(2, bad, {"step": 2})
    ckpt.close()
    ckpt = Checkpointer(str(root), save_interval_steps=1, max_to_keep=5)
    assert ckpt.restore("latest", _target()).step == 1
    ckpt.close()


def test_when_every_step_is_damaged_restore_fails_with_its_own_exit_code(tmp_path):
    root = tmp_path / "ckpt"
    _save_steps(str(root), steps=(2, 4))
    _truncate(root / "4")
    _missing_manifest(root / "2")
    ckpt = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    with pytest.raises(NoUsableCheckpointError) as info:
        ckpt.restore("latest", _target())
    assert str(info.value) == (
        f"{root}: every checkpoint step is damaged and was set aside (4.corrupt-1, 2.corrupt-1); "
        "set spec.checkpoint.resume to none to start over"
    )
    assert info.value.exit_code == ExitCode.NO_USABLE_CHECKPOINT == 6
    assert classify_exit_code(info.value.exit_code) is ExitClass.FATAL
    # The next attempt does not silently start over either.
    with pytest.raises(NoUsableCheckpointError, match=r"2\.corrupt-1, 4\.corrupt-1"):
        ckpt.restore("latest", _target())
    # Asking to start over does.
    assert ckpt.restore("none", _target()) is None
    ckpt.close()


def test_a_damaged_requested_step_is_not_replaced_by_another(tmp_path):
    root = tmp_path / "ckpt"
    _save_steps(str(root))
    _truncate(root / "4")
    ckpt = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    with pytest.raises(NoUsableCheckpointError, match=r"\(4.corrupt-1\)"):
        ckpt.restore("4", _target())
    assert ckpt.all_steps() == [2, 6]
    ckpt.close()


def test_s3_mirror_sets_damaged_steps_aside_remotely(s3_bucket, capsys):
    uri = f"{s3_bucket}/ckpt"
    _save_steps(uri, steps=(2, 4))
    fs, root = fsspec.core.url_to_fs(uri)
    data = sorted(p for p in fs.find(f"{root}/4/state") if "/d/" in p)
    fs.pipe_file(data[0], fs.cat_file(data[0])[:10])  # truncated
    ckpt = Checkpointer(uri, save_interval_steps=2, max_to_keep=5)
    restored = ckpt.restore("latest", _target())
    assert restored.step == 2 and restored.set_aside == [f"{uri}/4.corrupt-1"]
    assert ckpt.all_steps() == [2]
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/4") and fs.exists(f"{root}/4.corrupt-1/_CHECKPOINT_METADATA")
    ckpt.close()
    assert "checkpoint 4 in s3://" in capsys.readouterr().err


# -- through the trainer's entry point -----------------------------------------------------------
def _train(config: Path, art: Path, *extra: str) -> int:
    return main(["--config", str(config), "--artifacts-uri", str(art), *extra])


def test_training_resumes_from_the_newest_intact_checkpoint(write_config, tmp_path, capsys):
    config = write_config(checkpoint={"saveIntervalSteps": 2, "maxToKeep": 5})
    art = tmp_path / "art"
    assert _train(config, art) == 0
    expected = read_jsonl(art / "metrics.jsonl")
    _flipped_bytes(art / "checkpoints" / "8")
    _truncate(art / "checkpoints" / "6")
    capsys.readouterr()

    assert _train(config, art) == 0
    err = capsys.readouterr().err
    assert "checkpoint 8" in err and "checkpoint 6" in err and "resuming from checkpoint 4" in err
    records = read_jsonl(art / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))  # every step once
    assert [r["loss"] for r in records] == [r["loss"] for r in expected]  # 5..8 redone, exactly
    assert records[4]["timestamp"] != expected[4]["timestamp"]
    assert json.loads((art / "progress.json").read_text())["restoredFrom"] == 4
    assert sorted(p.name for p in (art / "checkpoints").iterdir()) == [
        "2",
        "4",
        "6",
        "6.corrupt-1",
        "8",
        "8.corrupt-1",
    ]


def test_training_with_no_usable_checkpoint_exits_6_naming_the_directory(write_config, tmp_path, capsys):
    config = write_config(training={"steps": 4}, checkpoint={"saveIntervalSteps": 2, "maxToKeep": 5})
    art, log = tmp_path / "art", tmp_path / "termination-log"
    assert _train(config, art) == 0
    for step in (2, 4):
        _empty_step_dir(art / "checkpoints" / str(step))
    capsys.readouterr()
    assert _train(config, art, "--termination-log", str(log)) == ExitCode.NO_USABLE_CHECKPOINT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"tunix-train: no usable checkpoint: {art / 'checkpoints'}: every checkpoint step")
    assert log.read_text().startswith("NoUsableCheckpoint: ")
    assert "Traceback" not in last


def test_a_checkpoint_of_another_model_shape_is_a_config_error_not_damage(tmp_path):
    root = tmp_path / "ckpt"
    _save_steps(str(root), steps=(2,))
    other = {"w": jax.ShapeDtypeStruct((32, 64), jnp.float32), "n": jax.ShapeDtypeStruct((), jnp.float32)}
    ckpt = Checkpointer(str(root), save_interval_steps=2, max_to_keep=5)
    with pytest.raises(ConfigError) as info:
        ckpt.restore("latest", other)
    assert str(info.value) == (
        f"spec.model: checkpoint 2 in {root} was saved by another model (array ['w'] has shape (64, 64) "
        "in the checkpoint, (32, 64) in the model); set spec.checkpoint.resume to none to start over"
    )
    assert ckpt.all_steps() == [2]  # nothing set aside
    ckpt.close()
