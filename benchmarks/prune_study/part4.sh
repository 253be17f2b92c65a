#!/usr/bin/env bash
# Pruning study, part 4: class-distribution 80% with the longer budget (1,000 steps from its 50% round),
# the best scheme at the short budget. Resumable.
set -euo pipefail
O=${OUT:-runs/prune-study}
D=(--data-dir "${SEQKD_DATA:-../shared/data/multi30k}" --src de --tgt en)
seqkd prune --model "$O/class-distribution/round-1" --sparsity 0.8 --scheme class-distribution \
  --distilled "$O/data_seq_kd" --finetune-distilled "$O/data_seq_inter" --epochs 100 --steps 1000 \
  --set train.lr=5e-4 --set train.warmup_steps=25 --set train.schedule=linear --set train.threads=2 "${D[@]}" \
  --out "$O/class-distribution-long"
[ -f "$O/eval/class-distribution-long-80.json" ] || seqkd evaluate --model "$O/class-distribution-long" "${D[@]}" \
  --threads 2 --out "$O/eval/class-distribution-long-80.json"
[ -f "$O/eval/cd-long.int8.json" ] || seqkd evaluate --model "$O/class-distribution-long" "${D[@]}" --threads 2 \
  --int8 --out "$O/eval/cd-long.int8.json"
python benchmarks/prune_study/report.py "$O" --out docs/results/prune-study
