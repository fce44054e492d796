"""Every Kubernetes API call the operator makes (RBAC in the chart is derived from this list).

A reconcile reads nothing from the API: runs, Jobs and pods come from kopf's watches (the
daemon's live body and the indices of ``handlers.py``). The calls are writes, plus the
credentials Secret (through :class:`~tunix_operator.storage.CredentialsCache`).

- tunix.dev/tunixruns: list/watch/patch by kopf itself; tunixruns/status: patch
- batch/jobs: create, delete  (list/watch by kopf, label-selected, for the index)
- core/pods: list/watch by kopf (label-selected) for the index; patch (the checkpoint-time annotation)
- core/persistentvolumeclaims: create; core/services: create (the trainer's run.yaml travels in the
  Job's pod template, not in a ConfigMap)
- core/secrets: get (the run's credentialsSecret only); core/events: create (kopf)
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any

import kubernetes.client as k8s
from kubernetes.client.exceptions import ApiException

from tunix_api.run import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


logger = logging.getLogger(__name__)


def _data(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


class KubeClient:
    """A thin, synchronous wrapper over the ``kubernetes`` client; returns plain dicts."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    # ---- TunixRun ------------------------------------------------------------------------------

    def patch_run_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch of ``.status`` through the status subresource: the run as stored after it,
        or None when the run is gone."""
        try:
            response = self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(patch)},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return _data(response)

    # ---- children ------------------------------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a child: the object as created, or None when it existed already."""
        kind, namespace = obj["kind"], obj["metadata"]["namespace"]
        creators = {
            "Job": self._batch.create_namespaced_job,
            "PersistentVolumeClaim": self._core.create_namespaced_persistent_volume_claim,
            "Service": self._core.create_namespaced_service,
        }
        try:
            return _data(creators[kind](namespace, dict(obj), _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:
                raise
        return None

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False when it was gone."""
        try:
            self._batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str]) -> bool:
        """Merge ``annotations`` into a pod's; False when the pod is gone or the patch is refused (a
        best-effort signal: an older chart without ``patch`` on pods must not fail the run)."""
        try:
            self._core.patch_namespaced_pod(
                name,
                namespace,
                {"metadata": {"annotations": dict(annotations)}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status in (403, 422):
                logger.warning("pod %s/%s not annotated: %s %s", namespace, name, exc.status, exc.reason)
                return False
            raise

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded data of a Secret; None when it does not exist."""
        try:
            secret = _data(self._core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data
