"""Question: does CTranslate2's CPU GEMM backend change speed or output? `CT2_USE_MKL=0` (its default on a CPU that
is not GenuineIntel) against `CT2_USE_MKL=1` (Intel MKL), float32 and int8, greedy and beam, on one model. CTranslate2
reads the variable once per process, so each repetition runs `seqkd bench` once per setting, alternating
(interleaved); printed: BLEU and the median (min-max) sentences/s over the repetitions.

The committed figure (docs/results/ct2-backend/README.md, "What was measured"; the model is run `a` of
docs/results/deep-encoder) came from the first command; the second prints it from the committed JSON:

    python benchmarks/ct2_backend.py --model runs/exp/a --split val --repeats 3 --dir runs/mkl
    python benchmarks/ct2_backend.py --dir docs/results/ct2-backend --summarize
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = {"mkl0": "0", "mkl1": "1"}


def run(model: str, split: str, repeats: int, out: Path, threads: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for rep in range(1, repeats + 1):
        for name, value in SETTINGS.items():
            env = {**os.environ, "CT2_USE_MKL": value}
            subprocess.run([sys.executable, "-m", "seqkd", "bench", "--model", model, "--split", split,
                            "--engines", "ct2,ct2-int8", "--repeats", "1", "--threads", str(threads), "--quiet",
                            "--out", str(out / f"{name}-rep{rep}.json")], env=env, check=True,
                           stdout=subprocess.DEVNULL)


def summarize(out: Path) -> None:
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for f in sorted(out.glob("*-rep*.json")):
        setting = f.name.split("-rep")[0]
        for r in json.loads(f.read_text()):
            rows.setdefault((setting, r["engine"], r["search"]), []).append(r)
    print("| backend | engine | search | BLEU | sent/s median (min-max) | runs |\n|---|---|---|---|---|---|")
    for (setting, engine, search), rs in sorted(rows.items()):
        sp = [r["sent_per_s"] for r in rs]
        bleu = sorted({round(r["bleu"], 2) for r in rs})
        print(f"| {setting} | {engine} | {search} | {', '.join(f'{b:.2f}' for b in bleu)} | "
              f"{statistics.median(sp):.1f} ({min(sp):.1f}-{max(sp):.1f}) | {len(sp)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--split", default="val")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", required=True, help="folder for (or of) the per-run JSON files")
    ap.add_argument("--summarize", action="store_true", help="only summarize the JSON files in --dir")
    a = ap.parse_args()
    if not a.summarize:
        if not a.model:
            ap.error("--model is needed unless --summarize")
        run(a.model, a.split, a.repeats, Path(a.dir), a.threads)
    summarize(Path(a.dir))


if __name__ == "__main__":
    main()
