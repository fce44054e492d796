"""Reconciler (observe -> decide -> write) and the per-run daemon, with an in-memory KubeClient."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import pathlib
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.operator.factories import at, pod, run_body
from tunix_operator import handlers
from tunix_operator.cache import Children
from tunix_operator.handlers import RunDaemons
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler, Result
from tunix_operator.settings import OperatorSettings


class FakeKube:
    """The KubeClient interface over dicts, plus what the watches would show (runs, Jobs, pods);
    records calls in order."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs
        self.jobs: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.secrets: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.refuse: set[str] = set()

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The run as the daemon's live body shows it."""
        run = self.runs.get(name)
        return copy.deepcopy(run) if run else None

    def children(self) -> Children:
        return Children(jobs=tuple(self.jobs.values()), pods=tuple(self.pods))

    def patch_run_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append("patch-status")
        if name not in self.runs:
            return None
        status = self.runs[name].setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        return copy.deepcopy(self.runs[name])

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(f"create-{kind}")
        if kind in self.refuse:
            raise ApiException(status=422, reason="Unprocessable Entity")
        if kind == "Job":
            self.jobs[name] = obj
        self.objects[(kind, name)] = obj
        return obj

    def delete_job(self, namespace: str, name: str) -> bool:
        self.calls.append(f"delete-{name}")
        return self.jobs.pop(name, None) is not None

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(f"read-secret-{name}")
        return self.secrets.get(name)


class WatchedReconciler:
    """A Reconciler fed as the daemon feeds it: the run and its children as the watches show them."""

    def __init__(self, kube: FakeKube, inner: Reconciler) -> None:
        self.kube = kube
        self.inner = inner

    def reconcile(self, namespace: str, name: str) -> Result | None:
        body = self.kube.get_run(namespace, name)
        return None if body is None else self.inner.reconcile(body, self.kube.children())


def reconciler(kube: FakeKube, tmp_path: pathlib.Path) -> WatchedReconciler:
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    return WatchedReconciler(kube, Reconciler(kube, settings, clock=lambda: at(10)))  # type: ignore[arg-type]


def test_first_reconcile_patches_status_then_creates_children(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body()})
    result = reconciler(kube, tmp_path).reconcile("ns", "r1")
    assert result is not None
    assert kube.calls == ["patch-status", "create-Job"]
    assert kube.runs["r1"]["status"]["phase"] == "Pending"
    assert "r1-0" in kube.jobs


def test_the_new_jobs_watch_event_writes_nothing(tmp_path: pathlib.Path) -> None:
    """The status written with the Job already says what the Job's appearance (no pod yet) would: its
    watch event costs no patch (and so no watch event of the run)."""
    kube = FakeKube({"r1": run_body(accelerator={"type": "nvidia.com/gpu", "countPerHost": 2, "hosts": 2})})
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    status, calls = copy.deepcopy(kube.runs["r1"]["status"]), list(kube.calls)
    assert status["message"] == "0/2 pods running" and "create-Job" in calls
    rec.reconcile("ns", "r1")  # the Job is in the index now, no pod yet
    assert kube.calls == calls
    kube.pods = [pod(phase="Pending")]
    rec.reconcile("ns", "r1")  # a pod, not running yet: still nothing new
    assert kube.runs["r1"]["status"] == status and kube.calls == calls


