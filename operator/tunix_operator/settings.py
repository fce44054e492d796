"""Operator settings: a pydantic model filled from ``TUNIX_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "TUNIX_"


class SettingsError(ValueError):
    """Settings that do not validate; the message names each variable (or flag) at fault."""


class OperatorSettings(BaseModel):
    """Everything the operator needs that is not in a TunixRun."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_image: str = Field("ghcr.io/tunix-rt/trainer:0.1.0", min_length=1)
    artifacts_base_uri: str = Field(
        "file:///var/lib/tunix/artifacts",
        min_length=1,
        description="Artifacts go to <base>/<namespace>/<name> unless spec.storage.uri is set.",
    )
    default_storage_secret: str | None = Field(
        None,
        min_length=1,
        description="Secret with object-storage credentials for runs without spec.storage.credentialsSecret.",
    )
    watch_namespaces: tuple[str, ...] = Field((), description="Empty: all namespaces.")
    progress_interval_seconds: float = Field(10.0, gt=0, description="How often a running run is re-read.")
    max_progress_reads_per_second: float = Field(
        15.0,
        gt=0,
        description="Budget of the progress reads of all running runs together: with more running runs "
        "than this x progress_interval_seconds, each run is re-read less often (every runs / budget "
        "seconds; the tunix_progress_read_interval_seconds gauge) and its status.progress lags more. "
        "Stall, startup and deadline checks still read when due.",
    )
    resync_interval_seconds: float = Field(60.0, gt=0, description="Upper bound between two reconciles.")
    max_concurrent_reconciles: int = Field(
        8,
        ge=1,
        le=256,
        description="Worker threads running reconciles (API writes, storage reads); more runs wait in "
        "a queue (the tunix_reconcile_queue_depth gauge).",
    )
    secret_cache_seconds: float = Field(
        300.0,
        ge=0,
        description="How long a credentials Secret read from the API is reused; a storage read refused "
        "for its credentials reads it again at once.",
    )
    restart_settle_seconds: float = Field(2.0, ge=0, description="Poll while old pods still terminate.")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus port; 0 disables.")
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    standalone: bool = Field(True, description="False: use kopf peering (several replicas).")
    peering_name: str = "tunix-operator"
    log_format: str = Field("json", pattern="^(json|text)$")
    log_level: str = "INFO"
    max_message_chars: int = Field(1024, ge=64, description="Truncate trainer messages in status/events.")

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> OperatorSettings:
        """Read ``TUNIX_<FIELD>`` (upper case) for each field; ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in environ:
                values[name] = environ[key]
        flags = {k: v for k, v in overrides.items() if v is not None}
        values.update(flags)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_problems(exc, flags)) from None


def _problems(exc: ValidationError, flags: Mapping[str, object]) -> str:
    """One line per setting at fault: ``TUNIX_<FIELD>='value': why`` (a flag's field by its name)."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        source = f"the flag for {field}" if field in flags else ENV_PREFIX + field.upper()
        lines.append(f"{source}={error.get('input')!r}: {error['msg']}")
    return "invalid operator settings: " + "; ".join(lines)
