"""An external volume provisioner for the StorageClass ``tunix-local``: PersistentVolumes that are
directories on this machine.

For each Pending claim of a class whose provisioner is :data:`PROVISIONER`, it creates a PV
``pvc-<claim uid>`` (``hostPath`` <root>/<claim uid>, the requested capacity and access modes, a
``claimRef`` to the claim, the class's reclaim policy) and leaves binding to the controller-manager's
persistentvolume-binder. When such a PV is Released and its policy is Delete, it removes the
directory and the PV, as external provisioners do. Everything through the API (list+watch).
"""

from __future__ import annotations

import pathlib
import shutil
import threading
from typing import Any

import kubernetes

from tests.cluster.rawapi import Api, ApiError, list_watch, path_of

Obj = dict[str, Any]
STORAGE_CLASS = "tunix-local"
PROVISIONER = "tunix.dev/process-kubelet"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def storage_class_manifest() -> Obj:
    """The default StorageClass the test cluster has: this provisioner, Delete, bind at once."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def ensure_storage_class(client: kubernetes.client.ApiClient) -> None:
    """Create the ``tunix-local`` StorageClass unless it exists."""
    api = Api(client, user_agent="tunix-provisioner/1", pool_size=1)
    try:
        api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", storage_class_manifest())
    except ApiError as exc:
        if exc.code != 409:
            raise
    finally:
        api.close()


def volume_manifest(claim: Obj, storage_class: Obj, root: pathlib.Path) -> Obj:
    """The PV provisioned for ``claim`` (pure)."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(root / meta["uid"]), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


class Provisioner:
    """Watches claims and volumes in two threads until :meth:`stop`."""

    def __init__(self, api: Api, root: pathlib.Path, errors: list[BaseException]) -> None:
        self._api = api
        self.root = root
        self.errors = errors
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for path, handle in (
            ("/api/v1/persistentvolumeclaims", self._on_claim),
            ("/api/v1/persistentvolumes", self._on_volume),
        ):
            thread = threading.Thread(
                target=list_watch,
                args=(self._api, path),
                kwargs={
                    "on_list": lambda items, handle=handle: [handle("ADDED", i) for i in items],
                    "on_event": handle,
                    "stop": self._stop,
                    "errors": self.errors,
                },
                name=f"provisioner-{path.rsplit('/', 1)[1]}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _class(self, name: str | None) -> Obj | None:
        if not name:
            return None
        try:
            return self._api.request("GET", path_of("apis", "storage.k8s.io", "v1", "storageclasses", name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def _on_claim(self, kind: str, claim: Obj) -> None:
        spec, status = claim.get("spec") or {}, claim.get("status") or {}
        if kind == "DELETED" or spec.get("volumeName") or status.get("phase") != "Pending":
            return
        if claim["metadata"].get("deletionTimestamp"):
            return
        storage_class = self._class(spec.get("storageClassName"))
        if storage_class is None or storage_class.get("provisioner") != PROVISIONER:
            return
        manifest = volume_manifest(claim, storage_class, self.root)
        pathlib.Path(manifest["spec"]["hostPath"]["path"]).mkdir(mode=0o777, parents=True, exist_ok=True)
        try:
            self._api.request("POST", "/api/v1/persistentvolumes", manifest)
        except ApiError as exc:
            if exc.code != 409:  # already provisioned
                raise

    def _on_volume(self, kind: str, volume: Obj) -> None:
        meta, spec = volume["metadata"], volume.get("spec") or {}
        if kind == "DELETED" or (meta.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
            return
        released = (volume.get("status") or {}).get("phase") in ("Released", "Failed")
        if not released or spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        directory = pathlib.Path((spec.get("hostPath") or {}).get("path", ""))
        if directory.parent != self.root:  # another kubelet's volume (or not a directory this one made)
            return
        shutil.rmtree(directory, ignore_errors=True)
        try:
            self._api.request("DELETE", path_of("api", "v1", "persistentvolumes", meta["name"]))
        except ApiError as exc:
            if exc.code != 404:
                raise
