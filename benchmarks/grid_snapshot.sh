#!/usr/bin/env bash
# Copy a running or finished grid's small result files into the repository, so that they outlive the run folder
# (which holds the models and has been lost with its machine). Safe to repeat: every copy overwrites.
#
#   bash benchmarks/grid_snapshot.sh RUN_DIR DEST PREFIX
#   bash benchmarks/grid_snapshot.sh runs/multi30k-de-en docs/results/multi30k-large-de-en run3
#
# Copies, each as DEST/PREFIX-<name>:
#   - every stage's metrics.jsonl, train_result.json and train_config.json (training stages; a running stage's curve
#     is partial; the config says the patience it trained under)
#   - every stage's manifest.json (distillation data: pairs, dropped, mean similarity and rank)
#   - pauses.txt and grid_rss.log from RUN_DIR's parent, when present (the session log of stops and the RSS samples)
# and writes DEST/PREFIX-stage_seconds-partial.json with benchmarks/grid_progress.py (finished stages' clock).
set -euo pipefail
run=${1:?RUN_DIR}; dest=${2:?DEST}; prefix=${3:?PREFIX}
[ -d "$run" ] || { echo "grid_snapshot: $run: no such run folder" >&2; exit 2; }
mkdir -p "$dest"
n=0
for stage in "$run"/*/; do
  name=$(basename "$stage")
  for f in metrics.jsonl train_result.json train_config.json manifest.json; do
    if [ -f "$stage$f" ]; then
      cp "$stage$f" "$dest/$prefix-$name-$f.tmp" && mv "$dest/$prefix-$name-$f.tmp" "$dest/$prefix-$name-$f"
      n=$((n + 1))
    fi
  done
done
parent=$(dirname "$run")
for f in pauses.txt grid_rss.log; do
  if [ -f "$parent/$f" ]; then
    cp "$parent/$f" "$dest/$prefix-$f.tmp" && mv "$dest/$prefix-$f.tmp" "$dest/$prefix-$f"
    n=$((n + 1))
  fi
done
out=$(python "$(dirname "$0")/grid_progress.py" --run "$run" --out "$dest/$prefix-stage_seconds-partial.json")
echo "$out" | grep "finished stages" || true
echo "grid_snapshot: $n files copied to $dest with prefix $prefix-"
