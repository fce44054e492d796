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
from tunix_api.names import MAX_OBJECT_NAME_LENGTH, OBJECT_NAME_PATTERN

# Cross-field rules as CEL, attached to the CRD by the generator. Each entry:
# (rule, message). The pydantic validators below enforce the same rules.
# The API server evaluates every rule at every write of a run, its status patches included, and each
# field a rule reads costs it a copy of the schemas of that field's siblings (kube-apiserver 1.37's
# CEL model): a rule sits on the smallest object it needs, and the test that settles the common case
# comes first (docs/DESIGN.md, "CEL rules").
CEL_RULES: dict[str, list[tuple[str, str]]] = {}


# The name of a Secret, PVC, StorageClass... the run refers to (a DNS-1123 subdomain).
ObjectName = Annotated[
    str, Field(min_length=1, max_length=MAX_OBJECT_NAME_LENGTH, pattern=OBJECT_NAME_PATTERN)
]


def cel(model: str, rule: str, message: str) -> None:
    CEL_RULES.setdefault(model, []).append((rule, message))


class ModelPreset(enum.StrEnum):
    TINY = "tiny"
    M125 = "125m"
    M350 = "350m"
    B1 = "1b"


class PretrainedSpec(ApiModel):
    """A pretrained model in Hugging Face format to start from (fine-tuning)."""

    uri: str = Field(
        ...,
        min_length=1,
        description="A Hugging Face-format model directory: config.json, model.safetensors (or "
        "shards with model.safetensors.index.json) and tokenizer files, at a path or a file://, "
        "s3://, gs:// URI (e.g. on the checkpoint volume), or hf://<org>/<name>[@<revision>] from "
        "the Hugging Face Hub (needs internet; offline it fails with exit 4). The model's shape comes "
        "from config.json; supported: model_type llama (Llama 2/3.x incl. llama3 rope_scaling, "
        "SmolLM2, tied or untied heads). Anything else fails before any weight is downloaded.",
    )


class ModelSpec(ApiModel):
    """Decoder-only transformer. A preset, optionally with dimensions overridden,
    explicit dimensions alone (``preset`` omitted), or a pretrained model (nothing else)."""

    pretrained: PretrainedSpec | None = Field(
        None,
        description="Start from this pretrained model (its config.json gives the shape), instead "
        "of a preset or dimensions, which must then be omitted.",
    )

    preset: ModelPreset | None = Field(
        None,
        description="Named shape: tiny (2 layers of width 128, sized for the byte tokenizer), 125m, "
        "350m (GPT-3 shapes) or 1b (the Llama-3.2-1B shape). Fields set next to it override the "
        "preset's values; without a preset, dModel, nLayers, nHeads and dFf are required.",
    )
    vocab_size: int | None = Field(
        None,
        ge=2,
        le=1_048_576,
        description="Embedding rows. The trainer uses the larger of this (or the preset's) and the "
        "tokenizer's vocabulary, padded up to a multiple of 128.",
    )
    d_model: int | None = Field(
        None,
        ge=8,
        le=65_536,
        description="Hidden (residual stream) size; divisible by nHeads, with an even head "
        "dimension dModel/nHeads (rotary embeddings).",
    )
    n_layers: int | None = Field(
        None, ge=1, le=512, description="Transformer blocks (attention and gated MLP, each pre-normed)."
    )
    n_heads: int | None = Field(None, ge=1, le=1024, description="Query heads of causal self-attention.")
    n_kv_heads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Key/value heads (grouped-query attention); must divide nHeads. Default: the "
        "preset's when nHeads is not overridden, else nHeads (plain multi-head attention).",
    )
    d_ff: int | None = Field(None, ge=8, le=1_048_576, description="Hidden size of the SwiGLU MLP.")
    rope_theta: float | None = Field(
        None,
        gt=0,
        description="Base wavelength of the rotary position embeddings (default 10000; the 1b "
        "preset's is 500000); larger values suit longer sequences. Finite, > 0.",
    )
    norm_eps: float | None = Field(
        None, gt=0, lt=1, description="Epsilon inside every RMSNorm (default 1e-5). In (0, 1)."
    )

    @model_validator(mode="after")
    def _preset_or_dimensions(self) -> ModelSpec:
        if self.pretrained is not None:
            if any(getattr(self, name) is not None for name in _SHAPE_FIELDS):
                raise ValueError("pretrained excludes preset and dimensions (config.json gives the shape)")
            return self
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


