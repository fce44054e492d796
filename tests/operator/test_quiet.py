"""A poll that finds nothing new is not decided again, until a time-based check comes due
(tunix_operator.quiet, Reconciler.reconcile)."""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
from typing import Any

from tests.operator.factories import at, pod, run_body
from tests.operator.test_reconciler import VersionedKube, with_version
from tunix_operator.cache import Children
from tunix_operator.handlers import RunDaemons
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.policies.draft import Draft, Observed, view_run
from tunix_operator.quiet import QuietDecisions, versions
from tunix_operator.reconciler import Reconciler, Result
from tunix_operator.settings import OperatorSettings

INTERVAL = 7.0


class Clock:
    def __init__(self) -> None:
        self.seconds = 10.0

    def __call__(self):  # type: ignore[no-untyped-def]
        return at(self.seconds)


def versioned(obj: dict[str, Any], version: int, uid: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"] |= {"resourceVersion": str(version), "uid": uid}
    return obj


class Polled:
    """A Running run (its pod and Job with resourceVersions, as the watches show them)."""

    def __init__(self, tmp_path: pathlib.Path, settings: dict[str, Any] | None = None, **spec: Any) -> None:
        self.kube = VersionedKube({"r1": with_version(run_body(**spec), 5)})
        self.clock = Clock()
        settings = OperatorSettings(
            artifacts_base_uri=tmp_path.as_uri(),
            metrics_port=0,
            progress_interval_seconds=INTERVAL,
            **(settings or {}),
        )
        self.rec = Reconciler(self.kube, settings, clock=self.clock)  # type: ignore[arg-type]
        self.pod_version = 1
        self.dir = tmp_path / "ns" / "r1"
        self.dir.mkdir(parents=True)
        self.progress(1)
        self.reconcile()  # Pending: status, Job
        self.kube.pods = [pod()]
        self.reconcile()  # Running, the progress merged: from now on nothing new

    def progress(self, step: int, seconds: float = 10.0) -> None:
        written = at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = json.dumps({"attempt": 0, "step": step, "totalSteps": 100, "updatedAt": written})
        (self.dir / "progress.json").write_text(text)

    def children(self) -> Children:
        jobs = tuple(versioned(j, 3, "job-uid") for j in self.kube.jobs.values())
        pods = tuple(versioned(p, self.pod_version, "pod-uid") for p in self.kube.pods)
        return Children(jobs=jobs, pods=pods)

    def reconcile(self) -> Result:
        result = self.rec.reconcile(self.kube.get_run("ns", "r1"), self.children())  # type: ignore[arg-type]
        assert result is not None
        return result

    def status(self) -> dict[str, Any]:
        return self.kube.runs["r1"]["status"]


def test_an_unchanged_poll_is_not_decided_again(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    assert run.status()["phase"] == "Running" and run.status()["progress"]["step"] == 1
    calls = list(run.kube.calls)
    first = run.reconcile()
    assert not first.skipped and first.decision.quiet  # decided once on what is now known
    run.clock.seconds += INTERVAL
    again = run.reconcile()
    assert again.skipped and again.decision.requeue_after == INTERVAL
    assert again.decision.status == first.decision.status and run.kube.calls == calls


def test_a_new_file_or_child_version_is_decided_at_once(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    run.reconcile()
    run.progress(2, seconds=15)
    changed = run.reconcile()
    assert not changed.skipped and run.status()["progress"]["step"] == 2
    run.reconcile()
    assert run.reconcile().skipped
    run.pod_version += 1  # a watch event of the pod (say, a new condition)
    assert not run.reconcile().skipped


def test_a_quiet_decision_stands_until_its_deadline_only(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, activeDeadlineSeconds=40)  # started at 10 s: due at 50 s
    first = run.reconcile()
    assert first.decision.due_after == 40 and first.decision.requeue_after == INTERVAL
    run.clock.seconds = 45
    assert run.reconcile().decision.requeue_after == 5  # the deadline before the next poll
    run.clock.seconds = 50
    due = run.reconcile()
    assert not due.skipped and run.status()["phase"] == "Failed"
    assert [e.reason for e in due.decision.events] == ["DeadlineExceeded"]


def test_a_quiet_decision_stands_until_the_stall_timeout_only(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, retryPolicy={"maxRestarts": 1, "stallTimeoutSeconds": 30})
    run.reconcile()  # step 1 at 10 s: stalled at 40 s
    run.clock.seconds = 39
    assert run.reconcile().skipped
    run.clock.seconds = 40
    stalled = run.reconcile()
    assert not stalled.skipped and "Stalled" in [e.reason for e in stalled.decision.events]


def test_the_resync_interval_bounds_a_quiet_decision(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    run.reconcile()
    resync = run.rec.settings.resync_interval_seconds
    run.clock.seconds += resync - 1
    assert run.reconcile().skipped
    run.clock.seconds += 1
    assert not run.reconcile().skipped


def test_objects_without_resource_versions_are_always_decided() -> None:
    body = run_body()
    assert versions(with_version(body, 1), [], []) == ("1", (), ())
    assert versions(body, [], []) is None
    assert versions(with_version(body, 1), [], [pod()]) is None
    quiet = QuietDecisions()
    assert quiet.valid(("ns", "r1"), None, at(0)) is None


def test_only_time_based_checks_set_due_after() -> None:
    d = Draft(view_run(run_body()), Observed(), at(0), OperatorSettings(metrics_port=0))
    d.poll_in(7)
    assert (d.requeue, d.due) == (7, None)
    d.requeue_in(9)
    assert (d.requeue, d.due) == (7, 9)
    d.requeue_in(3)
    assert d.decision().requeue_after == 3 and d.decision().due_after == 3


def test_a_forgotten_run_is_decided_again(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    run.reconcile()
    assert len(run.rec.quiet) == 1
    run.rec.forget("ns", "r1")
    assert len(run.rec.quiet) == 0 and not run.reconcile().skipped


def test_the_daemon_polls_a_quiet_run_and_sleeps_until_the_resync(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path)
    metrics = OperatorMetrics()
    daemons = RunDaemons(run.rec, metrics, run.rec.settings)
    body = run.kube.get_run("ns", "r1")
    resync = run.rec.settings.resync_interval_seconds
    for skipped in (0, 1, 2):
        delay, failed, poll = asyncio.run(daemons._reconcile(body, run.children))  # type: ignore[arg-type]
        assert not failed and (delay, poll) == (resync, INTERVAL)  # the poller reads every 7 s
        assert metrics.registry.get_sample_value("tunix_reconciles_unchanged_total") == skipped
    assert metrics.registry.get_sample_value("tunix_reconcile_duration_seconds_count") == 3
    assert daemons._unchanged_or_poke(("ns", "r1")) is False  # the poller's check: nothing new
    assert metrics.registry.get_sample_value("tunix_reconciles_unchanged_total") == 3
    run.progress(2, seconds=15)
    assert daemons._unchanged_or_poke(("ns", "r1")) is True
    reads = sum(run.rec.reads.counts.values())
    asyncio.run(daemons._reconcile(body, run.children))  # type: ignore[arg-type]
    assert run.status()["progress"]["step"] == 2
    assert sum(run.rec.reads.counts.values()) == reads  # decided on what the poll read
    assert run.rec.changed(("ns", "unknown")) is True  # no quiet decision: decide


def test_a_quiet_run_with_a_deadline_sleeps_until_it(tmp_path: pathlib.Path) -> None:
    run = Polled(tmp_path, activeDeadlineSeconds=40)
    daemons = RunDaemons(run.rec, OperatorMetrics(), run.rec.settings)
    delay, _, poll = asyncio.run(daemons._reconcile(run.kube.get_run("ns", "r1"), run.children))  # type: ignore[arg-type]
    assert (delay, poll) == (40, INTERVAL)
    run.clock.seconds = 47  # the deadline comes before the next poll: the daemon wakes for it
    delay, _, poll = asyncio.run(daemons._reconcile(run.kube.get_run("ns", "r1"), run.children))  # type: ignore[arg-type]
    assert (delay, poll) == (3, INTERVAL)


def test_a_poll_that_raced_a_reconcile_does_not_hand_it_stale_files(tmp_path: pathlib.Path) -> None:
    """The poller reads step 2; before it stores what it read, the daemon (woken by a watch event)
    reconciles on step 3. The next reconcile reads the files again instead of deciding on step 2."""
    run = Polled(tmp_path)
    run.reconcile()  # quiet at step 1
    run.progress(2, seconds=15)
    read = run.rec._read

    def read_then_race(*args: Any) -> Any:
        files = read(*args)  # the poll's read: step 2
        run.rec._read = read  # type: ignore[method-assign]
        run.progress(3, seconds=20)
        run.pod_version += 1  # a watch event wakes the daemon meanwhile
        run.reconcile()
        run.reconcile()  # quiet again, at step 3
        return files

    run.rec._read = read_then_race  # type: ignore[method-assign]
    assert run.rec.changed(("ns", "r1")) is True
    assert run.status()["progress"]["step"] == 3
    reads = sum(run.rec.reads.counts.values())
    after = run.reconcile()
    assert sum(run.rec.reads.counts.values()) > reads  # read again, not taken from the raced poll
    assert after.skipped and run.status()["progress"]["step"] == 3
