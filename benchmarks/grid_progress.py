"""Where an unfinished (or finished) `seqkd reproduce` run stands: every stage's wall time (its
`clock.json`, time while stopped excluded; a stage still training is marked "running"); for training
stages the epochs, minutes per epoch (clock minutes / epochs, validation included), best validation BLEU
and, for fine-tunings, the stage they started from with the gain over its best; the mean ± sd over seeds
of the best validation BLEU of baseline and seq_kd (`seqkd.reproduce.report.seed_stats`, as the report computes it
on test) and the gap of the means; the finished stages' total hours; `--curves` prints the per-epoch
validation BLEU (or, with `--metric val_ppl`, perplexity; `--metric epoch_s`, seconds between validations) of the
named stages as a markdown table;
`--compare A,B` how far B is ahead of A per epoch and at their bests; `--ckpt A` the share of A's training time spent
writing checkpoints (its train rows' `ckpt_s`); `--rss` the peak resident memory per hour of benchmarks/rss_sampler.sh's
last run; `--stalls` the longest stall per training curve and what `--patience N` would have kept.

    python benchmarks/grid_progress.py --run runs/multi30k-de-en \\
        --out docs/results/multi30k-large-de-en/run1/stage_seconds-partial.json --curves baseline,seq_kd
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path

from seqkd.reproduce.report import seed_stats
from seqkd.training.trainer import patience_step


def metrics_file(stage: Path) -> Path:
    """A stage folder's metrics.jsonl, or `stage` itself when it names a metrics .jsonl file."""
    return stage if stage.suffix == ".jsonl" else stage / "metrics.jsonl"


def val_curve(stage: Path, key: str = "val_bleu") -> dict[int, float]:
    """epoch -> validation `key` (greedy BLEU, val_ppl, or epoch_s: the seconds since the previous validation;
    the last validation of an epoch run more than once); {} if none."""
    f = metrics_file(stage)
    if not f.exists():
        return {}
    rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
    if key == "epoch_s":  # seconds between consecutive validations (`elapsed`; a pause in between counts)
        val = [r for r in rows if r["type"] == "val"]
        return {b["epoch"]: b["elapsed"] - a["elapsed"] for a, b in zip(val, val[1:])}
    return {r["epoch"]: r[key] for r in rows if r["type"] == "val"}


def longest_stall(curve: dict[int, float]) -> int:
    """The most validations in a row without a new best that were followed by a new best: a run with
    patience at or under it would have stopped before that later best."""
    best, run, longest = None, 0, 0
    for e in sorted(curve):
        if best is None or curve[e] > best:
            best, longest, run = curve[e], max(longest, run), 0
        else:
            run += 1
    return longest


def under_patience(curve: dict[int, float], patience: int) -> tuple[int, float, int]:
    """Where training with this `patience` would have stopped on `curve`, by the training loop's own rule
    (`seqkd.training.trainer.patience_step`): (the last epoch it would have run, the best it would have kept,
    that best's epoch)."""
    best, best_e, bad = None, 0, 0
    for e in sorted(curve):
        improved, bad, stop = patience_step(best, bad, curve[e], patience)
        if improved:
            best, best_e = curve[e], e
        if stop:
            return e, best, best_e
    return max(curve), best, best_e


def ckpt_share(stage: Path) -> dict:
    """Checkpoint writing against training time over the train rows that log `ckpt_s`: each row's seconds
    (`elapsed` since the previous row) and its `ckpt_s`. Rows over twice the median seconds (the process was
    stopped or restarted in between) are left out and counted."""
    f = metrics_file(stage)
    rows = [r for r in map(json.loads, f.read_text().splitlines()) if r["type"] == "train" and "ckpt_s" in r]
    pairs = [(b["ckpt_s"], b["elapsed"] - a["elapsed"]) for a, b in zip(rows, rows[1:])]
    if not pairs:
        raise SystemExit(f"--ckpt: {f} has fewer than two train rows with ckpt_s")
    mid = statistics.median(dt for _, dt in pairs)
    kept = [(c, dt) for c, dt in pairs if dt <= 2 * mid]
    return {"steps": f"{rows[1]['step']}-{rows[-1]['step']}", "rows": len(kept), "left_out": len(pairs) - len(kept),
            "ckpt_s": sum(c for c, _ in kept), "ckpt_s_range": (min(c for c, _ in kept), max(c for c, _ in kept)),
            "row_s_median": statistics.median(dt for _, dt in kept),
            "row_s_range": (min(dt for _, dt in kept), max(dt for _, dt in kept)),
            "share": sum(c for c, _ in kept) / sum(dt for _, dt in kept)}


