#!/usr/bin/env bash
# The multi30k-gpu preset on a lent GPU machine, as far as one short lease allows:
#   1. training-step time, fp32 vs bf16 autocast (eager and SDPA attention), teacher and student sizes;
#   2. the preset's teacher stage (`reproduce --stop-after teacher`), capped at $MINUTES of training if given
#      (a cap is part of the stage's identity: a later run without it retrains the teacher),
#      beside the same stage with a gentler learning rate;
#   3. the teacher's greedy and beam-5 BLEU on val and test_2016_flickr (CTranslate2 on the CPU).
# Everything lands in $OUT (gpu.log, train_step_gpu.jsonl, a.log, b.log, teacher-{a,b}.tar.gz).
#   OUT=dir DATA=corpus-dir [MINUTES= THREADS=16 PRESET=multi30k-gpu DEVICE=cuda SIZES="teacher student"
#   STEPS=5 RUN=runs/gpu] bash benchmarks/gpu_preset.sh
set -u
OUT=${OUT:?}; DATA=${DATA:?}; MINUTES=${MINUTES:-}; THREADS=${THREADS:-16}
PRESET=${PRESET:-multi30k-gpu}; DEVICE=${DEVICE:-cuda}; RUN=${RUN:-runs/gpu}
SIZES=${SIZES:-teacher student}; STEPS=${STEPS:-5}
export PYTHONUNBUFFERED=1 SEQKD_DATA=$DATA
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python3 -c "import torch, transformers, ctranslate2, sacrebleu; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0), 'transformers', transformers.__version__, \
'ctranslate2', ctranslate2.__version__, 'sacrebleu', sacrebleu.__version__)"
  for size in $SIZES; do
    timeout 120 python3 benchmarks/train_step.py --device "$DEVICE" --size $size --rows 320 --steps "$STEPS" \
      --threads "$THREADS" --modes fp32,autocast,fp32-sdpa,autocast-sdpa --json "$OUT/train_step_gpu.jsonl"
  done
  date -u +%FT%TZ
  # two teachers side by side on the one GPU (each launch-bound, half the CPU threads): the preset's recipe
  # (a) and a gentler one (b: lr 5e-4, 1000 warmup steps) in case post-norm 6+6 layers diverge under (a)
  half=$(( THREADS / 2 > 0 ? THREADS / 2 : 1 ))
  cap=(); [ -n "$MINUTES" ] && cap=(--set "teacher_train.max_minutes=$MINUTES")
  teacher() {  # NAME OVERRIDES...
    local name=$1; shift
    timeout 480 python3 -m seqkd reproduce --preset "$PRESET" --src de --tgt en --threads $half --quiet \
      --out "$RUN-$name" --stop-after teacher "${cap[@]}" "$@" > "$OUT/$name.log" 2>&1
    echo "teacher $name: reproduce rc=$?" >> "$OUT/$name.log"
    for split in val test_2016_flickr; do
      timeout 150 python3 -m seqkd evaluate --model "$RUN-$name/teacher" --split $split --beam 5 --threads $half \
        --quiet --out "$RUN-$name/teacher-$split.json" >> "$OUT/$name.log" 2>&1
    done
    cp "$RUN-$name/teacher/metrics.jsonl" "$RUN-$name/teacher-metrics.jsonl"
    cp "$RUN-$name/teacher/train_result.json" "$RUN-$name/teacher-train_result.json"
    tar -czf "$OUT/teacher-$name.tar.gz" -C "$RUN-$name" teacher-metrics.jsonl teacher-train_result.json \
      teacher-val.json teacher-test_2016_flickr.json config.json
  }
  teacher a &
  teacher b --set teacher_train.lr=0.0005 --set teacher_train.warmup_steps=1000 &
  wait
  date -u +%FT%TZ
} > "$OUT/gpu.log" 2>&1
tail -12 "$OUT/gpu.log"; grep -h "val ppl\|rc=\|Error" "$OUT/a.log" "$OUT/b.log" | tail -60
