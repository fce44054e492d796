"""The TunixRun resource: spec (training + scheduling) and status."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictInt, model_validator

from tunix_api.base import ApiModel, OpenModel
from tunix_api.training import (
    BenchmarkSpec,
    CheckpointSpec,
    DatasetSpec,
    DeviceSpec,
    MetricsSpec,
    ModelSpec,
    StorageSpec,
    TrainingSpec,
    cel,
)

GROUP = "tunix.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TunixRun"
PLURAL = "tunixruns"
SINGULAR = "tunixrun"
SHORT_NAME = "trun"

Quantity = str | StrictInt  # bool is not a quantity (pydantic would read true as 1)


class Mode(enum.StrEnum):
    TRAIN = "Train"
    BENCHMARK = "Benchmark"


class AcceleratorType(enum.StrEnum):
    NVIDIA_GPU = "nvidia.com/gpu"
    AMD_GPU = "amd.com/gpu"
    GOOGLE_TPU = "google.com/tpu"
    NONE = "none"


class AcceleratorSpec(ApiModel):
    type: AcceleratorType = Field(AcceleratorType.NONE, description="Extended resource, or none for CPU.")
    count_per_host: int = Field(1, ge=1, le=64, description="Accelerators per pod.")
    hosts: int = Field(1, ge=1, le=4096, description="Pods (hosts); >1 runs multi-process JAX.")


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(ApiModel):
    name: str = Field(..., min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, description="As in a Pod's env[].valueFrom.")


class LocalObjectReference(ApiModel):
    name: str = Field(..., min_length=1)


class RetryPolicy(ApiModel):
    max_restarts: int = Field(
        3, ge=0, le=1000, description="Retries after failures (exit codes classed retryable)."
    )
    max_preemptions: int = Field(
        20, ge=0, le=10_000, description="Resumes after preemption/eviction; these do not spend maxRestarts."
    )
    backoff_seconds: int = Field(10, ge=0, le=3600, description="First retry delay; doubles per restart.")
    max_backoff_seconds: int = Field(300, ge=0, le=86_400)


class TunixRunSpec(ApiModel):
    """What to train, how, and where to run it."""

    mode: Mode = Field(Mode.TRAIN, description="Train, or Benchmark (timed steps, no checkpoints).")
    # --- the trainer's part ---
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(preset="tiny"))
    dataset: DatasetSpec | None = Field(None, description="Required in Train mode.")
    training: TrainingSpec
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    device: DeviceSpec = Field(default_factory=DeviceSpec)
    benchmark: BenchmarkSpec | None = Field(None, description="Benchmark mode settings.")
    # --- the operator's part ---
    image: str | None = Field(None, min_length=1, description="Trainer image; default from the operator.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    accelerator: AcceleratorSpec = Field(default_factory=AcceleratorSpec)
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: dict[str, Any] | None = Field(None, description="As in a Pod's spec.affinity.")
    priority_class_name: str | None = None
    service_account_name: str | None = None
    env: list[EnvVar] | None = None
    pod_labels: dict[str, str] | None = Field(
        None, description="Labels for the Job and pods (e.g. kueue.x-k8s.io/queue-name)."
    )
    pod_annotations: dict[str, str] | None = None
    suspend: bool = Field(
        False, description="Stop the pods (they checkpoint) and keep the run; false resumes."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run after this long, all attempts."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the pods this long after the run ends; the TunixRun stays."
    )
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    termination_grace_period_seconds: int = Field(
        120, ge=0, le=86_400, description="Time for the final checkpoint after SIGTERM."
    )

    @model_validator(mode="after")
    def _mode_rules(self) -> TunixRunSpec:
        if self.mode == Mode.TRAIN and self.dataset is None:
            raise ValueError("dataset is required when mode is Train")
        if self.accelerator.type == AcceleratorType.NONE and self.accelerator.count_per_host != 1:
            raise ValueError("accelerator.countPerHost needs an accelerator type")
        return self


cel("TunixRunSpec", "self.mode != 'Train' || has(self.dataset)", "dataset is required when mode is Train")
cel(
    "TunixRunSpec",
    "!has(self.accelerator) || self.accelerator.type != 'none' || self.accelerator.countPerHost == 1",
    "accelerator.countPerHost needs an accelerator type",
)


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Condition(OpenModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class Progress(OpenModel):
    step: int | None = None
    total_steps: int | None = None
    step_of_total: str | None = Field(None, description='"step/totalSteps", for the Step printer column.')
    loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    updated_at: str | None = None


class Summary(OpenModel):
    final_loss: float | None = None
    best_loss: float | None = None
    best_step: int | None = None
    total_steps: int | None = None
    total_tokens: int | None = None
    avg_tokens_per_second: float | None = None
    wall_time_seconds: float | None = None


def provenance_strings(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Provenance with string values, as ``.status.provenance`` holds it: others as compact JSON.

    The trainer applies it to its termination message and the local status block; the operator
    to what it reads back (termination message or summary.json), so both show the same strings.
    """
    return {
        str(key): value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
        for key, value in provenance.items()
    }


class CheckpointStatus(OpenModel):
    latest_step: int | None = None
    uri: str | None = None


class BenchmarkStatus(OpenModel):
    compile_seconds: float | None = None
    step_time_p50_ms: float | None = None
    step_time_p90_ms: float | None = None
    step_time_p99_ms: float | None = None
    steps_per_second: float | None = None
    tokens_per_second: float | None = None
    tokens_per_second_per_device: float | None = None
    mfu: float | None = None
    peak_memory_bytes: int | None = None


class TunixRunStatus(OpenModel):
    phase: Phase | None = None
    message: str | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    attempt: int | None = Field(None, description="Index of the current Job (0 first).")
    restarts: int | None = None
    preemptions: int | None = None
    progress: Progress | None = None
    summary: Summary | None = None
    checkpoint: CheckpointStatus | None = None
    metrics_uri: str | None = None
    provenance: dict[str, str] | None = None
    benchmark: BenchmarkStatus | None = None


class ObjectMeta(OpenModel):
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class TunixRun(ApiModel):
    api_version: Literal["tunix.dev/v1alpha1"] = API_VERSION
    kind: Literal["TunixRun"] = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TunixRunSpec
    status: TunixRunStatus | None = None
