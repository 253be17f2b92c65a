"""Question: how should the test suite run the `tiny` grid: on one thread, on two, or two stages at a time? And
how much does the `speed` stage's decoding sweep cost on 30 validation lines against 10 (`tune_max_sents`)?

Part 1 runs the whole tiny grid in a fresh folder per run, once per setting and repetition, interleaved (the
settings in turn within each repetition), and prints each setting's median seconds and range. Part 2 times the
`speed` stage alone on the last finished grid: `speed/` removed and the grid rerun with `--set
tune_max_sents=N`, interleaved, and prints the stage clock's median and range. The figures in
docs/results/tests-avx2/README.md came from

    SEQKD_DATA=../shared/data/multi30k python benchmarks/tiny_threads.py --out runs/tiny-threads --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"threads 2": ["--threads", "2", "--jobs", "1"], "threads 1": ["--threads", "1", "--jobs", "1"],
            "threads 2, jobs 2": ["--threads", "2", "--jobs", "2"]}


def _grid(out: Path, *extra: str) -> float:
    """Seconds of one `seqkd reproduce --preset tiny` run into `out`."""
    t = time.time()
    subprocess.run([sys.executable, "-m", "seqkd", "reproduce", "--preset", "tiny", "--out", str(out), "--quiet",
                    *extra], check=True, capture_output=True)
    return time.time() - t


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} s (range {min(values):.1f}-{max(values):.1f}, n={len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/tiny-threads")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    root = Path(a.out)
    grid: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for rep in range(a.repeats):
        for name, args in SETTINGS.items():
            out = root / f"{name.replace(' ', '').replace(',', '-')}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            grid[name].append(_grid(out, *args))
    for name, secs in grid.items():
        print(f"whole tiny grid, {name}: {_summary(secs)}")
    speed: dict[int, list[float]] = {30: [], 10: []}
    for _ in range(a.repeats):
        for n in speed:
            shutil.rmtree(out / "speed", ignore_errors=True)
            _grid(out, *SETTINGS["threads 1"], "--set", f"tune_max_sents={n}")
            speed[n].append(json.loads((out / "speed" / "clock.json").read_text())["seconds"])
    for n, secs in speed.items():
        print(f"speed stage, tuning on {n} validation lines, 1 thread: {_summary(secs)}")


if __name__ == "__main__":
    main()