def pauses(log: Path, since: str) -> tuple[int, float]:
    """The STOP ... CONT pairs of a pause log (lines "ISO-TIME STOP|CONT|kill|restart ...", as in run2-pauses.txt),
    and the kill ... restart pairs (the grid stopped within a session to pick up new code), from `since` (an ISO
    time) on: their number and total minutes."""
    n, total, stop = 0, 0.0, None
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    for ln in log.read_text().splitlines():
        t, word = ln.split()[:2]
        ts = datetime.fromisoformat(t.replace("Z", "+00:00"))
        if ts < start:
            continue
        if word in ("STOP", "kill"):
            stop = ts
        elif word in ("CONT", "restart") and stop:
            n, total, stop = n + 1, total + (ts - stop).total_seconds() / 60, None
    return n, total


def rss_by_hour(log: Path, run: str = "") -> tuple[str, dict[str, tuple[float, float | None]]]:
    """One run of benchmarks/rss_sampler.sh in `log`: the one whose "---" marker is `run` ("2026-12-01 start 01:37"),
    else the last. Returns its marker and, for each clock hour, (the peak RSS in GB, the main heap's GB at that
    sample, or None in logs that lack the column)."""
    runs: dict[str, dict[str, tuple[float, float | None]]] = {"": {}}
    marker = ""
    for ln in log.read_text().splitlines():
        if ln.startswith("---"):
            marker = ln.strip("- ")
            runs.setdefault(marker, {})
        elif ln.strip():
            t, kib, *heap = ln.split()
            if int(kib) / 1e6 > runs[marker].get(t[:2], (0.0, None))[0]:
                runs[marker][t[:2]] = (int(kib) / 1e6, int(heap[0]) / 1e6 if heap else None)
    pick = run or marker
    if pick not in runs:
        raise SystemExit(f"{log}: no sampler run marked '--- {run}'")
    return pick, runs[pick]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/multi30k-de-en", help="a reproduce run folder")
    p.add_argument("--out", help="write {stage: seconds} of the finished stages as JSON")
    p.add_argument("--curves", default="",
                   help="comma list of training stages (or metrics .jsonl files, relative to --run) to tabulate")
    p.add_argument("--metric", default="val_bleu", choices=["val_bleu", "val_ppl", "epoch_s"],
                   help="what --curves tabulates")
    p.add_argument("--compare", help="two training stages A,B: B's validation BLEU minus A's, per epoch and best")
    p.add_argument("--ckpt", help="a training stage (or metrics .jsonl, relative to --run): time spent checkpointing")
    p.add_argument("--pauses", help="a pause log (run2-pauses.txt): the stops' number and minutes since --since")
    p.add_argument("--since", default="1970-01-01T00:00:00Z", help="ISO time for --pauses")
    p.add_argument("--rss", help="a log of benchmarks/rss_sampler.sh: peak RSS per hour of its last run")
    p.add_argument("--rss-run", default="", help="with --rss: the run whose marker is this ('2026-12-01 start 01:37')")
    p.add_argument("--stalls", action="store_true", help="per training stage (or *metrics.jsonl in --run): the "
                   "longest run of validations without a new best that a later best ended (patience must exceed it)"
                   ", and what --patience would have kept")
    p.add_argument("--patience", type=int, default=3, help="with --stalls: the patience to replay on each curve")
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
            if done:  # a running stage's best so far is no seed's result
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
    if a.ckpt:
        c = ckpt_share(run / a.ckpt)
        print(f"\ncheckpoints of {a.ckpt}, steps {c['steps']}: {c['ckpt_s']:.1f} s over {c['rows']} train rows "
              f"({c['ckpt_s_range'][0]:.2f}-{c['ckpt_s_range'][1]:.2f} s a row; {c['left_out']} row(s) over twice the "
              f"median left out), rows of {c['row_s_median']:.0f} s median ({c['row_s_range'][0]:.0f}-"
              f"{c['row_s_range'][1]:.0f}): {100 * c['share']:.1f}% of the training time")
    if a.pauses:
        n, minutes = pauses(Path(a.pauses), a.since)
        print(f"\npauses since {a.since}: {n}, {minutes:.1f} minutes")
    if a.rss:
        marker, peaks = rss_by_hour(Path(a.rss), a.rss_run)
        print(f"\npeak RSS per hour since '{marker}': " + ", ".join(
            f"{h}h {g:.2f} GB" + (f" (heap {hp:.2f})" if hp is not None else "") for h, (g, hp) in peaks.items()))
    if a.stalls:
        found = sorted([*run.glob("*metrics.jsonl"), *run.glob("*/metrics.jsonl")])
        print(f"\n| training | epochs | best (epoch) | longest stall before a later best | under patience "
              f"{a.patience}: stops after epoch, best (epoch), vs best |\n|---|---|---|---|---|")
        for f in found:
            if curve := val_curve(f):
                name = f.parent.name if f.name == "metrics.jsonl" else f.name.removesuffix("-metrics.jsonl")
                e = max(curve, key=curve.get)
                stop, kept, kept_e = under_patience(curve, a.patience)
                print(f"| {name} | {len(curve)} | {curve[e]:.2f} ({e}) | {longest_stall(curve)} | {stop}, "
                      f"{kept:.2f} ({kept_e}), {kept - curve[e]:+.2f} |")
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
