"""Pod addresses and names on loopback (pure functions).

Every pod runs in the machine's network namespace, so a pod IP is an address of 127.0.0.0/8 (all of
it routes to ``lo`` on Linux: a process can bind and dial any of them with no set-up). The address is
derived from the pod's DNS identity: (namespace, subdomain, hostname) when the pod has both, else its
uid. That makes the address of every peer of an Indexed Job known before any of them starts, so each
pod's hosts file can name them all, as the cluster DNS would through the headless Service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
HOST_IP = "127.0.0.1"  # the node's address (every node of a process kubelet is this machine)
CLUSTER_DOMAIN = "cluster.local"
_HOSTS_HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def loopback_address(key: str) -> str:
    """A stable address 127.a.b.c for ``key``: a in 1..254 (never 127.0.x.x, where 127.0.0.1 and
    127.0.1.1 live), b in 0..255, c in 1..254. Two keys share an address with odds about 1 in 16.5M."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    a, b, c = 1 + digest % 254, (digest >> 8) % 256, 1 + (digest >> 16) % 254
    return f"127.{a}.{b}.{c}"


def named_address(namespace: str, subdomain: str, hostname: str) -> str:
    """The address of the pod ``<hostname>.<subdomain>`` in ``namespace``."""
    return loopback_address(f"dns/{namespace}/{subdomain}/{hostname}")


def pod_hostname(pod: Obj) -> str:
    """``spec.hostname``, else the pod's name cut to 63 characters (what the pod sees as its hostname)."""
    name = str((pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"])
    return name[:63].rstrip("-.")


def pod_address(pod: Obj) -> str:
    """The pod's IP: from its DNS identity when it has ``hostname`` and ``subdomain``, else its uid."""
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    if spec.get("hostname") and spec.get("subdomain"):
        return named_address(meta.get("namespace", "default"), spec["subdomain"], spec["hostname"])
    return loopback_address(f"uid/{meta['uid']}")


@dataclass(frozen=True)
class HostEntry:
    """One line of a hosts file: an address and its names (first the canonical one)."""

    ip: str
    names: tuple[str, ...]


def subdomain_entry(namespace: str, subdomain: str, hostname: str) -> HostEntry:
    """The names a headless Service gives a pod: ``<h>.<sub>.<ns>.svc.<domain>`` and the shorter forms
    the pod's DNS search path would complete (``<h>.<sub>.<ns>.svc``, ``<h>.<sub>.<ns>``, ``<h>.<sub>``)."""
    fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"
    short = (
        f"{hostname}.{subdomain}.{namespace}.svc",
        f"{hostname}.{subdomain}.{namespace}",
        f"{hostname}.{subdomain}",
    )
    return HostEntry(named_address(namespace, subdomain, hostname), (fqdn, *short))


def host_entries(pod: Obj, pod_ip: str, peer_hostnames: Sequence[str] = ()) -> list[HostEntry]:
    """The pod's own line, its ``hostAliases``, and (when its subdomain's headless Service exists, which
    the caller decides by passing ``peer_hostnames``) a line for every peer, e.g. each index of its Job."""
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    namespace, hostname, subdomain = (
        meta.get("namespace", "default"),
        pod_hostname(pod),
        spec.get("subdomain"),
    )
    entries: list[HostEntry] = []
    if subdomain:
        own = subdomain_entry(namespace, subdomain, hostname)
        entries.append(HostEntry(pod_ip, (*own.names, hostname)))
    else:
        entries.append(HostEntry(pod_ip, (hostname,)))
    for alias in spec.get("hostAliases") or []:
        entries.append(HostEntry(alias["ip"], tuple(alias.get("hostnames") or ())))
    if subdomain:
        entries += [
            subdomain_entry(namespace, subdomain, peer) for peer in peer_hostnames if peer != hostname
        ]
    return entries


def render_hosts(entries: Iterable[HostEntry]) -> str:
    """The hosts file the kubelet writes for a pod (the header of the real kubelet's, then the entries)."""
    lines = [_HOSTS_HEADER.rstrip("\n")]
    lines += ["\t".join((e.ip, *e.names)) for e in entries if e.names]
    return "\n".join(lines) + "\n"


def indexed_hostnames(job: Obj) -> list[str]:
    """The hostnames of an Indexed Job's pods (``<job>-<index>`` for every completion index), which the
    Job controller sets; empty for other Jobs."""
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return []
    return [f"{job['metadata']['name']}-{i}" for i in range(int(spec.get("completions") or 1))]