def test_refused_child_fails_the_run(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body()})
    kube.refuse.add("Job")
    result = reconciler(kube, tmp_path).reconcile("ns", "r1")
    assert result is not None
    status = kube.runs["r1"]["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][-1]["reason"] == "CreateFailed"
    assert [e.reason for e in result.decision.events] == ["CreateFailed"]


def test_gone_or_deleting_run_is_not_reconciled(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({})
    assert reconciler(kube, tmp_path).reconcile("ns", "r1") is None
    body = run_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    kube.runs["r1"] = body
    assert reconciler(kube, tmp_path).reconcile("ns", "r1") is None
    assert kube.calls == []


def test_progress_is_read_with_the_secret_only_while_running(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body(storage={"credentialsSecret": "creds"})})
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    assert not any(c.startswith("read-secret") for c in kube.calls)
    run_dir = tmp_path / "ns" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text(json.dumps({"step": 5, "totalSteps": 100}))
    kube.pods = [pod()]
    rec.reconcile("ns", "r1")
    assert "read-secret-creds" in kube.calls
    assert kube.runs["r1"]["status"]["progress"]["stepOfTotal"] == "5/100"


class ExplodingReconciler(Reconciler):
    def reconcile(self, live, children):  # type: ignore[no-untyped-def]
        if live["metadata"]["name"] == "bad":
            raise RuntimeError("unexpected shape")
        return super().reconcile(live, children)


def test_daemon_marks_a_run_failed_when_its_reconcile_raises(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        handlers.kopf,
        "event",
        lambda body, type, reason, message: posted.append((body["metadata"]["name"], reason)),
    )
    kube = FakeKube({"bad": run_body(name="bad"), "good": run_body(name="good")})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    metrics = OperatorMetrics()
    daemons = RunDaemons(ExplodingReconciler(kube, settings, clock=lambda: at(0)), metrics, settings)  # type: ignore[arg-type]

    async def both() -> list[tuple[float | None, bool, float | None]]:
        bad, good = kube.get_run("ns", "bad"), kube.get_run("ns", "good")
        assert bad is not None and good is not None
        return [await daemons._reconcile(bad, kube.children), await daemons._reconcile(good, kube.children)]

    (_, bad_failed, _), (_, good_failed, _) = asyncio.run(both())
    assert bad_failed and not good_failed
    assert kube.runs["bad"]["status"]["phase"] == "Failed"
    assert "unexpected shape" in kube.runs["bad"]["status"]["message"]
    assert kube.runs["good"]["status"]["phase"] == "Pending"
    assert ("bad", "OperatorError") in posted and ("good", "Created") in posted
    assert metrics.errors._value.get() == 1


def test_transient_errors_are_retried_not_failed(tmp_path: pathlib.Path) -> None:
    class Flaky(FakeKube):
        def patch_run_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
            raise ApiException(status=503, reason="Unavailable")

    kube = Flaky({"r1": run_body()})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    daemons = RunDaemons(Reconciler(kube, settings), OperatorMetrics(), settings)  # type: ignore[arg-type]
    delay, failed, _ = asyncio.run(daemons._reconcile(run_body(), kube.children))
    assert failed and delay == settings.resync_interval_seconds
    assert "status" not in kube.runs["r1"]


# ---- reconciling from memory ---------------------------------------------------------------------


def with_version(body: dict[str, Any], version: int) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["resourceVersion"] = str(version)
    return body


class VersionedKube(FakeKube):
    """Status patches bump the stored run's resourceVersion, as the API server does."""

    def patch_run_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        stored = super().patch_run_status(namespace, name, patch)
        meta = self.runs[name]["metadata"]
        meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)
        return None if stored is None else copy.deepcopy(self.runs[name])


def test_a_lifecycle_makes_only_writes_and_rest_makes_none(tmp_path: pathlib.Path) -> None:
    """No GET or LIST: the reconciler has no read method left to call but the Secret's."""
    kube = FakeKube({"r1": run_body()})
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    kube.pods = [pod()]
    rec.reconcile("ns", "r1")
    assert kube.runs["r1"]["status"]["phase"] == "Running"
    before = list(kube.calls)
    for _ in range(3):  # at rest: nothing changed, nothing written
        rec.reconcile("ns", "r1")
    assert kube.calls == before == ["patch-status", "create-Job", "patch-status"]


def test_a_live_body_older_than_our_write_is_not_decided_on_again(tmp_path: pathlib.Path) -> None:
    """The watch lags the status patch: the patch's answer is used until the watch catches up."""
    kube = VersionedKube({"r1": with_version(run_body(), 5)})
    rec = reconciler(kube, tmp_path).inner
    stale = with_version(run_body(), 5)  # as the live body still shows it
    first = rec.reconcile(stale, kube.children())
    assert first is not None and [e.reason for e in first.decision.events] == ["Created"]
    again = rec.reconcile(stale, Children())  # the Job's watch event has not arrived either
    assert again is not None and again.decision.events == [] and again.decision.actions == []
    assert again.decision.status["attempt"] == 0  # decided on the written status, with the created Job
    assert [c for c in kube.calls if c.startswith("create")] == ["create-Job"]
    newer = kube.get_run("ns", "r1")  # the watch caught up: the live body is used again
    assert newer is not None and rec.writes.current(("ns", "r1"), newer) is newer


def test_a_job_deleted_but_still_indexed_is_not_seen(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body()})
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    indexed = kube.children()
    kube.runs["r1"]["spec"]["suspend"] = True
    rec.reconcile("ns", "r1")
    assert kube.runs["r1"]["status"]["phase"] == "Suspended" and "delete-r1-0" in kube.calls
    calls = len(kube.calls)
    result = rec.inner.reconcile(kube.get_run("ns", "r1"), indexed)  # type: ignore[arg-type]
    assert result is not None and result.decision.actions == []  # not deleted a second time
    assert len(kube.calls) == calls


def test_a_finished_run_waits_for_a_poke_only(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body(ttlSecondsAfterFinished=100)})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    daemons = RunDaemons(Reconciler(kube, settings, clock=lambda: at(10)), OperatorMetrics(), settings)  # type: ignore[arg-type]
    rec = reconciler(kube, tmp_path)
    rec.reconcile("ns", "r1")
    kube.pods = [pod(phase="Succeeded", exit_code=0, message=json.dumps({"finalLoss": 1.0, "totalSteps": 1}))]
    kube.jobs["r1-0"]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    rec.reconcile("ns", "r1")
    assert kube.runs["r1"]["status"]["phase"] == "Succeeded"
    delay, failed, _ = asyncio.run(daemons._reconcile(kube.get_run("ns", "r1"), kube.children))  # type: ignore[arg-type]
    assert not failed and 0 < delay <= 100  # the TTL is pending
    kube.runs["r1"]["spec"].pop("ttlSecondsAfterFinished")
    delay, failed, _ = asyncio.run(daemons._reconcile(kube.get_run("ns", "r1"), kube.children))  # type: ignore[arg-type]
    assert not failed and delay == float("inf")


