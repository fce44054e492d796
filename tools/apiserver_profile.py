#!/usr/bin/env python3
"""Where kube-apiserver's CPU went, from a Go CPU profile (``/debug/pprof/profile``).

    python tools/apiserver_profile.py PROFILE.pprof [--json]

e.g. the profile that ``tools/bench_operator.py --apiserver-profile`` takes during a burst. Reads the
profile with ``go tool pprof -raw`` and gives each sample to the first class below whose pattern one of
its stack frames matches (the request kinds first, then the machinery around them), with seconds and
shares. The classes are by function name, so they tell which kind of request, not whose.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from collections.abc import Iterator

# (class, pattern of a frame), first match wins.
CLASSES: tuple[tuple[str, str], ...] = (
    ("custom resource status write (TunixRun /status)", r"customresource\.\(\*StatusREST\)\.Update"),
    ("custom resource create (TunixRun)", r"crdHandler\)\.serveResource.*CreateResource"),
    ("custom resource update/patch", r"crdHandler\)\.serveResource.*(UpdateResource|PatchResource)"),
    ("built-in create (Job, Event, Pod)", r"restfulCreateResource|handlers\.CreateResource"),
    ("built-in update/patch (Pod status)", r"restfulUpdateResource|restfulPatchResource"),
    ("list/get", r"ListResource|GetResource"),
    ("watch: etcd events decoded", r"etcd3\.\(\*watchChan\)"),
    ("watch: events sent", r"WatchServer|cacher\.\(\*cacheWatcher\)|cacher\.\(\*Cacher\)\.dispatch"),
    ("client certificate verified", r"x509\.\(\*Authenticator\)\.AuthenticateRequest"),
    ("bearer token authenticated (cached)", r"bearertoken\.\(\*Authenticator\)\.AuthenticateRequest"),
    ("RBAC authorization", r"rbac\.\(\*RBACAuthorizer\)\.Authorize"),
    ("audit log", r"plugin/pkg/audit"),
    ("Go garbage collector", r"runtime\.(gcBgMarkWorker|gcAssist|bgsweep|bgscavenge)"),
)
# Frames counted wherever they are (they overlap the classes above).
ACROSS: tuple[tuple[str, str], ...] = (
    ("CEL validation rules", r"cel\.\(\*Validator\)\.Validate"),
    ("managed fields", r"managedfields/internal\.\(\*FieldManager\)\.Update"),
)


def samples(raw: str) -> Iterator[tuple[int, list[str]]]:
    """(CPU nanoseconds, frames innermost first) of each sample of a ``go tool pprof -raw`` listing."""
    head, _, tail = raw.partition("\nLocations\n")
    locations = tail.partition("\nMappings\n")[0]
    # A location's first line names its function; the lines under it without an id, those inlined there.
    location = re.compile(r"^\s*(\d+): 0x[0-9a-f]+ M=\d+ (.*(?:\n\s+[^\d\s].*)*)", re.M)
    frames = {m.group(1): m.group(2) for m in location.finditer(locations)}
    for m in re.finditer(r"^\s+\d+\s+(\d+): ([\d ]+)$", head, re.M):
        yield int(m.group(1)), [frames.get(i, "") for i in m.group(2).split()]


def raw_profile(path: str) -> str:
    return subprocess.run(
        ["go", "tool", "pprof", "-raw", path], capture_output=True, text=True, check=True
    ).stdout


def classify(raw: str) -> dict[str, float]:
    """CPU seconds per class (and ``other``, ``total``, and the ``ACROSS`` frames)."""
    seconds: collections.Counter[str] = collections.Counter()
    patterns = [(name, re.compile(p)) for name, p in CLASSES]
    across = [(name, re.compile(p)) for name, p in ACROSS]
    for nanoseconds, stack in samples(raw):
        text = "\n".join(stack)
        seconds["total"] += nanoseconds
        seconds[next((name for name, p in patterns if p.search(text)), "other")] += nanoseconds
        for name, p in across:
            if p.search(text):
                seconds[f"of which anywhere: {name}"] += nanoseconds
    return {k: round(v / 1e9, 2) for k, v in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    classes = classify(raw_profile(args.profile))
    if args.json:
        print(json.dumps(classes, indent=2))
        return 0
    total = classes["total"] or 1.0
    for name, value in sorted(classes.items(), key=lambda kv: (kv[0].startswith("of which"), -kv[1])):
        print(f"{name:55s} {value:7.2f} s {100 * value / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
