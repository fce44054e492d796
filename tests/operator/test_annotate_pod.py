"""The checkpoint-time annotation is best-effort: a pod gone or a refused patch never fails a run."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tunix_operator.kube import KubeClient


class Core:
    def __init__(self, status: int | None) -> None:
        self.status, self.calls = status, []

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kwargs: Any) -> None:
        self.calls.append((namespace, name, body, kwargs.get("_content_type")))
        if self.status is not None:
            raise ApiException(status=self.status, reason="refused")


def client(status: int | None) -> tuple[KubeClient, Core]:
    kube = KubeClient(kubernetes.client.ApiClient())
    kube._core = core = Core(status)  # type: ignore[assignment]
    return kube, core


def test_the_annotation_is_a_merge_patch_of_the_pod() -> None:
    kube, core = client(None)
    assert kube.annotate_pod("ns", "p", {"tunix.dev/last-checkpoint-time": "2026-01-01T00:00:00Z"})
    body = {"metadata": {"annotations": {"tunix.dev/last-checkpoint-time": "2026-01-01T00:00:00Z"}}}
    assert core.calls == [("ns", "p", body, "application/merge-patch+json")]


@pytest.mark.parametrize("status", [403, 404, 422])
def test_refused_or_gone_is_not_an_error(status: int) -> None:
    assert client(status)[0].annotate_pod("ns", "p", {"a": "b"}) is False


def test_other_errors_are_retried_by_the_reconcile() -> None:
    with pytest.raises(ApiException):
        client(500)[0].annotate_pod("ns", "p", {"a": "b"})
