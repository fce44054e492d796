"""A container's environment and command line as the kubelet computes them (pure functions).

Covers ``env`` (value with ``$(VAR)`` expansion, ``fieldRef``, ``secretKeyRef``, ``configMapKeyRef``,
``resourceFieldRef`` on cpu/memory with a divisor), ``envFrom`` (ConfigMaps and Secrets, with prefix
and ``optional``) and the expansion of ``$(VAR)`` in ``command`` and ``args``. ConfigMaps and Secrets
come through a lookup callback, so nothing here does I/O.
"""

from __future__ import annotations

import base64
import decimal
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]
# (kind "ConfigMap" | "Secret", name) -> the object, or None when it does not exist.
Lookup = Callable[[str, str], Obj | None]
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # what the API server accepts as an env name
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ContainerConfigError(Exception):
    """The container cannot be configured yet (reason CreateContainerConfigError): a missing ConfigMap,
    Secret or key that is not optional. The kubelet retries."""


class ContainerCreateError(Exception):
    """The container cannot be created (reason CreateContainerError), e.g. it names nothing to run."""


def expand(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, undefined ones kept as written,
    ``$$`` is a literal ``$`` (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:  # no closing parenthesis: kept as written
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(values.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append(char + nxt)
            i += 2
    return "".join(out)


def field_value(pod: Obj, path: str, *, pod_ip: str, host_ip: str) -> str:
    """The downward-API value of ``path`` (``fieldRef.fieldPath``) for ``pod``."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldPath {path!r}")


_SUFFIXES = {
    "": 1,
    "m": decimal.Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str) -> decimal.Decimal:
    """A resource quantity (``500m``, ``2Gi``, ``1e3``) as an exact decimal."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {text!r}")
    return decimal.Decimal(match.group(1)) * decimal.Decimal(_SUFFIXES[match.group(2)])


def resource_value(container: Obj, ref: Obj, node_allocatable: Mapping[str, str]) -> str:
    """``resourceFieldRef``: the container's limit (else the node's allocatable for limits, the request
    else 0 for requests) divided by ``divisor``, rounded up, as the kubelet does."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = node_allocatable.get(name)
    quantity = parse_quantity(str(value)) if value is not None else decimal.Decimal(0)
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise ValueError(f"resourceFieldRef {resource}: divisor must be positive")
    return str(math.ceil(quantity / divisor))


def _data(kind: str, obj: Obj) -> dict[str, str]:
    """A ConfigMap's ``data`` or a Secret's decoded ``data`` (+ ``stringData`` is never stored)."""
    if kind == "Secret":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _key_ref(kind: str, ref: Obj, namespace: str, lookup: Lookup) -> str | None:
    """A ``secretKeyRef``/``configMapKeyRef`` value; None when optional and missing."""
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    obj = lookup(kind, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    data = _data(kind, obj)
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def container_env(
    pod: Obj,
    container: Obj,
    *,
    lookup: Lookup,
    pod_ip: str,
    host_ip: str,
    base: Mapping[str, str] = {},
    node_allocatable: Mapping[str, str] = {},
) -> dict[str, str]:
    """The container's environment: ``base`` (the image's), then ``envFrom`` in order, then ``env`` in
    order with ``$(VAR)`` expanded against what is defined so far (a later entry wins)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field)
            if ref is None:
                continue
            obj = lookup(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            for key, value in _data(kind, obj).items():
                if _ENV_NAME.match(prefix + key):  # invalid names are skipped (the kubelet records an event)
                    env[prefix + key] = value
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=host_ip)
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"], node_allocatable)
        elif "secretKeyRef" in source:
            value = _key_ref("Secret", source["secretKeyRef"], namespace, lookup)
        elif "configMapKeyRef" in source:
            value = _key_ref("ConfigMap", source["configMapKeyRef"], namespace, lookup)
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def command_line(container: Obj, env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded. There is no image entrypoint to fall back on, so
    a container without ``command`` cannot run as a process."""
    command = list(container.get("command") or [])
    if not command:
        raise ContainerCreateError("a process container needs a command (there is no image entrypoint)")
    return [expand(str(part), env) for part in command + list(container.get("args") or [])]
