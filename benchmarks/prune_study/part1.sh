#!/usr/bin/env bash
# Pruning study, part 1: distillation data from the teacher and the distilled student to prune.
# Every command resumes when rerun. Run from the repository root.
set -euo pipefail
T=${TEACHER:-runs/student-de-en}
O=${OUT:-runs/prune-study}
D=(--data-dir "${SEQKD_DATA:-../shared/data/multi30k}" --src de --tgt en)
B=benchmarks/prune_study
seqkd distill --teacher "$T" --mode seq_kd --beam 5 "${D[@]}" --out "$O/data_seq_kd"
seqkd distill --teacher "$T" --mode seq_inter --beam 10 --fraction 0.35 --max-tokens 2048 "${D[@]}" --out "$O/data_seq_inter"
seqkd train --config $B/student.yaml --vocab "$T" --distilled "$O/data_seq_kd" "${D[@]}" --out "$O/seq_kd"
seqkd train --config $B/finetune.yaml --init-from "$O/seq_kd" --distilled "$O/data_seq_inter" "${D[@]}" --out "$O/seq_kd+seq_inter"
