#!/usr/bin/env bash
# The shortest path to a measured S1 (issue 10) on 2 CPU cores, for sessions too short for the grid:
# the grid's own first stages, with the teacher capped, then one fast student and the bench.
#   1. `seqkd reproduce --preset multi30k --set teacher_train.max_epochs=N --stop-after teacher`: vocab and the
#      preset's teacher, stopped after N epochs instead of by patience. The inverse-sqrt schedule does not
#      depend on max_epochs, so its first N epochs are the full grid's (rerunning the grid with a larger
#      max_epochs extends the same stage from its last checkpoint). KEEP_TEACHER=1 skips this step and uses
#      the best model in RUN/teacher as it is (e.g. a teacher stage stopped by hand after an epoch).
#   2. `seqkd distill`: the teacher's beam-5 translations of the training set (the grid's data_seq_kd).
#   3. `seqkd train` of one fast size (default student-2-1) on that Seq-KD data with the preset's
#      student recipe (lr 1.2e-3, 300 warmup, patience 5, up to 40 epochs, bf16 auto, seed 1): the grid's
#      fast_student-2-1_seq_kd stage, without the Seq-Inter fine-tuning that follows it in the grid.
#   4. the shortlist from the Seq-KD data, validation BLEU of both models, and `seqkd bench` (teacher and
#      student, float32 and int8, without and with the shortlist, both thread layouts, 3 interleaved
#      repetitions, latency one sentence at a time) on test_2016_flickr.
#   5. S1 best against best from that bench (`seqkd bench --teacher teacher`, printed after its table), with the
#      BLEU gap.
# STUDENT_MINUTES=M caps the student's training time (the grid has no such cap: a session-sized look).
# Every step is cached or resumable: rerun the same command after an interruption.
#   SEQKD_DATA=../shared/data/multi30k bash benchmarks/fast_chain.sh [RUN] [OUT] [EPOCHS] [SIZE]
set -euo pipefail
RUN=${1:-runs/multi30k-de-en}
OUT=${2:-docs/results/fast-chain-de-en}
EPOCHS=${3:-13}
SIZE=${4:-student-2-1}
SRC=${SRC:-de}; TGT=${TGT:-en}
STUDENT=$RUN/chain-$SIZE-seq_kd
mkdir -p "$OUT"
[ "${KEEP_TEACHER:-0}" = 1 ] || seqkd reproduce --preset multi30k --src "$SRC" --tgt "$TGT" --threads 2 --quiet \
  --out "$RUN" --set teacher_train.max_epochs="$EPOCHS" --stop-after teacher
seqkd distill --teacher "$RUN/teacher" --src "$SRC" --tgt "$TGT" --mode seq_kd --beam 5 --threads 2 --quiet \
  --out "$RUN/chain-seq_kd"
[ -f "$STUDENT/train_result.json" ] || seqkd train --size "$SIZE" --src "$SRC" --tgt "$TGT" \
  --vocab "$RUN/vocab" --distilled "$RUN/chain-seq_kd" --threads 2 --quiet \
  --set train.lr=0.0012 --set train.warmup_steps=300 --set train.max_epochs=40 --set train.patience=5 \
  --set train.bf16=auto --set train.seed=1 ${STUDENT_MINUTES:+--minutes "$STUDENT_MINUTES"} --out "$STUDENT"
[ -f "$RUN/chain-vmap.txt" ] || seqkd shortlist --distilled "$RUN/chain-seq_kd" --vocab "$RUN/vocab" \
  --out "$RUN/chain-vmap.txt" --quiet
for m in teacher "$(basename "$STUDENT")"; do
  [ -f "$OUT/$m-val.json" ] || seqkd evaluate --model "$RUN/$m" --src "$SRC" --tgt "$TGT" --split val \
    --beam 5 --threads 2 --out "$OUT/$m-val.json"
done
seqkd bench --model "$RUN/teacher" --model "$STUDENT" --src "$SRC" --tgt "$TGT" --engines ct2,ct2-int8 \
  --vmap "$RUN/chain-vmap.txt" --vmap-both --layouts 1,2 --engine-batching --no-scores --beam 5 --repeats 3 \
  --latency 200 --threads 2 --quiet --out "$OUT/fast_students.json" --plot "$OUT/fast_students.png" --teacher teacher
