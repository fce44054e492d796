"""The progress-read budget: many running runs stretch the read interval, never the time-based checks
(tunix_operator.budget, Reconciler)."""

from __future__ import annotations

import pathlib

from tests.operator.test_quiet import INTERVAL, Polled
from tunix_operator import handlers
from tunix_operator.budget import ReadBudget
from tunix_operator.metrics import OperatorMetrics


def test_the_interval_stretches_only_past_the_budget() -> None:
    budget = ReadBudget(interval=10, resync=60, per_second=20)
    assert budget.read_interval() == 10 and budget.resync_interval() == 60
    for i in range(200):
        budget.reads(("ns", f"r{i}"), True)
    assert budget.readers() == 200 and budget.read_interval() == 10  # 200 runs / 10 s = the budget
    for i in range(200, 1000):
        budget.reads(("ns", f"r{i}"), True)
    assert budget.read_interval() == 50 and budget.resync_interval() == 100  # a resync reads too
    for i in range(1000, 2000):
        budget.reads(("ns", f"r{i}"), True)
    assert budget.read_interval() == 100 and budget.resync_interval() == 100
    budget.reads(("ns", "r0"), False)
    budget.forget(("ns", "r1"))
    budget.reads(("ns", "r2"), True)  # counted once
    assert budget.readers() == 1998


def others_reading(run: Polled, count: int) -> None:
    for i in range(count):
        run.rec.budget.reads(("ns", f"other-{i}"), True)


def test_many_running_runs_read_each_one_less_often(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, settings={"max_progress_reads_per_second": 10})
    assert run.reconcile().decision.requeue_after == INTERVAL  # one run: the configured interval
    others_reading(run, 199)  # 200 runs at 10 reads/s: each every 20 s
    run.progress(2, seconds=15)
    changed = run.reconcile()
    assert not changed.skipped and run.status()["progress"]["step"] == 2
    assert changed.decision.requeue_after == 20
    quiet = run.reconcile()
    assert quiet.decision.quiet and quiet.quiet == (20, run.rec.settings.resync_interval_seconds)


def test_the_stall_check_is_not_stretched(tmp_path: pathlib.Path) -> None:
    run = Polled(
        tmp_path,
        settings={"max_progress_reads_per_second": 10},
        retryPolicy={"maxRestarts": 1, "stallTimeoutSeconds": 30},
    )
    others_reading(run, 999)  # each run read every 100 s
    first = run.reconcile()  # step 1 at 10 s: stalled at 40 s unless a later read shows a step
    assert first.decision.due_after == 30 and first.decision.requeue_after == 30
    run.progress(2, seconds=35)
    run.clock.seconds = 40
    due = run.reconcile()  # the check reads the file: no stall
    assert not due.skipped and run.status()["progress"]["step"] == 2
    assert "Stalled" not in [e.reason for e in due.decision.events]
    run.clock.seconds = 66  # step 2 at 35 s did not advance for 30 s
    assert "Stalled" in [e.reason for e in run.reconcile().decision.events]


def test_a_quiet_decision_stands_one_stretched_interval(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, settings={"max_progress_reads_per_second": 10})
    others_reading(run, 999)  # 1,000 runs: every 100 s, longer than the 60 s resync
    run.reconcile()
    run.clock.seconds += 99
    assert run.reconcile().skipped
    run.clock.seconds += 1
    assert not run.reconcile().skipped


def test_a_forgotten_run_leaves_the_budget(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    assert run.rec.budget.readers() == 1
    run.rec.forget("ns", "r1")
    assert run.rec.budget.readers() == 0


def test_the_gauges_show_the_readers_and_the_interval(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, settings={"max_progress_reads_per_second": 2})
    metrics = OperatorMetrics()
    handlers.build_registry(run.rec, run.rec.settings, metrics)
    others_reading(run, 29)
    sample = metrics.registry.get_sample_value
    assert sample("tunix_progress_readers") == 30
    assert sample("tunix_progress_read_interval_seconds") == 15
