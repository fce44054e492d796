"""The tunix-rt contract: TunixRun API models, exit codes and artifact names.

Importable with pydantic and PyYAML alone (no JAX, no kopf): both the operator and
the trainer depend on it, and the CRD in ``crds/`` is generated from it.
"""

from tunix_api.exit_codes import ExitClass, ExitCode, classify_exit_code
from tunix_api.run import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    VERSION,
    TunixRun,
    TunixRunSpec,
    TunixRunStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "VERSION",
    "ExitClass",
    "ExitCode",
    "TunixRun",
    "TunixRunSpec",
    "TunixRunStatus",
    "classify_exit_code",
]
