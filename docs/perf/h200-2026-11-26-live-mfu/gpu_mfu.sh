#!/bin/bash
# Live MFU in progress.json from tunix-train on the GPU, beside tunix-bench's MFU for the same model.
set -u
cd "$(dirname "$0")/../.."
pip install -q --no-deps --target /tmp/site .whl/annotated_types-*.whl .whl/pydantic-*.whl .whl/pydantic_core-*.whl .whl/typing_inspection-*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD/api:$PWD/trainer_image TUNIX_ATTEMPT=0
W=/tmp/i13w; mkdir -p $W
python3 - <<'PY'
import json, random
random.seed(0)
words = [''.join(random.choice('abcdefghij') for _ in range(5)) for _ in range(500)]
with open('/tmp/i13w/data.jsonl', 'w') as f:
    for _ in range(4000):
        f.write(json.dumps({"text": ' '.join(random.choice(words) for _ in range(400))}) + '\n')
base = {"model": {"preset": "125m"}, "training": {"steps": 60, "batchSize": 32, "seqLen": 1024, "computeDtype": "bfloat16"},
        "device": {"kind": "gpu"}}
train = dict(base, dataset={"uri": "/tmp/i13w/data.jsonl"}, checkpoint={"saveIntervalSteps": 30, "maxToKeep": 1},
             metrics={"logEverySteps": 1, "progressIntervalSeconds": 1})
bench = dict(base, mode="Benchmark", benchmark={"warmupSteps": 5, "measureSteps": 20, "syntheticData": True})
for name, spec in (("train", train), ("bench", bench)):
    json.dump({"apiVersion": "tunix.dev/v1alpha1", "kind": "TunixRun", "metadata": {"name": name}, "spec": spec},
              open(f"/tmp/i13w/{name}.json", "w"))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $OUT/gpu.txt
( while sleep 0.5; do cat $W/art/progress.json 2>/dev/null; echo; done ) > $OUT/progress.log &
POLL=$!
/usr/bin/time -v python3 -m tunix_trainer.train --config $W/train.json --artifacts-uri $W/art --checkpoint-uri $W/ck > $OUT/train.log 2>&1
echo "train exit $?" >> $OUT/train.log
kill $POLL
cp $W/art/progress.json $OUT/progress-final.json 2>/dev/null
python3 -m tunix_trainer.bench --config $W/bench.json --artifacts-uri $W/bench > $OUT/bench.log 2>&1
echo "bench exit $?" >> $OUT/bench.log
cp $W/bench/benchmark.json $OUT/ 2>/dev/null
grep -o '"mfu": [0-9.]*' $OUT/progress.log | sort | uniq -c | tail -5
tail -3 $OUT/train.log $OUT/bench.log
