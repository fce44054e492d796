"""The training part of a TunixRun spec: what the trainer reads.

Every field is camelCase on the wire. Cross-field rules are written twice on
purpose: as pydantic validators (the trainer and the local run) and as CEL
``x-kubernetes-validations`` (the API server), see ``tunix_api.crd``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tunix_api.base import ApiModel

# Cross-field rules as CEL, attached to the CRD by the generator. Each entry:
# (rule, message). The pydantic validators below enforce the same rules.
CEL_RULES: dict[str, list[tuple[str, str]]] = {}


def cel(model: str, rule: str, message: str) -> None:
    CEL_RULES.setdefault(model, []).append((rule, message))


class ModelPreset(enum.StrEnum):
    TINY = "tiny"
    M125 = "125m"
    M350 = "350m"
    B1 = "1b"


class ModelSpec(ApiModel):
    """Decoder-only transformer. A preset, optionally with dimensions overridden,
    or explicit dimensions alone (``preset`` omitted)."""

    preset: ModelPreset | None = Field(None, description="Named shape: tiny, 125m, 350m or 1b.")
    vocab_size: int | None = Field(
        None, ge=2, le=1_048_576, description="Vocabulary; padded to a multiple of 128."
    )
    d_model: int | None = Field(None, ge=8, le=65_536, description="Hidden size.")
    n_layers: int | None = Field(None, ge=1, le=512)
    n_heads: int | None = Field(None, ge=1, le=1024)
    n_kv_heads: int | None = Field(
        None, ge=1, le=1024, description="Key/value heads (grouped-query attention)."
    )
    d_ff: int | None = Field(None, ge=8, le=1_048_576, description="Gated-MLP hidden size.")
    rope_theta: float | None = Field(None, gt=0)
    norm_eps: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _preset_or_dimensions(self) -> ModelSpec:
        if self.preset is None:
            missing = [
                name
                for name, value in (
                    ("dModel", self.d_model),
                    ("nLayers", self.n_layers),
                    ("nHeads", self.n_heads),
                    ("dFf", self.d_ff),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    "without a preset, dModel, nLayers, nHeads and dFf are required "
                    f"(missing: {', '.join(missing)})"
                )
        if self.d_model is not None and self.n_heads is not None and self.d_model % self.n_heads:
            raise ValueError("dModel must be divisible by nHeads")
        if self.n_kv_heads is not None and self.n_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError("nHeads must be divisible by nKvHeads")
        return self


cel(
    "ModelSpec",
    "has(self.preset) || (has(self.dModel) && has(self.nLayers) && has(self.nHeads) && has(self.dFf))",
    "without a preset, dModel, nLayers, nHeads and dFf are required",
)
cel(
    "ModelSpec",
    "!has(self.dModel) || !has(self.nHeads) || self.dModel % self.nHeads == 0",
    "dModel must be divisible by nHeads",
)
cel(
    "ModelSpec",
    "!has(self.nKvHeads) || !has(self.nHeads) || self.nHeads % self.nKvHeads == 0",
    "nHeads must be divisible by nKvHeads",
)


class TokenizerKind(enum.StrEnum):
    BYTE = "byte"
    SENTENCEPIECE = "sentencepiece"


class TokenizerSpec(ApiModel):
    kind: TokenizerKind = Field(TokenizerKind.BYTE, description="byte (default) or sentencepiece.")
    uri: str | None = Field(None, min_length=1, description="SentencePiece model file (any fsspec URI).")

    @model_validator(mode="after")
    def _uri_for_sentencepiece(self) -> TokenizerSpec:
        if self.kind == TokenizerKind.SENTENCEPIECE and not self.uri:
            raise ValueError("tokenizer.uri is required when kind is sentencepiece")
        return self


cel(
    "TokenizerSpec",
    "self.kind != 'sentencepiece' || has(self.uri)",
    "tokenizer.uri is required when kind is sentencepiece",
)


class DatasetFormat(enum.StrEnum):
    AUTO = "auto"
    TEXT = "text"
    PROMPT_COMPLETION = "promptCompletion"


class DatasetSpec(ApiModel):
    uri: str = Field(
        ...,
        min_length=1,
        description="JSONL file (file://, s3://, gs:// or a path); records {text} or {prompt, completion}.",
    )
    format: DatasetFormat = Field(DatasetFormat.AUTO, description="auto detects from the first record.")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    packing: bool = Field(True, description="Pack several documents into each sequence.")
    shuffle: bool = Field(True, description="Shuffle documents every epoch, seeded by training.seed.")


class Dtype(enum.StrEnum):
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class LrDecay(enum.StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class TrainingSpec(ApiModel):
    steps: int = Field(..., ge=1, le=100_000_000, description="Optimizer steps to train.")
    batch_size: int = Field(8, ge=1, le=1_000_000, description="Global sequences per optimizer step.")
    seq_len: int = Field(256, ge=8, le=1_048_576, description="Tokens per sequence.")
    grad_accum_steps: int = Field(1, ge=1, le=4096, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(3e-4, gt=0, le=10)
    warmup_steps: int = Field(0, ge=0)
    decay: LrDecay = Field(LrDecay.COSINE, description="Schedule after warm-up.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate / peak.")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip_norm: float = Field(1.0, ge=0, description="Global-norm clip; 0 disables.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    compute_dtype: Dtype = Field(Dtype.BFLOAT16, description="Activations and matmuls.")
    param_dtype: Dtype = Field(Dtype.FLOAT32, description="Parameters and optimizer state.")

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingSpec:
        if self.batch_size % self.grad_accum_steps:
            raise ValueError("batchSize must be divisible by gradAccumSteps")
        if self.warmup_steps > self.steps:
            raise ValueError("warmupSteps must not exceed steps")
        return self


cel(
    "TrainingSpec",
    "self.batchSize % self.gradAccumSteps == 0",
    "batchSize must be divisible by gradAccumSteps",
)
cel("TrainingSpec", "self.warmupSteps <= self.steps", "warmupSteps must not exceed steps")

RESUME_PATTERN = r"^(latest|none|[0-9]+)$"


class ReclaimPolicy(enum.StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class CheckpointVolumeSpec(ApiModel):
    """Where checkpoints live in the cluster: an existing claim, or a PVC the operator creates."""

    claim_name: str | None = Field(None, min_length=1, description="Use this existing PersistentVolumeClaim.")
    size: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$",
        description="Create a PVC of this size (e.g. 50Gi).",
    )
    storage_class_name: str | None = Field(None, min_length=1)
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = "ReadWriteOnce"
    reclaim_policy: ReclaimPolicy = Field(
        ReclaimPolicy.RETAIN, description="Delete or keep the created PVC when the TunixRun is deleted."
    )

    @model_validator(mode="after")
    def _claim_or_size(self) -> CheckpointVolumeSpec:
        if (self.claim_name is None) == (self.size is None):
            raise ValueError("checkpoint.volume needs exactly one of claimName or size")
        return self


cel(
    "CheckpointVolumeSpec",
    "has(self.claimName) != has(self.size)",
    "checkpoint.volume needs exactly one of claimName or size",
)


class CheckpointSpec(ApiModel):
    uri: str | None = Field(
        None,
        description="Checkpoint directory (path or URI). Default: the mounted volume in a cluster, "
        "./artifacts/<run>/checkpoints locally.",
    )
    save_interval_steps: int = Field(100, ge=1, description="Save every N steps (and at the end).")
    max_to_keep: int = Field(3, ge=1, le=1000, description="Keep the last K checkpoints.")
    resume: str = Field("latest", pattern=RESUME_PATTERN, description="latest, none, or a step number.")
    volume: CheckpointVolumeSpec | None = Field(None, description="Cluster volume for checkpoints.")


class StorageSpec(ApiModel):
    """Object storage for this run's artifacts (metrics.jsonl, progress.json, summary.json)."""

    uri: str | None = Field(
        None,
        min_length=1,
        description="Artifact directory (s3://, gs://, file://). Default: the operator's base URI "
        "+ <namespace>/<name>; ./artifacts/<name> locally.",
    )
    endpoint_url: str | None = Field(None, min_length=1, description="S3-compatible endpoint.")
    region: str | None = Field(None, min_length=1)
    credentials_secret: str | None = Field(
        None,
        min_length=1,
        description="Secret whose keys (e.g. AWS_ACCESS_KEY_ID) become the trainer's environment.",
    )


class MetricsSpec(ApiModel):
    log_every_steps: int = Field(1, ge=1, description="Write a metrics record every N steps.")
    flush_every_steps: int = Field(
        50, ge=1, description="Make buffered records durable every N steps (one object per flush on S3)."
    )
    progress_interval_seconds: float = Field(
        5.0, ge=0, le=3600, description="Rewrite progress.json at most this often."
    )


class DeviceKind(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"


class DeviceSpec(ApiModel):
    kind: DeviceKind = Field(DeviceKind.AUTO, description="auto picks the best available backend.")


class BenchmarkSpec(ApiModel):
    warmup_steps: int = Field(5, ge=0, le=100_000, description="Steps run before timing (compile excluded).")
    measure_steps: int = Field(20, ge=1, le=1_000_000, description="Timed steps.")
    profile: bool = Field(False, description="Capture a jax.profiler trace of a window of measured steps.")
    profile_steps: int = Field(5, ge=1, le=1000)
    synthetic_data: bool = Field(True, description="Random tokens at the model's full vocabulary.")


Positive = Annotated[int, Field(ge=1)]
