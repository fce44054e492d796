"""Reconciler (read -> decide -> write) and the per-run daemon, with an in-memory KubeClient."""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.operator.factories import at, pod, run_body
from tunix_operator import handlers
from tunix_operator.handlers import RunDaemons
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.reconciler import Reconciler
from tunix_operator.settings import OperatorSettings


class FakeKube:
    """The KubeClient interface over dicts; records calls in order."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs
        self.jobs: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.secrets: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.refuse: set[str] = set()

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        run = self.runs.get(name)
        return copy.deepcopy(run) if run else None

    def patch_run_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append("patch-status")
        status = self.runs[name].setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self.pods

    def create(self, obj: dict[str, Any]) -> bool:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(f"create-{kind}")
        if kind in self.refuse:
            raise ApiException(status=422, reason="Unprocessable Entity")
        if kind == "Job":
            self.jobs[name] = obj
        self.objects[(kind, name)] = obj
        return True

    def delete_job(self, namespace: str, name: str) -> bool:
        self.calls.append(f"delete-{name}")
        return self.jobs.pop(name, None) is not None

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(f"read-secret-{name}")
        return self.secrets.get(name)


def reconciler(kube: FakeKube, tmp_path: pathlib.Path) -> Reconciler:
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    return Reconciler(kube, settings, clock=lambda: at(10))  # type: ignore[arg-type]


def test_first_reconcile_patches_status_then_creates_children(tmp_path: pathlib.Path) -> None:
    kube = FakeKube({"r1": run_body()})
    result = reconciler(kube, tmp_path).reconcile("ns", "r1")
    assert result is not None
    assert kube.calls == ["patch-status", "create-ConfigMap", "create-Job"]
    assert kube.runs["r1"]["status"]["phase"] == "Pending"
    assert "r1-0" in kube.jobs


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
    def reconcile(self, namespace: str, name: str):  # type: ignore[override]
        if name == "bad":
            raise RuntimeError("unexpected shape")
        return super().reconcile(namespace, name)


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

    async def both() -> list[tuple[float | None, bool]]:
        return [await daemons._reconcile("ns", "bad"), await daemons._reconcile("ns", "good")]

    (_, bad_failed), (_, good_failed) = asyncio.run(both())
    assert bad_failed and not good_failed
    assert kube.runs["bad"]["status"]["phase"] == "Failed"
    assert "unexpected shape" in kube.runs["bad"]["status"]["message"]
    assert kube.runs["good"]["status"]["phase"] == "Pending"
    assert ("bad", "OperatorError") in posted and ("good", "Created") in posted
    assert metrics.errors._value.get() == 1


def test_transient_errors_are_retried_not_failed(tmp_path: pathlib.Path) -> None:
    class Flaky(FakeKube):
        def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
            raise ApiException(status=503, reason="Unavailable")

    kube = Flaky({"r1": run_body()})
    settings = OperatorSettings(artifacts_base_uri=tmp_path.as_uri(), metrics_port=0)
    daemons = RunDaemons(Reconciler(kube, settings), OperatorMetrics(), settings)  # type: ignore[arg-type]
    delay, failed = asyncio.run(daemons._reconcile("ns", "r1"))
    assert failed and delay == settings.resync_interval_seconds
    assert "status" not in kube.runs["r1"]
