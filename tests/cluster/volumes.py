"""A pod's volumes as directories on this machine, and the bind mounts that put them in its containers.

configMap, secret, downwardAPI and projected volumes (secret, configMap, downwardAPI and
serviceAccountToken sources) are written as files under the pod's directory, once, when the pod
starts (later changes to the ConfigMap are not propagated, nor tokens refreshed); emptyDir is an empty
directory of the pod's; persistentVolumeClaim is the bound PersistentVolume's ``hostPath``/``local``
directory, which outlives the pod; hostPath is the path itself. Objects come through callbacks, so this
module does file I/O only.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.cluster.podenv import field_value

Obj = dict[str, Any]
# (kind, namespace, name) -> the object or None; kind is ConfigMap, Secret, PersistentVolumeClaim or
# PersistentVolume (namespace ignored).
Fetch = Callable[[str, str, str], Obj | None]
# (serviceAccountName, audience or "", expirationSeconds) -> a token bound to the pod (TokenRequest).
RequestToken = Callable[[str, str, int], str]
DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (a missing ConfigMap, an unbound claim): the pod stays
    ContainerCreating and the kubelet tries again."""


class VolumeUnsupported(Exception):
    """A volume type this kubelet cannot provide."""


@dataclass(frozen=True)
class PodContext:
    """What setting up a pod's volumes needs besides the pod."""

    root: pathlib.Path  # the pod's directory; volumes go under root/volumes/<name>
    fetch: Fetch
    request_token: RequestToken
    pod_ip: str
    host_ip: str


def _key_files(kind: str, obj: Obj | None, source: Obj, name: str) -> dict[str, tuple[bytes, int | None]]:
    """The files of a configMap/secret source: every key, or the ``items`` (key -> path, mode)."""
    if obj is None:
        if source.get("optional"):
            return {}
        raise VolumeNotReady(f'{kind.lower()} "{name}" not found')
    data: dict[str, bytes] = {}
    if kind == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = source.get("items")
    if not items:
        return {key: (value, None) for key, value in data.items()}
    files: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise VolumeNotReady(f"{kind.lower()} references non-existent config key: {item['key']}")
        files[item["path"]] = (data[item["key"]], item.get("mode"))
    return files


def _downward_files(pod: Obj, items: list[Obj], ctx: PodContext) -> dict[str, tuple[bytes, int | None]]:
    files: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if "fieldRef" not in item:
            raise VolumeUnsupported(f"downwardAPI item {item.get('path')}: only fieldRef is supported")
        value = field_value(pod, item["fieldRef"]["fieldPath"], pod_ip=ctx.pod_ip, host_ip=ctx.host_ip)
        files[item["path"]] = (value.encode(), item.get("mode"))
    return files


def _projected_files(pod: Obj, volume: Obj, ctx: PodContext) -> dict[str, tuple[bytes, int | None]]:
    namespace = pod["metadata"].get("namespace", "default")
    files: dict[str, tuple[bytes, int | None]] = {}
    for source in volume.get("sources") or []:
        if "configMap" in source or "secret" in source:
            kind, field = ("ConfigMap", "configMap") if "configMap" in source else ("Secret", "secret")
            ref = source[field]
            files.update(
                _key_files(kind, ctx.fetch(kind, namespace, ref.get("name", "")), ref, ref.get("name", ""))
            )
        elif "downwardAPI" in source:
            files.update(_downward_files(pod, source["downwardAPI"].get("items") or [], ctx))
        elif "serviceAccountToken" in source:
            ref = source["serviceAccountToken"]
            account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
            seconds = int(ref.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
            token = ctx.request_token(account, ref.get("audience", ""), seconds)
            files[ref["path"]] = (token.encode(), None)
        else:
            raise VolumeUnsupported(f"projected source {sorted(source)} is not supported")
    return files


def write_files(
    directory: pathlib.Path, files: Mapping[str, tuple[bytes, int | None]], default_mode: int
) -> None:
    """Write ``files`` (relative path -> content, mode) under ``directory``; no path may leave it."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory.resolve()
    for relative, (content, mode) in files.items():
        target = (directory / relative).resolve()
        if base not in target.parents:
            raise VolumeUnsupported(f"volume file path {relative!r} leaves the volume")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, mode if mode is not None else default_mode)


def _claim_path(pod: Obj, claim: Obj, ctx: PodContext) -> pathlib.Path:
    namespace, name = pod["metadata"].get("namespace", "default"), claim["claimName"]
    pvc = ctx.fetch("PersistentVolumeClaim", namespace, name)
    if pvc is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{name}" not found')
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    if (pvc.get("status") or {}).get("phase") != "Bound" or not volume_name:
        raise VolumeNotReady(f'persistentvolumeclaim "{name}" is not bound')
    pv = ctx.fetch("PersistentVolume", "", volume_name)
    spec = (pv or {}).get("spec") or {}
    path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
    if not path:
        raise VolumeUnsupported(f"persistentvolume {volume_name!r} has no hostPath or local path")
    return pathlib.Path(path)


def _host_path(source: Obj) -> pathlib.Path:
    path, kind = pathlib.Path(source["path"]), source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind == "Directory" and not path.is_dir():
        raise VolumeNotReady(f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise VolumeNotReady(f"hostPath type check failed: {path} is not a file")
    return path


def prepare_volumes(pod: Obj, ctx: PodContext) -> dict[str, pathlib.Path]:
    """Set up every volume of ``pod``; volume name -> the directory (or file) to bind."""
    namespace = pod["metadata"].get("namespace", "default")
    paths: dict[str, pathlib.Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name, own = volume["name"], ctx.root / "volumes" / volume["name"]
        if "emptyDir" in volume:
            own.mkdir(parents=True, exist_ok=True)
            paths[name] = own
        elif "configMap" in volume or "secret" in volume:
            kind, field = ("ConfigMap", "configMap") if "configMap" in volume else ("Secret", "secret")
            source = volume[field]
            ref = source.get("name") or source.get("secretName") or ""
            files = _key_files(kind, ctx.fetch(kind, namespace, ref), source, ref)
            write_files(own, files, source.get("defaultMode", DEFAULT_MODE))
            paths[name] = own
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"]
            write_files(
                own,
                _downward_files(pod, source.get("items") or [], ctx),
                source.get("defaultMode", DEFAULT_MODE),
            )
            paths[name] = own
        elif "projected" in volume:
            source = volume["projected"]
            write_files(own, _projected_files(pod, source, ctx), source.get("defaultMode", DEFAULT_MODE))
            paths[name] = own
        elif "persistentVolumeClaim" in volume:
            paths[name] = _claim_path(pod, volume["persistentVolumeClaim"], ctx)
        elif "hostPath" in volume:
            paths[name] = _host_path(volume["hostPath"])
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeUnsupported(f"volume {name!r}: type {kinds} is not supported by the process kubelet")
    return paths


def container_mounts(pod: Obj, container: Obj, paths: Mapping[str, pathlib.Path]) -> list[Obj]:
    """The shim's bind mounts for ``container``'s volumeMounts (``subPath`` honoured)."""
    # Volumes of written files are always read-only in the container, as the real kubelet mounts them.
    read_only_volumes = {
        v["name"]
        for v in (pod.get("spec") or {}).get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("readOnly")
        or any(k in v for k in ("configMap", "secret", "downwardAPI", "projected"))
    }
    mounts = []
    for mount in container.get("volumeMounts") or []:
        source = paths[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        read_only = bool(mount.get("readOnly")) or mount["name"] in read_only_volumes
        mounts.append({"source": str(source), "target": mount["mountPath"], "readOnly": read_only})
    return mounts
