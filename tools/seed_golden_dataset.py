"""Write the golden dataset used by examples/run.yaml and the training tests, and print its manifest.

    python tools/seed_golden_dataset.py                           # data/golden/golden.jsonl
    python tools/seed_golden_dataset.py --kind prompt-completion  # .../golden-prompt-completion.jsonl

Defaults: 2000 records, seed 1234, paths relative to the repository root; every option of
seed_dataset.py can override them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from tools.seed_dataset import build_parser, seed_dataset
except ImportError:  # run as a script: tools/ is on sys.path, the repository root is not
    from seed_dataset import build_parser, seed_dataset  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO_ROOT / "data" / "golden"
GOLDEN_COUNT = 2000
GOLDEN_SEED = 1234
GOLDEN_OUTPUTS = {
    "text": GOLDEN_DIR / "golden.jsonl",
    "prompt-completion": GOLDEN_DIR / "golden-prompt-completion.jsonl",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(count=GOLDEN_COUNT, seed=GOLDEN_SEED, output=None)
    args = parser.parse_args(argv)
    output = args.output or str(GOLDEN_OUTPUTS[args.kind])
    info = seed_dataset(args.kind, args.count, args.seed, output, args.manifest)
    print(json.dumps({**info, "output": output}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
