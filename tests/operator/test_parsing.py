"""Pure helpers: pod views, conditions, trainer output parsing, settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from tests.operator.factories import T0, at, pod
from tunix_api.exit_codes import ExitClass
from tunix_api.run import provenance_strings
from tunix_operator.conditions import format_time, parse_time, set_condition
from tunix_operator.observe import Outcome, assess, pod_view
from tunix_operator.settings import OperatorSettings, SettingsError
from tunix_operator.trainer_output import parse_progress, parse_summary, parse_termination_message, truncate


def test_pod_view_reads_index_attempt_and_exit() -> None:
    view = pod_view(pod(attempt=3, index=1, phase="Failed", exit_code=3, message="nan"))
    assert (view.attempt, view.index, view.exit_code, view.termination_message) == (3, 1, 3, "nan")
    assert view.terminal and not view.deleting


def test_pod_view_of_an_empty_pod_is_pending() -> None:
    view = pod_view({"metadata": {"name": "p"}})
    assert view.phase == "Pending" and view.attempt is None and view.exit_code is None


def test_assess_ignores_pods_of_other_attempts() -> None:
    pods = [pod_view(pod(attempt=0, phase="Failed", exit_code=1)), pod_view(pod(attempt=1))]
    state = assess({"status": {}}, pods, attempt=1, hosts=1)
    assert state.outcome == Outcome.RUNNING


def test_assess_oom_is_retryable_with_its_own_reason() -> None:
    raw = pod(phase="Failed", exit_code=137)
    raw["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    state = assess({"status": {}}, [pod_view(raw)], attempt=0, hosts=1)
    assert (state.outcome, state.exit_class, state.reason) == (
        Outcome.FAILED,
        ExitClass.RETRYABLE,
        "OOMKilled",
    )


def test_set_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    first = set_condition(None, "Running", True, "PodsRunning", None, T0, 1)
    second = set_condition(first, "Running", True, "PodsRunning", "again", at(60), 2)
    assert second[0].last_transition_time == format_time(T0)
    assert second[0].observed_generation == 2
    third = set_condition(second, "Running", False, "Completed", None, at(120), 2)
    assert third[0].last_transition_time == format_time(at(120))


def test_conditions_are_kept_in_a_stable_order() -> None:
    conds = set_condition(None, "Failed", True, "X", None, T0, 1)
    conds = set_condition(conds, "Running", False, "X", None, T0, 1)
    assert [c.type for c in conds] == ["Running", "Failed"]


def test_time_round_trip_and_bad_input() -> None:
    assert parse_time(format_time(T0 + timedelta(microseconds=5))) == T0
    assert parse_time("not a time") is None and parse_time(None) is None
    assert parse_time("2026-01-01T12:00:00") == T0


def test_termination_message_json_or_log_tail() -> None:
    summary, provenance = parse_termination_message(
        json.dumps({"finalLoss": 1.0, "totalSteps": 5, "provenance": {"git": "abc"}, "newKey": 1})
    )
    assert summary is not None and summary.final_loss == 1.0 and provenance == {"git": "abc"}
    assert parse_termination_message("Traceback (most recent call last): ...") == (None, None)
    assert parse_termination_message("[1, 2]") == (None, None)
    assert parse_termination_message("{}") == (None, None)
    assert parse_termination_message(None) == (None, None)


def test_parse_progress() -> None:
    progress = parse_progress({"step": 3, "totalSteps": 9, "loss": 2.0})
    assert progress is not None and progress.step_of_total == "3/9"
    assert parse_progress({"step": "many"}) is None
    assert parse_progress(None) is None


def test_truncate() -> None:
    assert truncate("  abc  ", 10) == "abc"
    assert truncate("x" * 20, 10) == "x" * 9 + "…"
    assert truncate(None, 10) is None


def test_settings_from_env() -> None:
    env = {
        "TUNIX_DEFAULT_IMAGE": "img:1",
        "TUNIX_WATCH_NAMESPACES": "a, b,,",
        "TUNIX_PROGRESS_INTERVAL_SECONDS": "2.5",
        "TUNIX_STANDALONE": "false",
        "UNRELATED": "x",
    }
    settings = OperatorSettings.from_env(env, metrics_port=0)
    assert settings.default_image == "img:1"
    assert settings.watch_namespaces == ("a", "b")
    assert settings.progress_interval_seconds == 2.5
    assert settings.standalone is False and settings.metrics_port == 0


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        OperatorSettings.from_env({"TUNIX_PROGRESS_INTERVAL_SECONDS": "-1"})
    with pytest.raises(SettingsError, match=r"TUNIX_MAX_PROGRESS_READS_PER_SECOND='0': .*greater than 0"):
        OperatorSettings.from_env({"TUNIX_MAX_PROGRESS_READS_PER_SECOND": "0"})
    with pytest.raises(SettingsError, match=r"the flag for metrics_port=70000"):
        OperatorSettings.from_env({}, metrics_port=70000)


def test_a_bad_setting_exits_2_with_a_message_not_a_traceback() -> None:
    env = {**os.environ, "TUNIX_MAX_PROGRESS_READS_PER_SECOND": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "tunix_operator", "--standalone"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "TUNIX_MAX_PROGRESS_READS_PER_SECOND='0'" in result.stderr
    assert "Traceback" not in result.stderr


def test_operator_never_imports_jax() -> None:
    code = (
        "import sys, tunix_operator.__main__, tunix_operator.handlers, tunix_operator.storage; "
        "bad = [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_summary_json_provenance_reads_back_as_the_trainer_writes_it() -> None:
    """summary.json keeps raw provenance values; the operator shows them as the trainer's message does."""
    raw = {"device_count": 8, "platform": "gpu", "mesh": {"data": 8}, "flag": True}
    _, provenance = parse_summary({"finalLoss": 1.0, "provenance": raw})
    assert provenance == provenance_strings(raw)
    assert provenance == {"device_count": "8", "platform": "gpu", "mesh": '{"data":8}', "flag": "true"}
