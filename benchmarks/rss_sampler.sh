#!/bin/bash
# One sample a minute (HH:MM:SS RSS-KiB HEAP-KiB; HEAP is the Rss of glibc's main heap, `[heap]` in
# /proc/PID/smaps, the part that malloc_trim hands back) of the running `seqkd reproduce --preset multi30k` process,
# appended to $1 (default runs/grid_rss.log) after a "--- DATE start" marker; summarise with
# `python benchmarks/grid_progress.py --rss runs/grid_rss.log`.
log=${1:-runs/grid_rss.log}
echo "--- $(date -u +%F) start $(date -u +%H:%M)" >> "$log"
while true; do
  pid=$(pgrep -f "seqkd reproduce --preset multi30k" | head -1)
  [ -n "$pid" ] && echo "$(date +%H:%M:%S) $(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)" \
    "$(awk '/\[heap\]/ {h = 1} h && /^Rss:/ {print $2; exit}' /proc/"$pid"/smaps)" >> "$log"
  sleep 60
done
