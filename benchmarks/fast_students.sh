#!/usr/bin/env bash
# Question: on a multi30k grid, how fast are the fast (deep-encoder / shallow-decoder) students against the teacher,
# the best student and its small counterpart? One `seqkd bench` run: float32 and int8, without and with the lexical
# shortlist, two thread layouts (1 batch x 2 threads, 2 batches x 1 thread; engine batching, no scores for greedy),
# greedy and beam 5, on test_2016_flickr; every row's 3 repetitions interleaved with all others (median and range);
# latency one sentence at a time (p50/p95 over 200 sentences). Run it with nothing else running.
#   bash benchmarks/fast_students.sh [RUN_DIR] [OUT_DIR] [extra seqkd bench flags, e.g. --max-sents 20]
# The symmetric student beside them is the grid's best (results.json); before the grid has finished, BEST=STAGE
# names it, else the first finished of seq_kd+seq_inter and seq_kd (the fast students' own recipe at 2+2).
# No figure from it is committed yet (no grid has reached its fast students). The table and S1 of
# docs/results/fast-chain-de-en/README.md came from the same `seqkd bench` flags on a shortened chain's two models
# (its "Reproduce" has the commands); the grid's `speed` stage measures S1 itself.
set -euo pipefail
RUN=${1:-runs/multi30k-de-en}
OUT=${2:-docs/results/multi30k-large-de-en}
shift $(( $# < 2 ? $# : 2 ))
if [ -n "${BEST:-}" ]; then best=$BEST
elif [ -f "$RUN/results.json" ]; then
  best=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_student'])" "$RUN/results.json")
else
  for best in seq_kd+seq_inter seq_kd ""; do [ -f "$RUN/$best/stage.json" ] && break; done
  [ -n "$best" ] || { echo "fast_students.sh: no finished symmetric student in $RUN (set BEST=STAGE)" >&2; exit 2; }
fi
models=(--model "$RUN/teacher" --model "$RUN/$best")
[ -f "$RUN/$best-small/stage.json" ] && models+=(--model "$RUN/$best-small")
for d in "$RUN"/fast_student-*; do
  case "$d" in *_seq_kd) ;; *) [ -f "$d/stage.json" ] && models+=(--model "$d") ;; esac
done
seqkd bench "${models[@]}" --engines ct2,ct2-int8 --vmap "$RUN/shortlist/vmap.txt" --vmap-both \
  --layouts 1,2 --engine-batching --no-scores --beam 5 --repeats 3 --latency 200 --threads 2 --quiet \
  --out "$OUT/fast_students.json" --plot "$OUT/fast_students.png" "$@"
