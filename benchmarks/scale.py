"""Question: how do peak memory and throughput of `seqkd train` and `seqkd distill` grow with the corpus (issue 11)?

Synthetic corpora of N lines are made by cycling the Multi30k training pairs (realistic lengths);
each command runs in its own process and its peak resident memory (ru_maxrss) is recorded.

- train: the `tiny` model, `--steps` steps, an existing vocabulary (the text is streamed to the
  memory-mapped token file, never held in memory);
- distill: one worker translates the first `--distill-shards` shards of the whole N-line corpus
  (`--shard-index 0 --num-shards S`: the worker indexes all N lines, translates a slice), and
  sentences/s with 1 worker x 2 threads vs 2 workers x 1 thread on the same shards.

The committed figure (docs/results/scale/README.md and scale.json there; vocabulary and teacher of a `quick` run)
came from:

    python benchmarks/scale.py --data-dir ../shared/data/multi30k --vocab runs/quick-de-en/vocab \\
        --teacher runs/quick-de-en/teacher --sizes 100000,5000000 --steps 200 --out docs/results/scale/scale.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqkd.data.load import DataConfig, load_pairs


def make_corpus(folder: Path, n: int, src: list[str], tgt: list[str]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    s_path, t_path = folder / "train.src", folder / "train.tgt"
    with open(s_path, "w", encoding="utf-8") as fs, open(t_path, "w", encoding="utf-8") as ft:
        for s, t in itertools.islice(itertools.cycle(zip(src, tgt)), n):
            fs.write(s + "\n")
            ft.write(t + "\n")
    return s_path, t_path


PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(r.returncode)")


def timed(cmd: list[str]) -> dict:
    """Run `cmd` under its own launcher; wall seconds and the command's peak RSS in MiB (ru_maxrss)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True)
    secs = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    peak = int(next(ln for ln in p.stderr.splitlines()[::-1] if ln.startswith("PEAK")).split()[1])
    return {"seconds": secs, "peak_rss_mib": peak / 1024, "stdout": p.stdout[-500:]}


def run_train(files: tuple[Path, Path], val: tuple[Path, Path], vocab: str, steps: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "seqkd", "train", "--vocab", vocab, "--size", "tiny", "--out", str(out),
           "--set", f"data.train_src={files[0]}", "--set", f"data.train_tgt={files[1]}",
           "--set", f"data.val_src={val[0]}", "--set", f"data.val_tgt={val[1]}",
           "--set", f"train.max_steps={steps}", "--set", "train.val_bleu=false", "--set", "train.threads=2",
           "--set", "train.max_tokens=4096"]
    r = timed(cmd)
    res = json.loads((out / "train_result.json").read_text())
    r.update(steps=res["steps"], target_tokens=res["target_tokens"], train_seconds=res["train_seconds"],
             tgt_tokens_per_s=res["target_tokens"] / res["train_seconds"])
    return r


def run_distill(files: tuple[Path, Path], teacher: str, n: int, shards: int, shard_size: int, out: Path,
                workers: int = 1) -> dict:
    num = (n + shard_size - 1) // shard_size // shards  # shard k is ours when k % num == 0
    base = [sys.executable, "-m", "seqkd", "distill", "--teacher", teacher, "--out", str(out),
            "--set", f"data.train_src={files[0]}", "--set", f"data.train_tgt={files[1]}",
            "--shard-size", str(shard_size),
            "--shard-index", "0", "--num-shards", str(num)]
    if workers == 1:
        return {**timed(base + ["--threads", "2", "--inter-threads", "2"]), "sentences": shards * shard_size}
    t = time.perf_counter()
    procs = [subprocess.Popen(base + ["--threads", "1", "--inter-threads", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(workers)]
    for p in procs:
        if p.wait():
            raise SystemExit(p.stderr.read().decode()[-2000:])
    return {"seconds": time.perf_counter() - t, "sentences": shards * shard_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--sizes", default="100000,5000000")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--distill-shards", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--only", choices=["train", "distill"], help="run one of the two (default both)")
    p.add_argument("--out")
    a = p.parse_args()
    src, tgt = load_pairs(DataConfig(data_dir=a.data_dir), "train")
    vs, vt = load_pairs(DataConfig(data_dir=a.data_dir), "val")
    work = Path(a.work or tempfile.mkdtemp(prefix="seqkd-scale-"))
    val = make_corpus(work / "val", len(vs), vs, vt)
    rows = []
    for n in map(int, a.sizes.split(",")):
        files = make_corpus(work / f"c{n}", n, src, tgt)
        row: dict = {"lines": n}
        if a.only != "distill":
            tr = run_train(files, val, a.vocab, a.steps, work / f"train{n}")
            row["train"] = {k: v for k, v in tr.items() if k != "stdout"}
        if a.only != "train":
            d1 = run_distill(files, a.teacher, n, a.distill_shards, a.shard_size, work / f"distill{n}-1")
            d2 = run_distill(files, a.teacher, n, a.distill_shards, a.shard_size, work / f"distill{n}-2", workers=2)
            row["distill_1x2"] = {k: v for k, v in d1.items() if k != "stdout"}
            row["distill_2x1"] = d2
            for key in ("distill_1x2", "distill_2x1"):
                row[key]["sent_per_s"] = row[key]["sentences"] / row[key]["seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(work / f"c{n}", ignore_errors=True)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
