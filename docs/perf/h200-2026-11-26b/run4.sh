#!/bin/bash
# Device check 4 (2026-11-26): (1) the 125m loop once more with timestamps of each step's put, dispatch,
# completion note and Python GC pauses (diag_loop.py); (2) the data pipeline's tokens/s by workers and
# threads on this machine's idle cores after the chunk/threads changes (byte tokenizer, SmolLM2 BPE).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 9
nproc; uptime
R=$PWD; D=$PWD/.devcarry4
sed "s#uri: .*#uri: $D/golden.jsonl#" $D/run125.yaml > /tmp/run125.yaml
(cd $D/new && PYTHONPATH=/tmp/site:$D/new:$D/new/api:$D/new/trainer_image RAYON_NUM_THREADS=1 timeout 150 python3 tools/bench_data.py \
  throughput --tokenizer byte,$R/.devcarry/smollm2 --workers 0,4,8 --threads 1,4 --data-threads 1,4 --seconds 4 \
  --seeded-tokens 25e6 --text-dir /usr/share/doc --workdir /tmp/bench --json $OUT/bench_data.json 2>&1 | tail -30)
PYTHONPATH=/tmp/site:$D/new/api:$D/new/trainer_image timeout 75 python3 $D/diag_loop.py run /tmp/run125.yaml \
  --local --artifacts $OUT/diag --no-progress > $OUT/diag.log 2>&1; echo "diag rc=$?"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
recs = [json.loads(l) for l in open(os.path.join(out, "diag", "metrics.jsonl"))]
print("steps", [(r["step"], round(1e3 * r["step_time_seconds"], 1)) for r in recs if "step_time_seconds" in r][-8:])
ev = [json.loads(l) for l in open(os.path.join(out, "diag-events.jsonl"))]
for e in ev[-40:]:
    print(e)
print("gc pauses > 2 ms:", [e for e in ev if e["kind"] == "gc"][-10:])
PY
rm -rf $OUT/diag/checkpoints $OUT/diag/model
