"""Names and shapes of what the trainer writes, which the operator reads."""

from __future__ import annotations

METRICS_FILE = "metrics.jsonl"  # one JSON object per optimizer step
PROGRESS_FILE = "progress.json"  # small, rewritten every few seconds while running
SUMMARY_FILE = "summary.json"  # written once at the end of training
BENCHMARK_FILE = "benchmark.json"  # written once at the end of a benchmark
MODEL_DIR = "model"  # the trained model in Hugging Face format, exported at the end of a Train run
ADAPTER_DIR = "adapter"  # a LoRA run's adapters in PEFT format (adapter_config.json, weights)

TERMINATION_LOG = "/dev/termination-log"  # Kubernetes default terminationMessagePath
TERMINATION_MESSAGE_LIMIT = 4096  # kubelet truncates termination messages at 4 KiB

CONFIG_MOUNT_DIR = "/etc/tunix"  # run.yaml is here (a downwardAPI volume of the pod's annotation)
CONFIG_FILE = "run.yaml"
CHECKPOINT_MOUNT_DIR = "/checkpoints"  # the checkpoint volume is mounted here


def join_uri(base: str, name: str) -> str:
    """``base``/``name`` for paths and URIs alike (no double slash)."""
    return base.rstrip("/") + "/" + name.lstrip("/")
