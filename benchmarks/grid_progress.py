"""Where an unfinished (or finished) `seqkd reproduce` run stands: every finished stage's wall time (its
`stage.json`, time while stopped excluded) and, for training stages, epochs and best validation BLEU;
`--curves` prints the per-epoch validation BLEU of the named stages as a markdown table.

    python benchmarks/grid_progress.py --run runs/multi30k-de-en \\
        --out docs/results/multi30k-de-en/stage_seconds-partial.json --curves baseline,seq_kd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def val_curve(stage: Path) -> dict[int, float]:
    """epoch -> validation greedy BLEU, from the stage's metrics.jsonl."""
    rows = (json.loads(ln) for ln in (stage / "metrics.jsonl").read_text().splitlines() if ln.strip())
    return {r["epoch"]: r["val_bleu"] for r in rows if r["type"] == "val"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/multi30k-de-en", help="a reproduce run folder")
    p.add_argument("--out", help="write {stage: seconds} of the finished stages as JSON")
    p.add_argument("--curves", default="", help="comma list of training stages to tabulate per epoch")
    a = p.parse_args()
    run, seconds = Path(a.run), {}
    print("| stage | minutes | epochs | best val BLEU (epoch) |\n|---|---|---|---|")
    for d in sorted(x for x in run.iterdir() if (x / "stage.json").exists()):
        seconds[d.name] = round(json.loads((d / "stage.json").read_text())["seconds"], 1)
        ep, best = "", ""
        if (d / "train_result.json").exists():
            r, curve = json.loads((d / "train_result.json").read_text()), val_curve(d)
            top = max(curve, key=curve.get)
            ep, best = r["epochs"], f"{curve[top]:.2f} ({top})"
        print(f"| {d.name} | {seconds[d.name] / 60:.1f} | {ep} | {best} |")
    if a.out:
        Path(a.out).write_text(json.dumps(seconds, indent=1) + "\n")
    names = [n for n in a.curves.split(",") if n]
    if names:
        curves = {n: val_curve(run / n) for n in names}
        epochs = sorted(set().union(*curves.values()))
        print("\n| epoch | " + " | ".join(map(str, epochs)) + " |\n|---|" + "---|" * len(epochs))
        for n, c in curves.items():
            print(f"| {n} | " + " | ".join(f"{c[e]:.2f}" if e in c else "" for e in epochs) + " |")


if __name__ == "__main__":
    main()
