"""`seqkd reproduce --status`: where an unfinished (or finished) run stands, read from its run folder alone.

Nothing runs and nothing in the folder is written, so it is safe beside a running grid. Per stage: its clock
(`clock.json`, summed over invocations, time while stopped excluded; a stage without `stage.json` yet is marked
"running"); for training stages the validated epochs, minutes per epoch (clock minutes / epochs, validation
included), the best validation BLEU and, for a fine-tuning (`init_from`), the stage it started from with the gain
over that stage's best. Then the finished stages' total hours and the mean ± sd over seeds of the best validation
BLEU of baseline and seq_kd (`report.seed_stats`, as the report computes it on test).

The options analyse training curves, of stage folders or of committed `NAME-metrics.jsonl` copies (names relative
to the run folder): `curves_table` (per-epoch validation BLEU, perplexity or seconds, a markdown table),
`compare_lines` (how far B is ahead of A per epoch and at their bests), `stalls_table` (the longest stall before a
later best, and what a patience would have kept, by the training loop's own rule) and `ckpt_share` (the share of
the training time spent writing checkpoints).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from seqkd.reproduce.curves import metrics_file, val_curve
from seqkd.reproduce.report import seed_stats
from seqkd.training.trainer import patience_step
from seqkd.util.fsutil import SeqkdError, read_json, read_jsonl, write_json

METRICS = ("val_bleu", "val_ppl", "epoch_s")  # what `curves_table` can tabulate
_FIX = "the run folder is damaged there; `seqkd reproduce --plan` says what a rerun would do"


@dataclass
class StatusOptions:
    """What `reproduce --status` prints beside the stage table (empty: nothing)."""

    curves: tuple[str, ...] = ()  # stages (or metrics .jsonl files) whose per-epoch `metric` is tabulated
    metric: str = "val_bleu"  # one of METRICS
    compare: tuple[str, ...] = ()  # two stages A, B: B's validation BLEU minus A's
    ckpt: str = ""  # a stage: the share of its training time spent writing checkpoints
    stalls: bool = False  # every training curve's longest stall, and what `patience` would have kept
    patience: int = 3
    seconds_json: str = ""  # write {stage: seconds} of the finished stages here


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
    (`trainer.patience_step`): (the last epoch it would have run, the best it would have kept, that best's
    epoch)."""
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
    rows = [r for r in read_jsonl(f) if r.get("type") == "train" and "ckpt_s" in r]
    pairs = [(b["ckpt_s"], b["elapsed"] - a["elapsed"]) for a, b in zip(rows, rows[1:])]
    if not pairs:
        raise SeqkdError(f"--ckpt: {f} has fewer than two train rows with ckpt_s")
    mid = statistics.median(dt for _, dt in pairs)
    kept = [(c, dt) for c, dt in pairs if dt <= 2 * mid]
    return {"steps": f"{rows[1]['step']}-{rows[-1]['step']}", "rows": len(kept), "left_out": len(pairs) - len(kept),
            "ckpt_s": sum(c for c, _ in kept), "ckpt_s_range": (min(c for c, _ in kept), max(c for c, _ in kept)),
            "row_s_median": statistics.median(dt for _, dt in kept),
            "row_s_range": (min(dt for _, dt in kept), max(dt for _, dt in kept)),
            "share": sum(c for c, _ in kept) / sum(dt for _, dt in kept)}


def stage_row(run: Path, d: Path) -> dict:
    """One stage folder: name, done (its `stage.json` is written), seconds on its clock, and for a training stage
    its validation curve's epochs, best and best epoch, and the stage it was fine-tuned from (`init_from`, by
    folder name) with the gain of its best over that stage's best."""
    done = (d / "stage.json").exists()
    row = {"name": d.name, "done": done,
           "seconds": read_json(d / ("stage.json" if done else "clock.json"), ["seconds"], _FIX)["seconds"]}
    if curve := val_curve(d):
        e = max(curve, key=curve.get)
        row.update(epochs=len(curve), val_bleu=curve[e], best_epoch=e)
        init = read_json(d / "train_config.json", fix=_FIX).get("init_from") \
            if (d / "train_config.json").exists() else None
        if init and (parent := val_curve(run / Path(init).name)):
            row.update(init_from=Path(init).name, gain=curve[e] - max(parent.values()))
    return row


