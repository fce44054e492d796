"""What a TunixRun may be called, and how big it may be: the API server's rules plus the operator's.

The API server accepts any DNS-1123 subdomain (253 characters, dots allowed) as a custom resource
name, but the operator names the run's children after it: the Job ``<name>-<attempt>``, whose pods
get the hostname ``<name>-<attempt>-<index>`` (a DNS-1123 label, at most 63 characters), and for
multi-host runs the headless Service ``<name>`` (a DNS-1035 label: it starts with a letter). The
CRD therefore restricts ``metadata.name`` (schema ``pattern``/``maxLength`` and a CEL rule, see
``tunix_api.crd``) and the local run applies the same rules with :func:`name_errors`; a name can
thus never be a path (no ``/``, no ``..``) and artifacts always stay under ``./artifacts/<name>``.
"""

from __future__ import annotations

import re

# <name>-<attempt>-<index> is a pod hostname (<= 63 characters): leave room for both numbers.
MAX_NAME_LENGTH = 45
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1123 label
GENERATE_NAME_PATTERN = r"^[a-z0-9][-a-z0-9]*$"  # a label's prefix (the generated suffix ends it)
MAX_NAMESPACE_LENGTH = 63
NAMESPACE_PATTERN = NAME_PATTERN
SERVICE_NAME_START = r"^[a-z]"  # a DNS-1035 label starts with a letter

# Names of the objects a run refers to (Secrets, PVCs, StorageClasses, ServiceAccounts,
# PriorityClasses): DNS-1123 subdomains, or the API server refuses the Job or PVC the operator makes.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_OBJECT_NAME_LENGTH = 253

# A label value (pod labels, node selectors): empty, or alphanumerics with '-', '_', '.' inside.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_LABEL_VALUE_LENGTH = 63

# The API server's limits on one object: etcd refuses values over 1.5 MiB (--max-request-bytes)
# and the API server request bodies over 3 MiB.
MAX_OBJECT_BYTES = 1536 * 1024
MAX_REQUEST_BYTES = 3 * 1024 * 1024

_LABEL_RULES = "lowercase letters, digits and '-', starting and ending with a letter or digit"
MULTI_HOST_NAME_MESSAGE = (
    "metadata.name must start with a letter when accelerator.hosts > 1 "
    "(it names the run's headless Service, a DNS-1035 label)"
)


def name_errors(name: str, *, hosts: int = 1) -> list[str]:
    """Why ``name`` cannot name a TunixRun of ``hosts`` pods (empty when it can)."""
    errors = []
    if len(name) > MAX_NAME_LENGTH:
        errors.append(
            f"metadata.name: {len(name)} characters, at most {MAX_NAME_LENGTH} "
            "(the run's Job and pod hostnames are <name>-<attempt>-<index>)"
        )
    if not re.fullmatch(NAME_PATTERN, name):
        errors.append(f"metadata.name: {name!r} must be a DNS-1123 label: {_LABEL_RULES}")
    elif hosts > 1 and not re.match(SERVICE_NAME_START, name):
        errors.append(MULTI_HOST_NAME_MESSAGE)
    return errors


def generate_name_errors(prefix: str) -> list[str]:
    """Why ``prefix`` cannot be a ``metadata.generateName`` (the API server appends 5 characters)."""
    errors = []
    if len(prefix) > MAX_NAME_LENGTH - 5:
        errors.append(
            f"metadata.generateName: {len(prefix)} characters, at most {MAX_NAME_LENGTH - 5} "
            "(the generated name adds 5)"
        )
    if not re.fullmatch(GENERATE_NAME_PATTERN, prefix):
        errors.append(
            f"metadata.generateName: {prefix!r} must be lowercase letters, digits and '-', starting "
            "with a letter or digit"
        )
    return errors


def namespace_errors(namespace: str) -> list[str]:
    """Why ``namespace`` is not a namespace name (empty when it is)."""
    if len(namespace) <= MAX_NAMESPACE_LENGTH and re.fullmatch(NAMESPACE_PATTERN, namespace):
        return []
    return [
        f"metadata.namespace: {namespace!r} must be a DNS-1123 label of at most "
        f"{MAX_NAMESPACE_LENGTH} characters: {_LABEL_RULES}"
    ]
