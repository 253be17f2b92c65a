#!/usr/bin/env bash
# Pruning study, part 2: prune the Seq-KD + Seq-Inter student, retrain with masks on the Seq-KD data,
# fine-tune on the Seq-Inter data; evaluate every point; int8 export; speed. Resumable: rerun it.
set -euo pipefail
T=${TEACHER:-runs/student-de-en}
O=${OUT:-runs/prune-study}
STEPS=${STEPS:-250}
D=(--data-dir "${SEQKD_DATA:-../shared/data/multi30k}" --src de --tgt en)
S="$O/seq_kd+seq_inter"
P=(--distilled "$O/data_seq_kd" --finetune-distilled "$O/data_seq_inter" --epochs 100 --steps "$STEPS"
   --set train.lr=5e-4 --set train.warmup_steps=25 --set train.schedule=linear --set train.threads=2 "${D[@]}")
# 0%: the same retraining without pruning (the fair control); then class-blind 50 -> 80 -> 85 -> 90 in
# one gradual chain, and the two other schemes 50 -> 80 with the same retraining budget as class-blind 80.
seqkd prune --model "$S" --sparsity 0 "${P[@]}" --out "$O/pruned_0"
seqkd prune --model "$S" --sparsity 0.9 --schedule 0.5,0.8,0.85,0.9 "${P[@]}" --out "$O/class-blind"
seqkd prune --model "$S" --sparsity 0.8 --schedule 0.5,0.8 --scheme class-uniform "${P[@]}" --out "$O/class-uniform"
seqkd prune --model "$S" --sparsity 0.8 --schedule 0.5,0.8 --scheme class-distribution "${P[@]}" \
  --out "$O/class-distribution"
mkdir -p "$O/eval"
ev() {  # name model [extra evaluate flags]
  local name=$1 model=$2; shift 2
  [ -f "$O/eval/$name.json" ] || seqkd evaluate --model "$model" "${D[@]}" --threads 2 "$@" --out "$O/eval/$name.json"
}
ev teacher "$T"
ev seq_kd "$O/seq_kd"
ev seq_kd+seq_inter "$S"
ev pruned_0 "$O/pruned_0"
for s in class-blind class-uniform class-distribution; do
  for d in "$O/$s"/round-* "$O/$s"; do
    ev "$s-$(python -c "import json,sys; print(round(100*json.load(open(sys.argv[1]))['target_sparsity']))" "$d/prune_result.json")" "$d"
  done
done
BEST=$(python benchmarks/prune_study/report.py --pick-int8 "$O")
ev "int8-$(basename "$BEST")" "$BEST" --int8
[ -f "$O/int8/export.json" ] || seqkd export --model "$BEST" --out "$O/int8"
cp "$O/int8/export.json" "$O/eval/int8_export.json"
for m in "$S" "$O/class-blind"; do
  n=$(basename "$m")
  [ -f "$O/eval/bench-$n.json" ] || seqkd bench --model "$m" "${D[@]}" --engines ct2,ct2-int8 --threads 2 \
    --repeats 2 --out "$O/eval/bench-$n.json"
done
python benchmarks/prune_study/report.py "$O" --teacher "$T" --out docs/results/prune-study
