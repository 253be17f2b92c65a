#!/usr/bin/env bash
# The fast-training benchmark of docs/results/train-step/README.md: the grid's two student sizes and its
# teacher size, six training-step variants each, interleaved (benchmarks/train_step.py).
# Run it on an otherwise idle machine, from the repository root.
set -euo pipefail
OUT=${OUT:-docs/results/train_step.jsonl}
rm -f "$OUT"
python benchmarks/train_step.py --size student --set encoder_layers=2 --set decoder_layers=2 --steps 8 --json "$OUT"
python benchmarks/train_step.py --size student-small --steps 8 --json "$OUT"
python benchmarks/train_step.py --size medium --steps 4 --json "$OUT"
