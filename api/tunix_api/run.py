"""The TunixRun resource: spec (training + scheduling) and status."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, model_validator

from tunix_api.base import ApiModel, OpenModel
from tunix_api.names import (
    LABEL_VALUE_PATTERN,
    MAX_LABEL_VALUE_LENGTH,
    MULTI_HOST_NAME_MESSAGE,
    SERVICE_NAME_START,
    generate_name_errors,
    name_errors,
    namespace_errors,
)
from tunix_api.training import (
    BenchmarkSpec,
    CheckpointSpec,
    DatasetSpec,
    DeviceSpec,
    EvaluationSpec,
    ExportSpec,
    MetricsSpec,
    ModelSpec,
    ObjectName,
    StorageSpec,
    TokenizerKind,
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
# What the operator puts on the Job and its pods as label values: the API server would refuse the
# Job (not the TunixRun) for anything else.
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH, pattern=LABEL_VALUE_PATTERN)]


class Mode(enum.StrEnum):
    TRAIN = "Train"
    BENCHMARK = "Benchmark"


class AcceleratorType(enum.StrEnum):
    NVIDIA_GPU = "nvidia.com/gpu"
    AMD_GPU = "amd.com/gpu"
    GOOGLE_TPU = "google.com/tpu"
    NONE = "none"


class AcceleratorSpec(ApiModel):
    """The accelerators each pod gets, and how many pods (hosts) an attempt spans."""

    type: AcceleratorType = Field(
        AcceleratorType.NONE,
        description="Extended resource each pod requests: nvidia.com/gpu, amd.com/gpu, "
        "google.com/tpu, or none (default: CPU only).",
    )
    count_per_host: int = Field(
        1,
        ge=1,
        le=64,
        description="Accelerators per pod (default 1), set as both request and limit; needs a type.",
    )
    hosts: int = Field(
        1,
        ge=1,
        le=4096,
        description="Pods of each attempt, one Indexed Job (default 1); > 1 runs multi-process JAX, "
        "the pods meeting through a headless Service named after the run.",
    )

    @model_validator(mode="after")
    def _count_needs_type(self) -> AcceleratorSpec:
        if self.type == AcceleratorType.NONE and self.count_per_host != 1:
            raise ValueError("accelerator.countPerHost needs an accelerator type")
        return self


cel(
    "AcceleratorSpec",
    "self.type != 'none' || self.countPerHost == 1",
    "accelerator.countPerHost needs an accelerator type",
)


class ResourceRequirements(ApiModel):
    """Container resources besides the accelerator, as in a container's resources."""

    requests: dict[str, Quantity] | None = Field(
        None,
        description="Resources the scheduler reserves per pod (e.g. cpu: 8, memory: 32Gi); the "
        "accelerator is added from spec.accelerator.",
    )
    limits: dict[str, Quantity] | None = Field(
        None,
        description="Most a pod may use (e.g. memory: 64Gi); the accelerator is added from spec.accelerator.",
    )


class Toleration(ApiModel):
    """As in a Pod's tolerations[]: lets the pods run on nodes with a matching taint."""

    key: str | None = Field(None, description="Taint key to match; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Equal (the default): the taint's value must equal value; Exists: any value."
    )
    value: str | None = Field(None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        None,
        description="For NoExecute: seconds the pod stays on the node after the taint appears; "
        "unset: for ever.",
    )


class EnvVar(ApiModel):
    """An environment variable of the trainer container, as in a container's env[]."""

    name: str = Field(..., min_length=1, description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        None,
        description="As in a container's env[].valueFrom: secretKeyRef, configMapKeyRef, fieldRef "
        "or resourceFieldRef.",
    )


class LocalObjectReference(ApiModel):
    """An object of the run's namespace, by name."""

    name: ObjectName = Field(..., description="Name of the object (a Secret of registry credentials).")


