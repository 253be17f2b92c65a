#!/usr/bin/env bash
# Pruning study, part 3 (structured): drop one of the two decoder layers of the student, retrain with the
# class-blind-80% budget (Seq-KD data, then Seq-Inter fine-tuning), evaluate and time it. Resumable.
set -euo pipefail
O=${OUT:-runs/prune-study}
D=(--data-dir "${SEQKD_DATA:-../shared/data/multi30k}" --src de --tgt en)
B=benchmarks/prune_study
S="$O/seq_kd+seq_inter"
[ -f "$O/dec1/shrink_result.json" ] || seqkd shrink --model "$S" --keep-decoder-layers 0 --out "$O/dec1"
seqkd train --config $B/shrink_retrain.yaml --init-from "$O/dec1" --distilled "$O/data_seq_kd" "${D[@]}" --out "$O/dec1-retrain"
seqkd train --config $B/shrink_finetune.yaml --init-from "$O/dec1-retrain" --distilled "$O/data_seq_inter" "${D[@]}" \
  --out "$O/dec1+seq_inter"
[ -f "$O/eval/dec1.json" ] || seqkd evaluate --model "$O/dec1+seq_inter" "${D[@]}" --threads 2 --out "$O/eval/dec1.json"
[ -f "$O/eval/bench-dec1.json" ] || seqkd bench --model "$O/dec1+seq_inter" "${D[@]}" --engines ct2,ct2-int8 \
  --threads 2 --repeats 2 --out "$O/eval/bench-dec1.json"
# Is the retraining budget the limit? class-blind 80% again from the chain's 50% round, 4x the steps.
seqkd prune --model "$O/class-blind/round-1" --sparsity 0.8 --distilled "$O/data_seq_kd" \
  --finetune-distilled "$O/data_seq_inter" --epochs 100 --steps 1000 --set train.lr=5e-4 --set train.warmup_steps=25 \
  --set train.schedule=linear --set train.threads=2 "${D[@]}" --out "$O/class-blind-long"
[ -f "$O/eval/class-blind-long-80.json" ] || seqkd evaluate --model "$O/class-blind-long" "${D[@]}" --threads 2 \
  --out "$O/eval/class-blind-long-80.json"
[ -f "$O/eval/sizes.json" ] || python benchmarks/prune_sizes.py "$S" "$O/class-blind/round-2" "$O/class-blind" \
  "$O/dec1+seq_inter" --out "$O/eval/sizes.json"
python benchmarks/prune_study/report.py "$O" --out docs/results/prune-study
