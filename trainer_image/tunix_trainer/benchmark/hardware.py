"""Peak FLOP/s per accelerator and what the host can tell about its devices (no JAX import).

Peaks are dense (no structured sparsity) matmul figures from vendor datasheets, per device as
JAX counts devices (one GPU, one TPU chip). ``float32`` on NVIDIA GPUs is the TF32 tensor-core
peak, which XLA uses for float32 matmuls at JAX's default precision; TPUs have no float32 entry.
Devices are matched on ``device.device_kind`` by case-insensitive substrings, most specific first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# (substrings of device_kind that must all appear, short name, {dtype: dense peak FLOP/s})
PEAK_FLOPS: tuple[tuple[tuple[str, ...], str, dict[str, float]], ...] = (
    (("h200", "nvl"), "H200 NVL", {"bfloat16": 835.5e12, "float32": 417.5e12}),
    (("h200",), "H200 SXM", {"bfloat16": 989.4e12, "float32": 494.7e12}),  # also GH200
    (("h100", "pcie"), "H100 PCIe", {"bfloat16": 756.5e12, "float32": 378.0e12}),
    (("h100", "nvl"), "H100 NVL", {"bfloat16": 835.5e12, "float32": 417.5e12}),
    (("h100",), "H100 SXM", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    (("h800",), "H800 SXM", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    (("a100",), "A100", {"bfloat16": 312e12, "float32": 156e12}),
    (("l40s",), "L40S", {"bfloat16": 362.05e12, "float32": 183.2e12}),
    (("l40",), "L40", {"bfloat16": 181.05e12, "float32": 90.5e12}),
    (("l4",), "L4", {"bfloat16": 121e12, "float32": 60e12}),
    (("tpu", "v6", "lite"), "TPU v6e", {"bfloat16": 918e12}),
    (("tpu", "v6e"), "TPU v6e", {"bfloat16": 918e12}),
    (("tpu", "v5", "lite"), "TPU v5e", {"bfloat16": 197e12}),
    (("tpu", "v5e"), "TPU v5e", {"bfloat16": 197e12}),
    (("tpu", "v5p"), "TPU v5p", {"bfloat16": 459e12}),
    (("tpu", "v5"), "TPU v5p", {"bfloat16": 459e12}),
    (("tpu", "v4"), "TPU v4", {"bfloat16": 275e12}),
)


@dataclass(frozen=True)
class PeakLookup:
    """Peak FLOP/s of one device for a dtype, or ``None`` with the reason."""

    flops: float | None
    matched: str | None
    note: str | None = None


def peak_flops(device_kind: str, dtype: str, platform: str | None = None) -> PeakLookup:
    """Dense peak FLOP/s of one ``device_kind`` device computing in ``dtype`` (see module doc)."""
    if (platform or "").lower() == "cpu" or device_kind.strip().lower() == "cpu":
        return PeakLookup(None, None, "no peak FLOP/s for CPU devices: MFU not reported")
    kind = device_kind.lower()
    for needles, name, peaks in PEAK_FLOPS:
        if all(n in kind for n in needles):
            if dtype not in peaks:
                return PeakLookup(None, name, f"no {dtype} peak known for {name}: MFU not reported")
            return PeakLookup(peaks[dtype], name)
    return PeakLookup(None, None, f"unknown device kind {device_kind!r}: MFU not reported")


@dataclass(frozen=True)
class DeviceInfo:
    """What the benchmark reports about the devices it ran on."""

    platform: str
    kind: str
    count: int
    local_count: int
    process_count: int


def describe_devices(
    devices: Sequence[Any], local_devices: Sequence[Any] | None = None, process_count: int = 1
) -> DeviceInfo:
    """Platform, kind and counts of ``devices`` (JAX devices or anything with the same attributes)."""
    if not devices:
        raise ValueError("no devices")
    kinds = sorted({str(d.device_kind) for d in devices})
    platforms = sorted({str(d.platform) for d in devices})
    return DeviceInfo(
        platform=",".join(platforms),
        kind=",".join(kinds),
        count=len(devices),
        local_count=len(local_devices) if local_devices is not None else len(devices),
        process_count=process_count,
    )


def peak_memory_bytes(devices: Iterable[Any]) -> int | None:
    """Largest ``peak_bytes_in_use`` over ``devices``; ``None`` where the backend has no statistics."""
    peaks = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except (AttributeError, NotImplementedError, RuntimeError):
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None