# The model's explicit dimensions (each overrides the preset's value).
DIMENSION_FIELDS = (
    "vocab_size",
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "d_ff",
    "rope_theta",
    "norm_eps",
)
_SHAPE_FIELDS = ("preset", *DIMENSION_FIELDS)
cel(
    "ModelSpec",
    "!has(self.pretrained) || !(has(self.preset) || has(self.vocabSize) || has(self.dModel) "
    "|| has(self.nLayers) || has(self.nHeads) || has(self.nKvHeads) || has(self.dFf) "
    "|| has(self.ropeTheta) || has(self.normEps))",
    "pretrained excludes preset and dimensions (config.json gives the shape)",
)
cel(
    "ModelSpec",
    "has(self.pretrained) || has(self.preset) "
    "|| (has(self.dModel) && has(self.nLayers) && has(self.nHeads) && has(self.dFf))",
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
    HUGGINGFACE = "huggingface"


class TokenizerSpec(ApiModel):
    """How the dataset's text becomes token ids."""

    kind: TokenizerKind = Field(
        TokenizerKind.BYTE,
        description="byte (default): the UTF-8 bytes plus bos/eos ids, no file needed; "
        "sentencepiece: the SentencePiece model at uri; huggingface: tokenizer.json (with "
        "tokenizer_config.json: special tokens and the chat template that formats "
        "prompt/completion records) of the model directory at uri, default model.pretrained.uri.",
    )
    uri: str | None = Field(
        None,
        min_length=1,
        description="SentencePiece model file (a path, or a file://, s3://, gs:// URI); required "
        "when kind is sentencepiece. For huggingface: a model directory (or hf://org/name[@rev]).",
    )

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
    """Training data: JSONL, Parquet or ArrayRecord shards, read and tokenized as training consumes them."""

    uri: str = Field(
        ...,
        min_length=1,
        description="The dataset (a path, or a file://, s3://, gs:// URI): one file, a directory of "
        "shards or a glob of them (sorted by name). JSONL shards (.jsonl, or .jsonl.gz/.jsonl.zst) "
        'hold one UTF-8 JSON record per line: {"text": ...}, or {"prompt": ..., "completion": ...} '
        "(loss on the completion only); Parquet shards (.parquet) have those columns; ArrayRecord "
        "shards (.array_record) hold one such UTF-8 JSON object per record. Blank lines are "
        "skipped, extra fields ignored; a malformed record fails the run (exit 4).",
    )
    format: DatasetFormat = Field(
        DatasetFormat.AUTO,
        description="auto (default) takes the kind of the first record; text or promptCompletion "
        "require that kind. Every record must be of the one kind.",
    )
    tokenizer: TokenizerSpec = Field(
        default_factory=TokenizerSpec, description="How text becomes token ids (default: bytes)."
    )
    packing: bool = Field(
        True,
        description="true (default): concatenate the documents and cut them into rows of seqLen "
        "tokens, no padding; false: one document per row, truncated or padded to seqLen.",
    )
    shuffle: bool = Field(
        True,
        description="Shuffle the documents every epoch with a generator seeded by training.seed and "
        "the epoch (default true); false keeps file order.",
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes per host that read and tokenize records ahead of training "
        "(default 0: one thread of the trainer does it). Worth it for a Hugging Face or SentencePiece "
        "tokenizer on spare cores; the batches are the same for any value.",
    )


class Dtype(enum.StrEnum):
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class LrDecay(enum.StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class LoraTarget(enum.StrEnum):
    """A projection of every block, by its Hugging Face (and PEFT) module name."""

    Q_PROJ = "q_proj"
    K_PROJ = "k_proj"
    V_PROJ = "v_proj"
    O_PROJ = "o_proj"
    GATE_PROJ = "gate_proj"
    UP_PROJ = "up_proj"
    DOWN_PROJ = "down_proj"


class LoraSpec(ApiModel):
    """Low-rank adapters (LoRA): only they are trained, the model's own weights stay frozen."""

    rank: int = Field(
        8,
        ge=1,
        le=4096,
        description="Rank r of every adapter (default 8): each targeted projection W (in x out) gets "
        "W + (alpha/r) A B with A in x r and B r x out; at most the smaller side of every targeted "
        "projection (checked against the model's shape when the trainer starts, exit 2).",
    )
    alpha: float = Field(
        16.0,
        gt=0,
        le=1_000_000,
        description="Scale numerator: the adapters' output is multiplied by alpha/rank (default 16).",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapters' input while training (default 0), as PEFT's lora_dropout; "
        "never at evaluation. In [0, 1).",
    )
    target_modules: list[LoraTarget] = Field(
        default_factory=lambda: [LoraTarget.Q_PROJ, LoraTarget.V_PROJ],
        min_length=1,
        max_length=7,
        description="Projections that get adapters, in every block (default q_proj and v_proj, as "
        "PEFT for Llama): q_proj, k_proj, v_proj, o_proj (attention), gate_proj, up_proj, down_proj "
        "(MLP). Each at most once.",
    )

    @model_validator(mode="after")
    def _unique_targets(self) -> LoraSpec:
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError("lora.targetModules must name each module at most once")
        return self


cel(
    "LoraSpec",
    "!has(self.targetModules) || self.targetModules.all(m, self.targetModules.exists_one(x, x == m))",
    "lora.targetModules must name each module at most once",
)


class TrainingSpec(ApiModel):
    """Optimisation: how long, the batch shape, AdamW and its learning-rate schedule."""

    steps: int = Field(
        ..., ge=1, le=100_000_000, description="Optimizer steps to train; the run succeeds after the last."
    )
    batch_size: int = Field(
        8,
        ge=1,
        le=1_000_000,
        description="Global sequences per optimizer step, over all hosts and devices (default 8); "
        "divisible by gradAccumSteps.",
    )
    seq_len: int = Field(
        256, ge=8, le=1_048_576, description="Tokens per sequence: the context length (default 256)."
    )
    grad_accum_steps: int = Field(
        1,
        ge=1,
        le=4096,
        description="Micro-batches per optimizer step (default 1): the gradients of gradAccumSteps "
        "micro-batches of batchSize/gradAccumSteps sequences are accumulated before one update, "
        "trading time for memory.",
    )
    learning_rate: float = Field(
        3e-4, gt=0, le=10, description="Peak AdamW learning rate, reached after warm-up (default 3e-4)."
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps of linear warm-up from learningRate/warmupSteps up to learningRate "
        "(default 0: none); at most steps.",
    )
    decay: LrDecay = Field(
        LrDecay.COSINE,
        description="Schedule after warm-up: cosine (default) or linear down to minLrRatio * "
        "learningRate at the last step, or constant.",
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Final learning rate as a fraction of learningRate (default 0.1)."
    )
    weight_decay: float = Field(
        0.1,
        ge=0,
        description="AdamW decoupled weight decay (default 0.1), on matrices only (not norms or "
        "biases); 0 disables. Finite, >= 0.",
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW first-moment decay (default 0.9). In [0, 1).")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW second-moment decay (default 0.95). In [0, 1).")
    eps: float = Field(
        1e-8, gt=0, description="AdamW epsilon in the update's denominator (default 1e-8). Finite, > 0."
    )
    grad_clip_norm: float = Field(
        1.0,
        ge=0,
        description="Clip the gradients to this global L2 norm before each update (default 1.0); "
        "0 disables clipping. Finite, >= 0.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Seed of parameter initialisation and data order (default 0): the same seed and "
        "spec give the same losses, also across resumes.",
    )
    compute_dtype: Dtype = Field(
        Dtype.BFLOAT16, description="Activations and matmuls: bfloat16 (default) or float32."
    )
    param_dtype: Dtype = Field(
        Dtype.FLOAT32, description="Parameters and optimizer state: float32 (default) or bfloat16."
    )
    lora: LoraSpec | None = Field(
        None,
        description="Fine-tune with low-rank adapters (LoRA) instead of all weights: only the adapters "
        "are trained and have optimizer state; checkpoints hold them (the frozen weights come from "
        "the model again on resume); the export is a PEFT adapter (and, with "
        "export.mergeAdapters, the merged model). The frozen weights are held in paramDtype "
        "(bfloat16 halves them), the adapters and their optimizer state in float32.",
    )

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingSpec:
        if self.batch_size % self.grad_accum_steps:
            raise ValueError("batchSize must be divisible by gradAccumSteps")
        if self.warmup_steps > self.steps:
            raise ValueError("warmupSteps must not exceed steps")
        return self


cel(
    "TrainingSpec",
    "self.gradAccumSteps == 1 || self.batchSize % self.gradAccumSteps == 0",
    "batchSize must be divisible by gradAccumSteps",
)
cel(
    "TrainingSpec",
    "self.warmupSteps == 0 || self.warmupSteps <= self.steps",
    "warmupSteps must not exceed steps",
)

RESUME_PATTERN = r"^(latest|none|[0-9]+)$"


class ReclaimPolicy(enum.StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class CheckpointVolumeSpec(ApiModel):
    """Where checkpoints live in the cluster: an existing claim, or a PVC the operator creates."""

    claim_name: ObjectName | None = Field(
        None,
        description="Mount this existing PersistentVolumeClaim of the run's namespace (the operator "
        "never deletes it). Exactly one of claimName and size.",
    )
    size: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$",
        description="Create a PersistentVolumeClaim <name>-checkpoints of this size (a quantity, "
        "e.g. 50Gi) for the run. Exactly one of claimName and size.",
    )
    storage_class_name: ObjectName | None = Field(
        None, description="StorageClass of the created PVC; default: the cluster's default."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        "ReadWriteOnce",
        description="Access mode of the created PVC: ReadWriteOnce (default), ReadWriteMany (for "
        "multi-host runs whose pods land on several nodes) or ReadWriteOncePod.",
    )
    reclaim_policy: ReclaimPolicy = Field(
        ReclaimPolicy.RETAIN,
        description="Retain (default) keeps the created PVC when the TunixRun is deleted; Delete "
        "deletes it with the run.",
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
    """When and where the trainer saves checkpoints (Train mode) and where it resumes from."""

    uri: str | None = Field(
        None,
        description="Checkpoint directory (a path, or an s3://, gs://, file:// URI). Default: in a "
        "cluster /checkpoints, the volume below (without one an emptyDir, lost with the pod); "
        "locally <artifacts>/checkpoints.",
    )
    save_interval_steps: int = Field(
        100,
        ge=1,
        description="Save every N steps (default 100), and also after the last step and on SIGTERM.",
    )
    max_to_keep: int = Field(
        3, ge=1, le=1000, description="Keep the newest K checkpoints (default 3); older ones are deleted."
    )
    resume: str = Field(
        "latest",
        pattern=RESUME_PATTERN,
        description="Where training starts: latest (default: the newest checkpoint, else step 0), "
        "none (step 0), or a step number. Read by tunix-rt run --local and tunix-train; the "
        "operator starts every attempt with latest.",
    )
    export_every_saves: int | None = Field(
        None,
        ge=1,
        description="Also export the model in Hugging Face format to <artifacts>/model/ at every "
        "Nth checkpoint save (replacing the previous export). The export after the last step "
        "always happens.",
    )
    keep_best: bool = Field(
        False,
        description="Also keep the checkpoint of the lowest evaluation loss (in <uri>/best, beside "
        "the newest maxToKeep) and export it at the end instead of the last step's model "
        "(default false). Needs spec.evaluation.",
    )
    volume: CheckpointVolumeSpec | None = Field(
        None,
        description="A PersistentVolumeClaim mounted at /checkpoints in the trainer pods, so "
        "checkpoints outlive pods; unused by the trainer when uri is set.",
    )


class EvaluationSpec(ApiModel):
    """Held-out evaluation: the mean loss over target tokens of data the model does not train on."""

    dataset_uri: str | None = Field(
        None,
        min_length=1,
        description="Evaluation data, as dataset.uri takes it (JSONL, Parquet or ArrayRecord: one file, "
        "a directory or a glob; a path, or a file://, s3://, gs:// URI), its records of the training "
        "dataset's kind, read with its tokenizer, packing and seqLen. Exactly one of datasetUri and "
        "holdOutFraction.",
    )
    hold_out_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Evaluate on this fraction of the training dataset's records instead, held out "
        "of training (a deterministic split by record: the same records for a given file and seed, "
        "never also trained on). In (0, 1).",
    )
    every_steps: int | None = Field(
        None,
        ge=1,
        description="Evaluate every N optimizer steps; evaluation also runs once after the last step "
        "(default: only then).",
    )
    max_batches: int | None = Field(
        None,
        ge=1,
        description="Evaluate at most this many batches (of batchSize / gradAccumSteps sequences) "
        "each time; default: the whole evaluation set.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvaluationSpec:
        if (self.dataset_uri is None) == (self.hold_out_fraction is None):
            raise ValueError("evaluation needs exactly one of datasetUri or holdOutFraction")
        return self


cel(
    "EvaluationSpec",
    "has(self.datasetUri) != has(self.holdOutFraction)",
    "evaluation needs exactly one of datasetUri or holdOutFraction",
)


class ExportSpec(ApiModel):
    """What the trainer exports at the end of a Train run (to <artifacts>/model/)."""

    merge_adapters: bool = Field(
        False,
        description="With training.lora: also write the model with the adapters merged into its "
        "weights, in Hugging Face format, to <artifacts>/model/ (default false: the PEFT adapter "
        "in <artifacts>/adapter/ only). Needs training.lora.",
    )


class StorageSpec(ApiModel):
    """Object storage for this run's artifacts (metrics.jsonl, progress.json, summary.json)."""

    uri: str | None = Field(
        None,
        min_length=1,
        description="Artifact directory (s3://, gs://, file://). Default: the operator's base URI "
        "+ <namespace>/<name>; ./artifacts/<name> locally.",
    )
    endpoint_url: str | None = Field(
        None,
        min_length=1,
        description="Endpoint of an S3-compatible store (e.g. http://minio.minio:9000) for s3:// "
        "URIs; default: AWS.",
    )
    region: str | None = Field(None, min_length=1, description="Region of the S3 bucket, for s3:// URIs.")
    credentials_secret: ObjectName | None = Field(
        None,
        description="Secret whose keys (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) become the "
        "trainer's environment and the operator's credentials; default: the operator's secret.",
    )


class MetricsSpec(ApiModel):
    """How often the trainer records metrics (metrics.jsonl) and progress (progress.json)."""

    log_every_steps: int = Field(
        1, ge=1, description="Write a metrics record every N steps (default 1); the last step always."
    )
    flush_every_steps: int = Field(
        50,
        ge=1,
        description="Make buffered records durable every N steps (default 50; one object per flush "
        "on object storage); every checkpoint flushes too.",
    )
    progress_interval_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Rewrite progress.json (shown in status.progress) at most this often, in "
        "seconds (default 5; 0: at every logged step).",
    )


class DeviceKind(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"


class DeviceSpec(ApiModel):
    """Which JAX backend the trainer runs on."""

    kind: DeviceKind = Field(
        DeviceKind.AUTO,
        description="auto (default) picks the best backend present (tpu, then gpu, then cpu); cpu, "
        "gpu or tpu require it, and the trainer exits 5 (DeviceUnavailable, retried) without it.",
    )


class BenchmarkSpec(ApiModel):
    """Benchmark mode: timed training steps of the configured model; no checkpoints."""

    warmup_steps: int = Field(
        5, ge=0, le=100_000, description="Untimed steps after compilation, before timing (default 5)."
    )
    measure_steps: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="Timed steps (default 20): status.benchmark reports their step-time "
        "percentiles and throughput.",
    )
    profile: bool = Field(
        False,
        description="Capture a jax.profiler trace of profileSteps further steps into "
        "<artifacts>/profile (default false).",
    )
    profile_steps: int = Field(5, ge=1, le=1000, description="Steps traced when profile is true (default 5).")
    synthetic_data: bool = Field(
        True,
        description="Random tokens over the model's real vocabulary, the tokenizer's ids (default "
        "true; the padded rows are computed but masked out of the loss); false: batches from spec.dataset.",
    )


Positive = Annotated[int, Field(ge=1)]