class RetryPolicy(ApiModel):
    """How the operator retries failed and preempted attempts (see docs/EXIT_CODES.md)."""

    max_restarts: int = Field(
        3, ge=0, le=1000, description="Retries after failures (exit codes classed retryable)."
    )
    max_preemptions: int = Field(
        20, ge=0, le=10_000, description="Resumes after preemption/eviction; these do not spend maxRestarts."
    )
    backoff_seconds: int = Field(
        10,
        ge=0,
        le=3600,
        description="Delay before the first retry, in seconds (default 10); doubles per restart. "
        "Preempted attempts resume at once.",
    )
    max_backoff_seconds: int = Field(
        300, ge=0, le=86_400, description="Upper bound of the doubling retry delay, in seconds (default 300)."
    )
    stall_timeout_seconds: int | None = Field(
        None,
        ge=10,
        le=604_800,
        description="A Running attempt whose step has not advanced for this long after its first step "
        "is Stalled: its Job is deleted (SIGTERM: the trainer checkpoints if it can) and the next "
        "attempt resumes from the latest checkpoint, spending maxRestarts. Unset (default): off. "
        "Suggested: several times the slowest step plus a checkpoint save, e.g. 600.",
    )
    startup_timeout_seconds: int | None = Field(
        None,
        ge=10,
        le=604_800,
        description="Like stallTimeoutSeconds, for the time from the attempt's pods running to its first "
        "reported step (data loading, compilation, checkpoint restore). Unset (default): off.",
    )


class TunixRunSpec(ApiModel):
    """What to train, how, and where to run it."""

    mode: Mode = Field(Mode.TRAIN, description="Train, or Benchmark (timed steps, no checkpoints).")
    # --- the trainer's part ---
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(preset="tiny"),
        description="The decoder-only transformer to train (default: preset tiny).",
    )
    dataset: DatasetSpec | None = Field(
        None, description="Training data; required in Train mode (Benchmark mode may use it)."
    )
    training: TrainingSpec = Field(..., description="Optimisation: steps (required), batch shape, AdamW.")
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="Checkpoint location, interval, retention, resume."
    )
    evaluation: EvaluationSpec | None = Field(
        None,
        description="Held-out evaluation during and after training (eval records in metrics.jsonl, "
        "status.progress.evalLoss, summary.bestEvalLoss); Train mode only.",
    )
    export: ExportSpec = Field(
        default_factory=ExportSpec, description="What is exported at the end of a Train run."
    )
    storage: StorageSpec = Field(
        default_factory=StorageSpec,
        description="Where metrics.jsonl, progress.json and summary.json go, and how to reach it.",
    )
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="How often metrics and progress are written."
    )
    device: DeviceSpec = Field(default_factory=DeviceSpec, description="Which JAX backend the trainer uses.")
    benchmark: BenchmarkSpec | None = Field(
        None, description="Benchmark mode settings (their defaults when omitted)."
    )
    # --- the operator's part ---
    image: str | None = Field(None, min_length=1, description="Trainer image; default from the operator.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None,
        description="Pull policy of the trainer image; default: Kubernetes' (Always for :latest, "
        "else IfNotPresent).",
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        None, description="Secrets with registry credentials for pulling image, as in a Pod's spec."
    )
    accelerator: AcceleratorSpec = Field(
        default_factory=AcceleratorSpec,
        description="Accelerators per pod and pods per attempt (default: one CPU-only pod).",
    )
    resources: ResourceRequirements | None = Field(
        None, description="CPU, memory and other container resources of each trainer pod."
    )
    node_selector: dict[str, LabelValue] | None = Field(
        None, description="Node labels the pods require, as in a Pod's spec.nodeSelector."
    )
    tolerations: list[Toleration] | None = Field(
        None, description="Taints the pods tolerate, as in a Pod's spec.tolerations."
    )
    affinity: dict[str, Any] | None = Field(None, description="As in a Pod's spec.affinity.")
    priority_class_name: ObjectName | None = Field(
        None,
        description="PriorityClass of the pods: higher priority may preempt lower (a preempted run "
        "resumes from its latest checkpoint).",
    )
    service_account_name: ObjectName | None = Field(
        None,
        description="ServiceAccount the trainer pods run as (e.g. workload identity for object "
        "storage); default: the namespace's default.",
    )
    env: list[EnvVar] | None = Field(
        None,
        description="Extra environment of the trainer container; the operator adds TUNIX_RUN_NAME, "
        "TUNIX_NAMESPACE, TUNIX_ATTEMPT and, for multi-host runs, the JAX coordinator variables.",
    )
    pod_labels: dict[str, LabelValue] | None = Field(
        None, description="Labels for the Job and pods (e.g. kueue.x-k8s.io/queue-name)."
    )
    pod_annotations: dict[str, str] | None = Field(None, description="Annotations for the Job and pods.")
    suspend: bool = Field(
        False, description="Stop the pods (they checkpoint) and keep the run; false resumes."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run after this long, all attempts."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the pods this long after the run ends; the TunixRun stays."
    )
    retry_policy: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Retries of failed and preempted attempts."
    )
    termination_grace_period_seconds: int = Field(
        120, ge=0, le=86_400, description="Time for the final checkpoint after SIGTERM."
    )

    @model_validator(mode="after")
    def _mode_rules(self) -> TunixRunSpec:
        if self.mode == Mode.TRAIN and self.dataset is None:
            raise ValueError("dataset is required when mode is Train")
        kind = self.dataset.tokenizer.kind if self.dataset is not None else None
        pretrained = self.model.pretrained is not None
        if kind == TokenizerKind.HUGGINGFACE and not (self.dataset.tokenizer.uri or pretrained):
            raise ValueError(
                "dataset.tokenizer.uri is required when kind is huggingface without model.pretrained"
            )
        if pretrained and kind == TokenizerKind.BYTE:
            raise ValueError(
                "model.pretrained needs the model's tokenizer: set dataset.tokenizer.kind to huggingface"
            )
        if self.checkpoint.keep_best and self.evaluation is None:
            raise ValueError("checkpoint.keepBest needs spec.evaluation")
        if self.export.merge_adapters and self.training.lora is None:
            raise ValueError("export.mergeAdapters needs training.lora")
        return self


