"""Question: S1, how much faster is the student's greedy than the teacher's beam, best against best? From one
`seqkd bench` JSON: each student's fastest greedy row over the teacher's fastest beam row, median ratio, range from the
extremes, and the BLEU gap (`seqkd.inference.bench.best_against_best`).

The committed figure (docs/results/fast-chain-de-en/README.md, "S1, best against best") comes from:

    python benchmarks/s1.py docs/results/fast-chain-de-en/fast_students.json --teacher teacher [--engine ct2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqkd.inference.bench import best_against_best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_json")
    p.add_argument("--teacher", default="teacher", help="the teacher's model folder name")
    p.add_argument("--engine", default=None, help="only this engine on both sides (ct2 = float32, ct2-int8)")
    a = p.parse_args()
    rows = json.loads(Path(a.bench_json).read_text())
    for student in dict.fromkeys(Path(r["model"]).name for r in rows):
        if student == a.teacher:
            continue
        s = best_against_best(rows, a.teacher, student, a.engine)
        lo, hi = s["speedup_range"]
        print(f"S1 = {s['speedup']:.1f}x (range {lo:.1f}-{hi:.1f}x): {s['student']} {s['student_sent_per_s']:.1f} "
              f"sent/s over {s['teacher']} {s['teacher_sent_per_s']:.1f} sent/s; BLEU {s['bleu_gap']:+.2f}")


if __name__ == "__main__":
    main()
