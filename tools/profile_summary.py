#!/usr/bin/env python3
"""Where device time goes in a ``jax.profiler`` trace (e.g. ``tunix-bench --profile``).

    python tools/profile_summary.py ARTIFACTS/profile [--plane /device:GPU:0] [--top 25]

Reads every ``*.xplane.pb`` under the directory with JAX's own ``jax.profiler.ProfileData`` (no
TensorBoard needed) and prints, for each device plane: the traced span, the summed kernel time
and the busy fraction, then the top kernels and the top XLA ops by summed time, with counts and
shares, and totals per kernel class (GEMM, attention, fusion, copy, reduction...). Kernel time on
several streams can overlap, so the busy fraction is an upper bound on utilisation.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Kernel-name patterns -> class, first match wins (cuBLAS/cuDNN/XLA kernel names on NVIDIA GPUs).
KERNEL_CLASSES: tuple[tuple[str, str], ...] = (
    (r"flash|fmha|sdpa|cudnn.*attn|attention", "attention (cuDNN/flash)"),
    (r"gemm|cutlass|cublas|xmma|sm90_|nvjet|wgmma|matmul|triton_gemm|__triton_gemm", "GEMM"),
    (r"reduce|reduction|row_reduction|column_reduction", "reduction fusion"),
    (r"memcpy|memset|copy|transpose", "copy/transpose"),
    (r"loop_|fusion|input_", "elementwise fusion"),
)


@dataclass
class Totals:
    """Summed duration and count per name."""

    nanos: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, name: str, duration_ns: float) -> None:
        self.nanos[name] += duration_ns
        self.count[name] += 1

    @property
    def total(self) -> float:
        return sum(self.nanos.values())

    def top(self, n: int) -> list[tuple[str, float, int]]:
        ranked = sorted(self.nanos.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return [(name, ns, self.count[name]) for name, ns in ranked]


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for pattern, label in KERNEL_CLASSES:
        if re.search(pattern, lowered):
            return label
    return "other"


def xplane_files(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True))


def summarize_plane(plane, top: int) -> list[str]:
    """The report lines for one device plane."""
    kernels, ops, classes = Totals(), Totals(), Totals()
    first, last = float("inf"), 0.0
    for line in plane.lines:
        is_ops = line.name == "XLA Ops"
        is_stream = line.name.startswith("Stream")
        if not (is_ops or is_stream):
            continue
        for event in line.events:
            if is_ops:
                ops.add(event.name, event.duration_ns)
                continue
            kernels.add(event.name, event.duration_ns)
            classes.add(kernel_class(event.name), event.duration_ns)
            first, last = min(first, event.start_ns), max(last, event.end_ns)
    if not kernels.nanos:
        return [f"{plane.name}: no kernel events"]
    span = last - first
    busy = kernels.total
    out = [
        f"== {plane.name}",
        f"traced span {span / 1e6:.2f} ms, summed kernel time {busy / 1e6:.2f} ms "
        f"({100 * busy / span:.1f}% busy), {sum(kernels.count.values())} kernels",
        "",
        "-- by kernel class",
    ]
    out += [
        f"{100 * ns / busy:6.1f}%  {ns / 1e6:10.3f} ms  {c:6d}  {name}" for name, ns, c in classes.top(top)
    ]
    out += ["", f"-- top {top} kernels (share of kernel time, ms, count, name)"]
    out += [
        f"{100 * ns / busy:6.1f}%  {ns / 1e6:10.3f} ms  {c:6d}  {name[:140]}"
        for name, ns, c in kernels.top(top)
    ]
    if ops.nanos:
        out += ["", f"-- top {top} XLA ops"]
        out += [
            f"{100 * ns / ops.total:6.1f}%  {ns / 1e6:10.3f} ms  {c:6d}  {name[:140]}"
            for name, ns, c in ops.top(top)
        ]
    return out


def summarize(paths: Iterable[str], plane_filter: str, top: int) -> list[str]:
    from jax.profiler import ProfileData

    out: list[str] = []
    for path in paths:
        data = ProfileData.from_file(path)
        out.append(f"# {path}")
        planes = [p for p in data.planes if plane_filter in p.name]
        if not planes:
            out.append(f"no plane matching {plane_filter!r}; planes: {[p.name for p in data.planes]}")
        for plane in planes:
            out += summarize_plane(plane, top)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="A jax.profiler trace directory (searched recursively).")
    parser.add_argument("--plane", default="/device:", help="Plane-name substring (default: all devices).")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    paths = xplane_files(args.directory)
    if not paths:
        print(f"no *.xplane.pb under {args.directory}", file=sys.stderr)
        return 1
    print("\n".join(summarize(paths, args.plane, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