def test_reconciles_beyond_the_pool_wait_in_a_measured_queue(tmp_path: pathlib.Path) -> None:
    metrics = OperatorMetrics()
    workers = handlers.Workers(2, metrics)
    depths: list[float] = []
    release = asyncio.Event()

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Event()

        def work(i: int) -> int:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
            return i

        tasks = [asyncio.ensure_future(workers.run(work, i)) for i in range(5)]
        await asyncio.sleep(0.05)
        depths.append(metrics.queue_depth._value.get())
        depths.append(metrics.in_flight._value.get())
        gate.set()
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]
    assert depths == [3, 2]
    assert metrics.queue_depth._value.get() == 0 and metrics.in_flight._value.get() == 0


def test_kopf_retries_are_logged_as_warnings() -> None:
    quiet = handlers.RetriesAsWarnings()
    retry = logging.LogRecord(
        "kopf", logging.ERROR, "", 0, "Request attempt #1/9 failed; will retry: x", None, None
    )
    other = logging.LogRecord(
        "kopf", logging.ERROR, "", 0, "Handler 'x' failed permanently: boom", None, None
    )
    assert quiet.filter(retry) and retry.levelno == logging.WARNING and retry.levelname == "WARNING"
    assert quiet.filter(other) and other.levelno == logging.ERROR


def test_no_reconcile_starts_once_the_workers_are_shut_down() -> None:
    workers = handlers.Workers(1, OperatorMetrics())
    workers.shutdown()
    with pytest.raises(handlers.Stopping):
        asyncio.run(workers.run(lambda: 1))


class Stopped:
    """kopf's ``stopped`` flag of a daemon, never set here."""

    def __bool__(self) -> bool:
        return False

    async def wait(self) -> None:
        await asyncio.Event().wait()


def test_a_deleted_run_ends_its_daemon_without_a_finalizer(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.kopf, "event", lambda *_, **__: None)  # posting needs a running kopf
    kube = FakeKube({"r1": run_body()})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    daemons = RunDaemons(Reconciler(kube, settings, clock=lambda: at(10)), OperatorMetrics(), settings)  # type: ignore[arg-type]
    body = kube.get_run("ns", "r1")
    assert body is not None

    async def scenario() -> None:
        task = asyncio.ensure_future(daemons.run("ns", "r1", body, kube.children, Stopped()))
        await asyncio.sleep(0.2)
        assert not task.done()  # Pending: waiting for its Job's pod
        daemons.spec_seen("ns", "r1", body, gone=True)  # the run's DELETED event
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(scenario())
    assert ("ns", "r1") not in daemons._wakers and not daemons._deleted
    registry = handlers.build_registry(Reconciler(kube, settings), settings, OperatorMetrics())  # type: ignore[arg-type]
    (daemon,) = registry._spawning.get_all_handlers()
    assert daemon.id == "reconcile" and not daemon.requires_finalizer


def test_only_the_added_event_of_a_job_as_created_leaves_the_daemon_asleep(tmp_path: pathlib.Path) -> None:
    """The reconcile that created a Job decided as if it existed: the Job's ADDED event, showing it as
    the create answered, is nothing new. Any other version, event or child wakes the daemon."""
    kube = FakeKube({"r1": run_body()})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    daemons = RunDaemons(Reconciler(kube, settings), OperatorMetrics(), settings)  # type: ignore[arg-type]
    waker = daemons._wakers.setdefault(("ns", "r1"), asyncio.Event())
    created = {"kind": "Job", "metadata": {"name": "r1-0", "resourceVersion": "7"}}
    daemons.reconciler.expectations.created(("ns", "r1"), created)

    def wakes(event: str, body: dict[str, Any], run: str = "r1") -> bool:
        waker.clear()
        daemons.child_seen("ns", run, event, body)
        return waker.is_set()

    assert not wakes("ADDED", created)
    assert wakes("ADDED", {"kind": "Job", "metadata": {"name": "r1-0", "resourceVersion": "8"}})  # changed
    assert wakes("MODIFIED", created)
    assert wakes("ADDED", {"kind": "Pod", "metadata": {"name": "r1-0-0-x", "resourceVersion": "9"}})
    assert wakes("ADDED", {"kind": "Job", "metadata": {"name": "r1-0"}})  # no version: not comparable
    daemons.reconciler.expectations.jobs(("ns", "r1"), [created])  # the watch caught up
    assert wakes("ADDED", created)
