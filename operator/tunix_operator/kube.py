"""Every Kubernetes API call the operator makes (RBAC in the chart is derived from this list).

- tunix.dev/tunixruns: get; tunixruns/status: patch  (watch/list/patch by kopf itself)
- batch/jobs: get, create, delete  (watch/list by kopf for the Job event handler)
- core/pods: list  (watch by kopf for the Pod event handler)
- core/configmaps: create, patch; core/persistentvolumeclaims: create; core/services: create
- core/secrets: get (the run's credentialsSecret only); core/events: create (kopf)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import kubernetes.client as k8s
from kubernetes.client.exceptions import ApiException

from tunix_api.run import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


def _data(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


class KubeClient:
    """A thin, synchronous wrapper over the ``kubernetes`` client; returns plain dicts."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    # ---- TunixRun ------------------------------------------------------------------------------

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_run_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """JSON merge patch of ``.status`` through the status subresource; a gone run is fine."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(patch)}, _content_type=MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # ---- children ------------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _data(self._batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = self._core.list_namespaced_pod(
            namespace, label_selector=label_selector, _preload_content=False
        )
        return list(_data(response).get("items") or [])

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create a child; False when it exists already (ConfigMaps are then updated)."""
        kind, namespace = obj["kind"], obj["metadata"]["namespace"]
        creators = {
            "Job": self._batch.create_namespaced_job,
            "ConfigMap": self._core.create_namespaced_config_map,
            "PersistentVolumeClaim": self._core.create_namespaced_persistent_volume_claim,
            "Service": self._core.create_namespaced_service,
        }
        try:
            creators[kind](namespace, dict(obj), _preload_content=False)
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        if kind == "ConfigMap":  # the spec may have changed since the last attempt
            self._core.patch_namespaced_config_map(
                obj["metadata"]["name"],
                namespace,
                {"data": obj["data"]},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        return False

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
