#!/bin/bash
# The shallow-to-deep check of docs/results/deep-encoder/README.md, on the references, float32, 3 + 3 epochs:
# run `a` (2+1 d256 from scratch), then `g6` (a grown to 6+1 by repeating its layers, `seqkd stack`).
# Compare with r0 (6+1 from scratch) there. Usage: SEQKD_DATA=../shared/data/multi30k bash benchmarks/grow_deep_encoder.sh
set -euo pipefail
OUT=${OUT:-runs/exp}
THREADS=${THREADS:-2}
CFG=docs/results/deep-encoder
[ -f "$OUT/vocab/vocab.json" ] || seqkd vocab --out "$OUT/vocab" --quiet
seqkd train --config "$CFG/a.yaml" --vocab "$OUT/vocab" --threads "$THREADS" --quiet --out "$OUT/a"
seqkd stack --model "$OUT/a" --encoder-layers 6 --decoder-layers 1 --out "$OUT/g6-init" > /dev/null
seqkd train --config "$CFG/g6.yaml" --init-from "$OUT/g6-init" --vocab "$OUT/vocab" --threads "$THREADS" --quiet \
  --out "$OUT/g6"
python benchmarks/grid_progress.py --run "$OUT" --curves a/metrics.jsonl,g6/metrics.jsonl
