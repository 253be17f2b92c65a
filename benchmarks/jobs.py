"""Question: on this machine, do `--jobs 2` (two stages side by side, threads / 2 each) finish more stages per
hour than `--jobs 1` (one stage with all threads)?

It times the four from-scratch students of a preset (baseline, seq_kd, word_kd, seq_kd+word_kd: independent
stages with the same inputs) under each setting, interleaved (1, 2, 1, 2, ...), each repetition in a fresh copy
of a run folder that holds their inputs, and prints stages per hour: the median of the repetitions and the range.

The committed figure (docs/results/jobs-quick/README.md) came from:

    SEQKD_DATA=../shared/data/multi30k python benchmarks/jobs.py --preset quick --threads 2 --repeats 3 \\
        --set student_train.max_steps=160 --out runs/jobs-bench --json docs/results/jobs-quick/jobs.json

(`student_train.max_steps=160`: half the quick preset's student budget, so that three interleaved repetitions of
both settings fit one session; the stages' inputs are the same.)

The first call runs the inputs (vocabulary, teacher, Seq-KD data, top-k caches) into `--out`/base; later calls
reuse them.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from seqkd.config import apply_overrides, from_dict, to_dict
from seqkd.data.load import load_pairs
from seqkd.reproduce.grid import Grid, GridOptions
from seqkd.reproduce.machine import machine_info
from seqkd.reproduce.pipeline import ReproduceConfig, grid_for, load_preset
from seqkd.reproduce.runner import Runner
from seqkd.reproduce.stages import Stages
from seqkd.training.trainer import TrainData
from seqkd.util.fsutil import write_json

STUDENTS = ("baseline", "seq_kd", "word_kd", "seq_kd+word_kd")


def _grid(cfg, out: Path, names: set[str], jobs: int) -> Grid:
    train = load_pairs(cfg.data, "train")
    val, test = load_pairs(cfg.data, "val"), load_pairs(cfg.data, "test")
    stages = [s for s in grid_for(cfg, *train, val, test) if s.name in names]
    r = Runner(out, progress=False)
    return Grid(stages, cfg, r, Stages(cfg, r, TrainData(*train, *val), False, test), GridOptions(jobs=jobs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="runs/jobs-bench")
    ap.add_argument("--json", help="write the measurement here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="preset override")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    cfg = from_dict(ReproduceConfig, apply_overrides(to_dict(load_preset(a.preset)), a.set))
    cfg = replace(cfg, threads=a.threads)
    inputs = {"vocab", "teacher", "data_seq_kd", "data_topk", "data_topk_seq_kd"}
    base = Path(a.out) / "base"
    t = time.time()
    _grid(cfg, base, inputs, 1).run()
    print(f"inputs ready in {time.time() - t:.0f} s")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(a.repeats):
        for jobs in (1, 2):
            run = Path(a.out) / f"rep{rep}-jobs{jobs}"
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run)
            t = time.time()
            _grid(cfg, run, inputs | set(STUDENTS), jobs).run()
            secs = time.time() - t
            rates[jobs].append(len(STUDENTS) / secs * 3600)
            print(f"rep {rep} jobs {jobs}: {secs:.0f} s, {rates[jobs][-1]:.2f} stages/h", flush=True)
            shutil.rmtree(run)
    res = {"preset": a.preset, "overrides": a.set, "threads": a.threads, "stages": list(STUDENTS),
           "machine": machine_info(a.threads),
           **{f"jobs{j}": {"stages_per_hour": r, "median": statistics.median(r), "min": min(r), "max": max(r)}
              for j, r in rates.items()}}
    for j in (1, 2):
        x = res[f"jobs{j}"]
        print(f"--jobs {j}: {x['median']:.2f} stages/h (range {x['min']:.2f}-{x['max']:.2f})")
    if a.json:
        write_json(a.json, res)


if __name__ == "__main__":
    main()
