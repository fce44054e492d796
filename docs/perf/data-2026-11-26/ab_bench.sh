#!/bin/bash
# Before/after of the data pipeline on one machine: the two trees measured alternately, ROUNDS times.
#   git archive <before> api trainer_image tools | tar -x -C BEFORE   (then copy today's tools/bench_data.py
#   into BEFORE/tools: the tool is the same for both, only the pipeline differs)
#   BEFORE=... AFTER=<checkout> OUT=ab.jsonl ROUNDS=2 SECONDS_EACH=12 WINDOWS=8 ./ab_bench.sh
set -eu
PY=${PY:-$AFTER/.venv/bin/python}
for round in $(seq "${ROUNDS:-3}"); do
  for tree in before after; do
    root=$BEFORE; [ "$tree" = after ] && root=$AFTER
    echo "{\"tree\": \"$tree\", \"round\": $round, \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >> "$OUT"
    (cd /tmp && RAYON_NUM_THREADS=1 PYTHONPATH=$root/trainer_image:$root/api "$PY" "$root/tools/bench_data.py" \
      throughput --tokenizer "$AFTER/.cache/smollm2" --workers 0 --no-encoder --seconds "${SECONDS_EACH:-8}" \
      --windows "${WINDOWS:-1}" --text-dir /usr/share/doc 2>/dev/null | sed "s/^{/{\"tree\": \"$tree\", /" >> "$OUT")
  done
done
