#!/bin/bash
# Device check 3 (2026-11-26). (1) The loop's dispatch order: a 125m training run (b32, seq 1024, 70 steps)
# with the loop of 58087dd (waits for step k before dispatching k+1) and of HEAD (dispatches k+1 first, a
# thread notes completions), beside tunix-bench's figures for the same shape. (2) LoRA (rank 16, all seven
# projections) against full fine-tuning, SmolLM2-135M's shape, b16, seq 2048. (3) The data pipeline's
# tokens/s by workers and threads on this machine's idle cores (byte tokenizer, SmolLM2 BPE).
set -u
S=${SMOKE:-0}
[ "$S" = 0 ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || { [ "$S" = 0 ] && exit 9; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; lscpu | grep -E "Model name" ; uptime
R=$PWD; D=$PWD/.devcarry4
sed "s#uri: .*#uri: $D/golden.jsonl#; s#steps: 70#steps: ${STEPS:-70}#; s#preset: 125m#preset: ${PRESET:-125m}#; s#batchSize: 32#batchSize: ${BATCH:-32}#; s#seqLen: 1024#seqLen: ${SEQ:-1024}#; s#kind: gpu#kind: ${KIND:-gpu}#" $D/run125.yaml > /tmp/run125.yaml
run_loop() {  # side, repeat (DIAG=1: through diag_loop.py)
  PYTHONPATH=/tmp/site:$D/$1/api:$D/$1/trainer_image timeout 170 python3 -m tunix_trainer.cli run /tmp/run125.yaml \
    --local --artifacts $OUT/loop-$1-$2 --no-progress > $OUT/loop-$1-$2.log 2>&1
  echo "loop $1 $2 rc=$?"; tail -3 $OUT/loop-$1-$2.log
}
run_loop old 1; run_loop new 1
if [ "$S" = 0 ]; then
  PYTHONPATH=/tmp/site:$D/new/api:$D/new/trainer_image timeout 330 python3 $D/new/tools/bench_sweep.py --out $OUT/bench \
    --warmup 8 --steps 30 125m:b32:t1024 smollm2:b16:t2048:pretrained=$R/.devcarry/smollm2 \
    smollm2:b16:t2048:lora=16:pretrained=$R/.devcarry/smollm2 2>&1 | tail -6
fi
(cd $D/new && PYTHONPATH=/tmp/site:$D/new:$D/new/api:$D/new/trainer_image RAYON_NUM_THREADS=1 timeout 240 python3 tools/bench_data.py \
  throughput --tokenizer byte,$R/.devcarry/smollm2 --workers ${WORKERS:-0,2,4,8} --threads ${THREADS:-1,2,4,8} --seconds ${SECS:-5} \
  --seeded-tokens ${SEEDED:-25e6} --text-dir /usr/share/doc --workdir /tmp/bench --json $OUT/bench_data.json 2>&1 | tail -40)
python3 - <<'PY'
import json, os, statistics as st
out = os.environ["OUT"]
for name in sorted(os.listdir(out)):
    m = os.path.join(out, name, "metrics.jsonl")
    if name.startswith("loop-") and os.path.exists(m):
        recs = [json.loads(l) for l in open(m)]
        t = [r["step_time_seconds"] for r in recs if "step_time_seconds" in r and r["step"] > 10]
        tok = [r.get("tokens") for r in recs if "step_time_seconds" in r][:1]
        print(name, "steps", len(t), "median ms %.2f mean ms %.2f" % (1e3 * st.median(t), 1e3 * st.mean(t)) if t else "", "tokens/step", tok)
p = os.path.join(out, "bench", "sweep.jsonl")
if os.path.exists(p):
    for line in open(p):
        r = json.loads(line); b = r.get("benchmark") or {}
        print(r["case"], r["exitCode"], "tok/s", b.get("tokensPerSecond"), "b2b ms", (b.get("steadyState") or {}).get("stepTimeMs"),
              "synced mean ms", (b.get("stepTime") or {}).get("meanMs"), "mfu", b.get("mfu"), "peak", b.get("peakMemoryBytes"),
              {k: v for k, v in b.items() if "ptim" in k or "param" in k.lower()})
PY
