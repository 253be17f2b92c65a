"""Where an unfinished (or finished) `seqkd reproduce` run stands: every stage's wall time (its
`clock.json`, time while stopped excluded; a stage still training is marked "running"); for training
stages the epochs, minutes per epoch (clock minutes / epochs, validation included), best validation BLEU
and, for fine-tunings, the stage they started from with the gain over its best; the mean ± sd over seeds
of the best validation BLEU of baseline and seq_kd (`seqkd.report.seed_stats`, as the report computes it
on test) and the gap of the means; the finished stages' total hours; `--curves` prints the per-epoch
validation BLEU (or, with `--metric val_ppl`, perplexity) of the named stages as a markdown table;
`--compare A,B` how far B is ahead of A per epoch and at their bests; `--rss` the peak resident memory per hour of
benchmarks/rss_sampler.sh's last run.

    python benchmarks/grid_progress.py --run runs/multi30k-de-en \\
        --out docs/results/multi30k-de-en/stage_seconds-partial.json --curves baseline,seq_kd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqkd.report import seed_stats


def val_curve(stage: Path, key: str = "val_bleu") -> dict[int, float]:
    """epoch -> validation `key` (greedy BLEU, or val_ppl; the last validation of an epoch run more than
    once); {} if none."""
    f = stage if stage.suffix == ".jsonl" else stage / "metrics.jsonl"  # a stage folder or its metrics file
    if not f.exists():
        return {}
    rows = (json.loads(ln) for ln in f.read_text().splitlines() if ln.strip())
    return {r["epoch"]: r[key] for r in rows if r["type"] == "val"}


def rss_by_hour(log: Path) -> tuple[str, dict[str, float]]:
    """The last run of benchmarks/rss_sampler.sh in `log` (after its last "---" marker): the marker and
    the peak RSS in GB of each clock hour."""
    marker, peaks = "", {}
    for ln in log.read_text().splitlines():
        if ln.startswith("---"):
            marker, peaks = ln.strip("- "), {}
        elif ln.strip():
            t, kib = ln.split()
            peaks[t[:2]] = max(peaks.get(t[:2], 0.0), int(kib) / 1e6)
    return marker, peaks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/multi30k-de-en", help="a reproduce run folder")
    p.add_argument("--out", help="write {stage: seconds} of the finished stages as JSON")
    p.add_argument("--curves", default="",
                   help="comma list of training stages (or metrics .jsonl files, relative to --run) to tabulate")
    p.add_argument("--metric", default="val_bleu", choices=["val_bleu", "val_ppl"], help="what --curves tabulates")
    p.add_argument("--compare", help="two training stages A,B: B's validation BLEU minus A's, per epoch and best")
    p.add_argument("--rss", help="a log of benchmarks/rss_sampler.sh: peak RSS per hour of its last run")
    p.add_argument("--seeds", default="1,2,3", help="the preset's seeds (the first is the unsuffixed stage)")
    a = p.parse_args()
    run, seconds, best, running = Path(a.run), {}, [], 0.0
    print("| stage | minutes | epochs | min/epoch | best val BLEU (epoch) | from (gain) |\n|---|---|---|---|---|---|")
    for d in sorted(x for x in run.iterdir() if (x / "stage.json").exists() or (x / "clock.json").exists()):
        done = (d / "stage.json").exists()
        secs = json.loads((d / ("stage.json" if done else "clock.json")).read_text())["seconds"]
        if done:
            seconds[d.name] = round(secs, 1)
        else:
            running += secs
        ep = per_epoch = top = origin = ""
        if curve := val_curve(d):
            e = max(curve, key=curve.get)
            ep, top = len(curve), f"{curve[e]:.2f} ({e})"
            per_epoch = f"{secs / len(curve) / 60:.1f}"
            best.append({"name": d.name, "val_bleu": curve[e]})
            init = json.loads((d / "train_config.json").read_text()).get("init_from") \
                if (d / "train_config.json").exists() else None
            if init and (parent := val_curve(run / Path(init).name)):
                origin = f"{Path(init).name} ({curve[e] - max(parent.values()):+.2f})"
        print(f"| {d.name} | {secs / 60:.1f}{'' if done else ' (running)'} | {ep} | {per_epoch} | {top} | {origin} |")
    print(f"\nfinished stages: {len(seconds)}, {sum(seconds.values()) / 3600:.2f} h of stage clock time"
          f" (+ {running / 3600:.2f} h in the running stage)")
    if a.out:
        Path(a.out).write_text(json.dumps(seconds, indent=1) + "\n")
    stats = seed_stats(best, [int(x) for x in a.seeds.split(",")], keys=("val_bleu",))
    for system, s in stats.items():
        v = s["val_bleu"]
        print(f"\n{system}: best val BLEU over {s['n']} seeds {' / '.join(f'{x:.2f}' for x in v['values'])}, "
              f"mean {v['mean']:.2f} ± {v['sd']:.2f} (sd)", end="")
    if len(stats) == 2:
        gap = stats["seq_kd"]["val_bleu"]["mean"] - stats["baseline"]["val_bleu"]["mean"]
        print(f"\nseq_kd - baseline, means: {gap:+.2f}", end="")
    print()
    if a.rss:
        marker, peaks = rss_by_hour(Path(a.rss))
        print(f"\npeak RSS per hour since '{marker}': " + ", ".join(f"{h}h {g:.2f} GB" for h, g in peaks.items()))
    names = [n for n in a.curves.split(",") if n]
    if names:
        curves = {n: val_curve(run / n, a.metric) for n in names}
        epochs = sorted(set().union(*curves.values()))
        print("\n| epoch | " + " | ".join(map(str, epochs)) + " |\n|---|" + "---|" * len(epochs))
        for n, c in curves.items():
            print(f"| {n} | " + " | ".join(f"{c[e]:.2f}" if e in c else "" for e in epochs) + " |")
    if a.compare:
        first, second = a.compare.split(",")
        ca, cb = val_curve(run / first), val_curve(run / second)
        common = sorted(set(ca) & set(cb))
        if not common:
            raise SystemExit(f"--compare: {first} and {second} have no validated epoch in common")
        diff = [cb[e] - ca[e] for e in common]
        print(f"\n{second} - {first}, val BLEU at epochs {common[0]}-{common[-1]}: "
              + " ".join(f"{d:+.2f}" for d in diff))
        print(f"{second} ahead at {sum(round(d, 2) > 0 for d in diff)} of {len(diff)} common epochs "
              f"(range {min(diff):+.2f} to {max(diff):+.2f}); best {max(cb.values()):.2f} "
              f"(epoch {max(cb, key=cb.get)} of {len(cb)}) vs {max(ca.values()):.2f} (epoch {max(ca, key=ca.get)} "
              f"of {len(ca)}): {max(cb.values()) - max(ca.values()):+.2f}")


if __name__ == "__main__":
    main()