cel("TunixRunSpec", "has(self.dataset) || self.mode != 'Train'", "dataset is required when mode is Train")
cel(
    "TunixRunSpec",
    "!has(self.dataset) || !has(self.dataset.tokenizer) || self.dataset.tokenizer.kind != 'huggingface' "
    "|| has(self.dataset.tokenizer.uri) || (has(self.model) && has(self.model.pretrained))",
    "dataset.tokenizer.uri is required when kind is huggingface without model.pretrained",
)
cel(
    "TunixRunSpec",
    "!has(self.model) || !has(self.model.pretrained) || !has(self.dataset) "
    "|| (has(self.dataset.tokenizer) && self.dataset.tokenizer.kind != 'byte')",
    "model.pretrained needs the model's tokenizer: set dataset.tokenizer.kind to huggingface",
)
cel(
    "TunixRunSpec",
    "!has(self.checkpoint) || !has(self.checkpoint.keepBest) || !self.checkpoint.keepBest "
    "|| has(self.evaluation)",
    "checkpoint.keepBest needs spec.evaluation",
)
cel(
    "TunixRunSpec",
    "!has(self.export) || !has(self.export.mergeAdapters) || !self.export.mergeAdapters "
    "|| has(self.training.lora)",
    "export.mergeAdapters needs training.lora",
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
    """A Kubernetes condition of the run."""

    type: str = Field(..., description="Running, Restarting, Stalled, Suspended, Succeeded or Failed.")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str | None = Field(
        None, description="CamelCase cause of the last change (e.g. Preempted, InvalidConfig)."
    )
    message: str | None = Field(None, description="Human-readable details of the last change.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339, UTC).")
    observed_generation: int | None = Field(
        None, description="The metadata.generation the condition was set for."
    )


class Progress(OpenModel):
    """Training progress, read from the trainer's progress.json while the run trains."""

    step: int | None = Field(None, description="Last optimizer step completed.")
    total_steps: int | None = Field(None, description="Steps of the run (spec.training.steps).")
    step_of_total: str | None = Field(None, description='"step/totalSteps", for the Step printer column.')
    loss: float | None = Field(None, description="Training loss (mean token cross-entropy) at step.")
    tokens_per_second: float | None = Field(None, description="Training throughput at step, tokens/s.")
    eta_seconds: float | None = Field(None, description="Estimated seconds until the last step.")
    eval_loss: float | None = Field(
        None, description="Latest held-out evaluation loss (spec.evaluation), mean over target tokens."
    )
    eval_step: int | None = Field(None, description="Step of evalLoss.")
    updated_at: str | None = Field(None, description="When the trainer wrote this progress (RFC 3339, UTC).")
    restored_from: int | None = Field(
        None,
        description="Checkpoint step this attempt resumed from (the newest intact one; damaged newer "
        "steps were set aside as <step>.corrupt-<n>); unset when it started from scratch.",
    )
    mfu: float | None = Field(
        None,
        description="Model FLOPs utilisation at step (the benchmark's formula and peak table); absent "
        "where the device's peak is unknown (CPU).",
    )
    attempt: int | None = Field(None, description="The attempt that wrote this progress (TUNIX_ATTEMPT).")
    checkpoint_step: int | None = Field(
        None, description="Newest checkpoint step the trainer knows durable (saved, or restored)."
    )
    checkpoint_time: str | None = Field(
        None, description="When the trainer saw checkpointStep become durable (RFC 3339, UTC)."
    )


class Summary(OpenModel):
    """Results of a finished Train-mode run, from the trainer's summary."""

    final_loss: float | None = Field(None, description="Loss at the last step.")
    best_loss: float | None = Field(None, description="Lowest finite loss recorded.")
    best_step: int | None = Field(None, description="Step of bestLoss.")
    final_eval_loss: float | None = Field(
        None, description="Held-out evaluation loss after the last step (spec.evaluation)."
    )
    best_eval_loss: float | None = Field(None, description="Lowest evaluation loss of the run.")
    best_eval_step: int | None = Field(None, description="Step of bestEvalLoss.")
    total_steps: int | None = Field(None, description="Last step trained.")
    total_tokens: int | None = Field(None, description="Tokens trained on, over all steps and attempts.")
    avg_tokens_per_second: float | None = Field(
        None, description="Mean throughput of the timed steps (each attempt's compiling first step left out)."
    )
    wall_time_seconds: float | None = Field(None, description="Training wall time of all attempts, s.")


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
    """The run's checkpoints."""

    latest_step: int | None = Field(None, description="Step of the newest checkpoint the operator knows of.")
    latest_time: str | None = Field(
        None,
        description="When latestStep became durable (RFC 3339, UTC), as the trainer reported it; also "
        "on the run's pods as the annotation tunix.dev/last-checkpoint-time.",
    )
    uri: str | None = Field(None, description="Checkpoint directory (a path in the pods, or a URI).")
    restored_from: int | None = Field(
        None, description="Checkpoint step the current attempt resumed from (from progress.restoredFrom)."
    )


class AttemptOutcome(enum.StrEnum):
    """How an attempt ended (docs/EXIT_CODES.md has the exit-code classes)."""

    SUCCEEDED = "Succeeded"
    PREEMPTED = "Preempted"
    RETRYABLE = "Retryable"
    FATAL = "Fatal"
    STALLED = "Stalled"
    SUPERSEDED = "Superseded"  # stopped by the operator: suspend, deadline, a failed run


class AttemptRecord(OpenModel):
    """One attempt (one Job) of the run, as the operator saw it."""

    index: int = Field(..., description="Attempt index (the Job is <run>-<index>).")
    start_time: str | None = Field(None, description="When the operator created the attempt's Job.")
    end_time: str | None = Field(None, description="When the operator saw it end; unset while it runs.")
    nodes: list[str] | None = Field(None, description="Nodes the attempt's pods ran on.")
    outcome: AttemptOutcome | None = Field(
        None,
        description="Succeeded, Preempted, Retryable, Fatal, Stalled or Superseded (stopped by the "
        "operator: suspend, deadline); unset while it runs.",
    )
    exit_code: int | None = Field(None, description="The trainer's exit code, when one was seen.")
    reason: str | None = Field(None, description="CamelCase reason of the end (e.g. Evicted, Diverged).")
    restored_from: int | None = Field(
        None, description="Checkpoint step the attempt resumed from; unset when it started from scratch."
    )
    first_step: int | None = Field(None, description="First step the operator saw the attempt report.")
    first_step_time: str | None = Field(None, description="When the trainer reported firstStep.")
    last_step: int | None = Field(None, description="Last step the operator saw the attempt report.")
    last_step_time: str | None = Field(None, description="When the trainer reported lastStep.")
    waited_seconds: float | None = Field(
        None,
        description="Seconds the run waited on purpose before creating this attempt (retry backoff, "
        "suspension): goodput's idle time.",
    )


class EarlierAttempts(OpenModel):
    """The attempts dropped from status.attempts (the oldest), folded into totals."""

    count: int | None = Field(None, description="Attempts no longer listed in status.attempts.")
    productive_seconds: float | None = Field(None, description="Their productive seconds (status.goodput).")
    rework_seconds: float | None = Field(None, description="Their rework seconds.")
    idle_seconds: float | None = Field(None, description="Their idle seconds.")
    steps_lost: int | None = Field(None, description="Steps they trained again after a resume.")
    last_step: int | None = Field(None, description="Furthest step any of them reported.")


class LostSeconds(OpenModel):
    """Time of the run not spent on kept steps, by cause (docs/DESIGN.md, Goodput)."""

    rework: float | None = Field(None, description="Training steps again after a resume.")
    restart: float | None = Field(
        None,
        description="From an attempt's last reported step (or the run's start) to the next reported "
        "step: scheduling, image pull, compile, restore, unreported and final steps.",
    )
    idle: float | None = Field(None, description="Waiting on purpose: retry backoff, suspension.")


class GoodputStatus(OpenModel):
    """What the run's time went to (definition: docs/DESIGN.md, Goodput)."""

    since: str | None = Field(None, description="Start of the accounting: when attempt 0 was created.")
    wall_seconds: float | None = Field(None, description="Seconds from since to the run's end (or now).")
    productive_seconds: float | None = Field(
        None, description="Seconds spent training steps the first time (the steps that were kept)."
    )
    lost_seconds: LostSeconds | None = Field(None, description="The rest of wallSeconds, by cause.")
    steps_lost: int | None = Field(
        None, description="Steps trained again: resumes from before the furthest step reached."
    )
    goodput_percent: float | None = Field(None, description="100 * productiveSeconds / wallSeconds.")


class ModelStatus(OpenModel):
    """The trained model, exported in Hugging Face format."""

    uri: str | None = Field(
        None, description="Directory of the exported model (config.json, model.safetensors, tokenizer files)."
    )


class BenchmarkStatus(OpenModel):
    """Results of a Benchmark-mode run."""

    compile_seconds: float | None = Field(None, description="Seconds to trace and compile the training step.")
    step_time_p50_ms: float | None = Field(None, description="Median step time of the timed steps, ms.")
    step_time_p90_ms: float | None = Field(None, description="90th-percentile step time, ms.")
    step_time_p99_ms: float | None = Field(None, description="99th-percentile step time, ms.")
    steps_per_second: float | None = Field(None, description="Optimizer steps per second, run back to back.")
    tokens_per_second: float | None = Field(None, description="Tokens per second over all devices.")
    tokens_per_second_per_device: float | None = Field(None, description="tokensPerSecond / device count.")
    mfu: float | None = Field(
        None,
        description="Model FLOPs utilisation: model FLOP/s over the devices' dense peak FLOP/s; "
        "absent when the device's peak is unknown.",
    )
    peak_memory_bytes: int | None = Field(
        None, description="Largest peak memory in use on one device, bytes; absent where unreported."
    )


class TunixRunStatus(OpenModel):
    """Observed state of the run, written by the operator."""

    phase: Phase | None = Field(
        None, description="Pending, Running, Restarting, Suspended, Succeeded or Failed."
    )
    message: str | None = Field(
        None, description="Latest human-readable state; on failure, the trainer's error."
    )
    conditions: list[Condition] | None = Field(None, description="The run's conditions, one per type.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation the operator last acted on."
    )
    start_time: str | None = Field(
        None,
        description="When the run started (RFC 3339); reset on resume from suspend, as "
        "activeDeadlineSeconds counts from it.",
    )
    completion_time: str | None = Field(None, description="When the run succeeded or failed (RFC 3339).")
    attempt: int | None = Field(None, description="Index of the current Job (0 first).")
    restarts: int | None = Field(
        None, description="Failed attempts retried so far (at most retryPolicy.maxRestarts)."
    )
    preemptions: int | None = Field(
        None, description="Preempted or evicted attempts resumed so far (at most retryPolicy.maxPreemptions)."
    )
    progress: Progress | None = Field(None, description="Latest training progress.")
    summary: Summary | None = Field(None, description="Results, once a Train-mode run has succeeded.")
    checkpoint: CheckpointStatus | None = Field(
        None, description="Checkpoint directory, newest durable step and time (live), step resumed from."
    )
    attempts: list[AttemptRecord] | None = Field(
        None,
        max_length=20,
        description="The run's attempts, oldest first, at most 20 (older ones are folded into "
        "earlierAttempts).",
    )
    earlier_attempts: EarlierAttempts | None = Field(
        None, description="Attempts dropped from attempts (the oldest), and their goodput totals."
    )
    goodput: GoodputStatus | None = Field(None, description="What the run's time went to (docs/DESIGN.md).")
    model: ModelStatus | None = Field(None, description="The trained model, exported in Hugging Face format.")
    metrics_uri: str | None = Field(
        None, description="URI of metrics.jsonl, one JSON record per logged step."
    )
    provenance: dict[str, str] | None = Field(
        None,
        description="What the run trained with: device kind and count, JAX, Flax, Optax and Orbax "
        "versions, config hash, dataset checksum, parameter count (values as strings).",
    )
    benchmark: BenchmarkStatus | None = Field(None, description="Results of a Benchmark-mode run.")


class ObjectMeta(OpenModel):
    """The parts of a Kubernetes ObjectMeta the operator and trainer read."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class TunixRun(ApiModel):
    api_version: Literal["tunix.dev/v1alpha1"] = API_VERSION
    kind: Literal["TunixRun"] = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TunixRunSpec
    status: TunixRunStatus | None = None

    @model_validator(mode="after")
    def _name_rules(self) -> TunixRun:
        """The CRD's rules on metadata.name (and the API server's on the namespace), see ``names``."""
        problems = []
        if self.metadata.name is not None:
            problems += name_errors(self.metadata.name, hosts=self.spec.accelerator.hosts)
        if self.metadata.generate_name is not None:
            problems += generate_name_errors(self.metadata.generate_name)
        if self.metadata.namespace is not None:
            problems += namespace_errors(self.metadata.namespace)
        if problems:
            raise ValueError("\n".join(problems))
        return self


# Attached to the root of the CRD's schema (metadata.name is readable there).
cel(
    "TunixRun",
    f"self.metadata.name.matches('{SERVICE_NAME_START}') || !has(self.spec.accelerator)"
    " || !has(self.spec.accelerator.hosts) || self.spec.accelerator.hosts == 1",
    MULTI_HOST_NAME_MESSAGE,
)