def stage_rows(run: Path) -> list[dict]:
    """`stage_row` of every stage folder that has a clock (started) or is finished, by name."""
    return [stage_row(run, d) for d in sorted(run.iterdir())
            if d.is_dir() and ((d / "stage.json").exists() or (d / "clock.json").exists())]


def stage_table(rows: list[dict]) -> list[str]:
    """The stage rows as a markdown table, then the finished stages' hours (and the running ones')."""
    out = ["| stage | minutes | epochs | min/epoch | best val BLEU (epoch) | from (gain) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ep = per_epoch = top = origin = ""
        if "epochs" in r:
            ep, top = r["epochs"], f"{r['val_bleu']:.2f} ({r['best_epoch']})"
            per_epoch = f"{r['seconds'] / r['epochs'] / 60:.1f}"
        if "init_from" in r:
            origin = f"{r['init_from']} ({r['gain']:+.2f})"
        minutes = f"{r['seconds'] / 60:.1f}" + ("" if r["done"] else " (running)")
        out.append(f"| {r['name']} | {minutes} | {ep} | {per_epoch} | {top} | {origin} |")
    done = [r["seconds"] for r in rows if r["done"]]
    running = sum(r["seconds"] for r in rows if not r["done"])
    out.append(f"\nfinished stages: {len(done)}, {sum(done) / 3600:.2f} h of stage clock time"
               f" (+ {running / 3600:.2f} h in the running stage(s))")
    return out


def seed_lines(rows: list[dict], seeds) -> list[str]:
    """Mean ± sd over `seeds` of the finished baseline and seq_kd stages' best validation BLEU (a running stage's
    best so far is no seed's result), and the gap of the means when both have two seeds or more."""
    stats = seed_stats([r for r in rows if r["done"] and "val_bleu" in r], seeds, keys=("val_bleu",))
    out = []
    for system, s in stats.items():
        v = s["val_bleu"]
        out.append(f"{system}: best val BLEU over {s['n']} seeds {' / '.join(f'{x:.2f}' for x in v['values'])}, "
                   f"mean {v['mean']:.2f} ± {v['sd']:.2f} (sd)")
    if len(stats) == 2:
        gap = stats["seq_kd"]["val_bleu"]["mean"] - stats["baseline"]["val_bleu"]["mean"]
        out.append(f"seq_kd - baseline, means: {gap:+.2f}")
    return out


def curves_table(run: Path, names: tuple[str, ...], metric: str = "val_bleu") -> list[str]:
    """The per-epoch `metric` of the named stages (or metrics .jsonl files relative to `run`): a markdown table,
    one row per stage, one column per epoch any of them validated."""
    if metric not in METRICS:
        raise SeqkdError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    curves = {n: val_curve(run / n, metric) for n in names}
    if missing := [n for n, c in curves.items() if not c]:
        raise SeqkdError(f"--curves: no validation rows in {metrics_file(run / missing[0])}")
    epochs = sorted(set().union(*curves.values()))
    out = ["| epoch | " + " | ".join(map(str, epochs)) + " |", "|---|" + "---|" * len(epochs)]
    for n, c in curves.items():
        out.append(f"| {n} | " + " | ".join(f"{c[e]:.2f}" if e in c else "" for e in epochs) + " |")
    return out


def compare_lines(run: Path, first: str, second: str) -> list[str]:
    """How far `second`'s validation BLEU is from `first`'s at each epoch both validated, and at their bests."""
    ca, cb = val_curve(run / first), val_curve(run / second)
    common = sorted(set(ca) & set(cb))
    if not common:
        raise SeqkdError(f"--compare: {first} and {second} have no validated epoch in common")
    diff = [cb[e] - ca[e] for e in common]
    return [f"{second} - {first}, val BLEU at epochs {common[0]}-{common[-1]}: " + " ".join(f"{d:+.2f}" for d in diff),
            f"{second} ahead at {sum(round(d, 2) > 0 for d in diff)} of {len(diff)} common epochs "
            f"(range {min(diff):+.2f} to {max(diff):+.2f}); best {max(cb.values()):.2f} "
            f"(epoch {max(cb, key=cb.get)} of {len(cb)}) vs {max(ca.values()):.2f} (epoch {max(ca, key=ca.get)} "
            f"of {len(ca)}): {max(cb.values()) - max(ca.values()):+.2f}"]


def stalls_table(run: Path, patience: int) -> list[str]:
    """Per training curve in `run` (stage folders' metrics.jsonl, or committed NAME-metrics.jsonl copies): its
    longest stall before a later best (a patience must exceed it to reach that best), and where `patience` would
    have stopped it, what it would have kept and how that compares with the curve's best."""
    out = [f"| training | epochs | best (epoch) | longest stall before a later best | under patience {patience}: "
           "stops after epoch, best (epoch), vs best |", "|---|---|---|---|---|"]
    for f in sorted([*run.glob("*metrics.jsonl"), *run.glob("*/metrics.jsonl")]):
        if curve := val_curve(f):
            name = f.parent.name if f.name == "metrics.jsonl" else f.name.removesuffix("-metrics.jsonl")
            e = max(curve, key=curve.get)
            stop, kept, kept_e = under_patience(curve, patience)
            out.append(f"| {name} | {len(curve)} | {curve[e]:.2f} ({e}) | {longest_stall(curve)} | {stop}, "
                       f"{kept:.2f} ({kept_e}), {kept - curve[e]:+.2f} |")
    return out


def ckpt_lines(run: Path, name: str) -> list[str]:
    """`ckpt_share` of one stage in words."""
    c = ckpt_share(run / name)
    return [f"checkpoints of {name}, steps {c['steps']}: {c['ckpt_s']:.1f} s over {c['rows']} train rows "
            f"({c['ckpt_s_range'][0]:.2f}-{c['ckpt_s_range'][1]:.2f} s a row; {c['left_out']} row(s) over twice the "
            f"median left out), rows of {c['row_s_median']:.0f} s median ({c['row_s_range'][0]:.0f}-"
            f"{c['row_s_range'][1]:.0f}): {100 * c['share']:.1f}% of the training time"]


def status(run: str | Path, seeds, opts: StatusOptions | None = None) -> str:
    """Where the run in folder `run` stands, as text: the stage table, the seeds' means, then what `opts` asks
    for. Reads only, except `opts.seconds_json` (a file the caller names, outside the run folder as a rule)."""
    run, opts = Path(run), opts or StatusOptions()
    if not run.is_dir():
        raise SeqkdError(f"{run}: no run folder there (give the run's --out, or its --preset / --src / --tgt)")
    rows = stage_rows(run)
    parts = [[f"{run}: where the run stands (read from its folder; nothing runs)"]]
    parts.append(stage_table(rows) if rows else ["no stage folders here (none has a stage.json or clock.json)"])
    parts.append(seed_lines(rows, seeds))
    if opts.ckpt:
        parts.append(ckpt_lines(run, opts.ckpt))
    if opts.stalls:
        parts.append(stalls_table(run, opts.patience))
    if opts.curves:
        parts.append(curves_table(run, opts.curves, opts.metric))
    if opts.compare:
        if len(opts.compare) != 2:
            raise SeqkdError(f"--compare {','.join(opts.compare)}: expected two stages A,B")
        parts.append(compare_lines(run, *opts.compare))
    if opts.seconds_json:
        write_json(opts.seconds_json, {r["name"]: round(r["seconds"], 1) for r in rows if r["done"]})
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"

