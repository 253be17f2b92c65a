"""Question: what did the archived stages of a grid measure? A markdown row per stage from the run archive alone
(no run folder): stage clock, epochs (best epoch), best validation BLEU, test BLEU greedy / beam; then the seeds'
mean ± sd of baseline and seq_kd (test greedy / beam, best val BLEU); a choice stage (best, fast, int8_pick) prints
what it chose and its candidates' figures, the `speed` stage its S1 timing; `--params`, each stage's non-zero
parameters against the teacher's (Z1). Chapter 3's table in
docs/results/multi30k-de-en/README.md came from

    SEQKD_DATA=../shared/data/multi30k python benchmarks/archive_rows.py docs/results/multi30k-de-en/archive \
        baseline-seed2 seq_kd-seed2 baseline-seed3 seq_kd-seed3 pruned_0

The stage identities come from the preset and the data, as in `seqkd reproduce` (the data's content, not its path).
"""

from __future__ import annotations

import argparse
import json
import statistics

from seqkd.data.load import load_pairs
from seqkd.reproduce.archive import Archive
from seqkd.reproduce.graph import stage_hashes
from seqkd.reproduce.pipeline import grid_for, load_preset


def _json(arch: Archive, name: str, h: str, rel: str) -> dict:
    return json.loads(arch.read(name, h, rel))


def _row(arch: Archive, hashes: dict, name: str) -> tuple[str, dict]:
    """One stage's markdown row and its evaluation row (with `val_bleu`, the training's best; a stage that is no
    system, such as a fast student's Seq-KD training before its fine-tuning, has no evaluation, and one whose
    evaluation has not run yet none archived: "-"; a stage that trains nothing, such as the int8 export, has no
    epochs or validation BLEU: "-")."""
    h, ev = hashes[name], f"eval_{name}"
    test = _json(arch, ev, hashes[ev], "row.json") if ev in hashes and arch.entry(ev, hashes[ev]) else {}
    entry = arch.entry(name, h)
    minutes = entry["seconds"] / 60
    score = f"{test['bleu_greedy']:.2f} / {test['bleu_beam']:.2f} |" if "bleu_beam" in test else "- |"
    if "train_result.json" not in entry.get("files", {}):  # no training (an export): clock, test
        return f"| {name} | {minutes:.1f} min | - | - | " + score, test
    tr = _json(arch, name, h, "train_result.json")
    epoch = {}
    for line in arch.read(name, h, "metrics.jsonl").decode().splitlines():
        m = json.loads(line)
        if "epoch" in m:
            epoch.setdefault(m["step"], m["epoch"])
    test["val_bleu"] = tr["best_metric"]
    return (f"| {name} | {minutes:.1f} min | {tr['epochs']} ({epoch.get(tr['best_step'])}) | {tr['best_metric']:.2f} | "
            + score), test


def _speed(sp: dict) -> str:
    """The speed stage's S1 line: the teacher's beam and the student's greedy sentences/s (median of the interleaved
    repetitions, range), test BLEU, and the ratio."""
    tb, sg = sp["teacher_beam"], sp["student_greedy"]
    return (f"speed ({sp['n']} sentences, {sp['threads']} threads, {len(tb['seconds'])} interleaved repetitions): "
            f"teacher beam {tb['sent_per_s_median']:.0f} sent/s ({tb['sent_per_s_min']:.0f}-{tb['sent_per_s_max']:.0f})"
            f", BLEU {tb['bleu']:.2f}; {sp['student']} greedy {sg['sent_per_s_median']:.0f} sent/s "
            f"({sg['sent_per_s_min']:.0f}-{sg['sent_per_s_max']:.0f}), BLEU {sg['bleu']:.2f}; "
            f"{sp['speedup_median']:.1f}x (range {sp['speedup_range'][0]:.1f}-{sp['speedup_range'][1]:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--preset", default="multi30k")
    ap.add_argument("--src", default="de")
    ap.add_argument("--tgt", default="en")
    ap.add_argument("--params", action="store_true", help="also each stage's (non-zero) parameters (Z1)")
    a = ap.parse_args()
    cfg = load_preset(a.preset)
    cfg.data.src, cfg.data.tgt = a.src, a.tgt
    train, val, test = (load_pairs(cfg.data, r) for r in ("train", "val", "test"))
    if cfg.eval_max_sents:
        test = (test[0][: cfg.eval_max_sents], test[1][: cfg.eval_max_sents])
    hashes = stage_hashes(grid_for(cfg, *train, val, test))
    arch = Archive(a.archive)
    print("| stage | stage clock | epochs (best) | best val BLEU | test greedy / beam |\n|---|---|---|---|---|")
    for name in a.stages:
        files = (arch.entry(name, hashes[name]) or {}).get("files", {})
        if "pick.json" in files:  # a choice (best, fast, int8_pick): what it chose, and on what
            print(f"{name}: {json.dumps(_json(arch, name, hashes[name], 'pick.json'))}")
        elif "speed.json" in files:  # S1: each system's interleaved timing (median, range) and the ratio
            print(_speed(_json(arch, name, hashes[name], "speed.json")))
        else:
            print(_row(arch, hashes, name)[0])
    if a.params:  # Z1's counts: parameters, non-zero ones, and how many times fewer than the teacher's
        teacher = _json(arch, "eval_teacher", hashes["eval_teacher"], "row.json")["params_total"]
        for name in a.stages:
            if (ev := f"eval_{name}") in hashes and arch.entry(ev, hashes[ev]):
                r = _json(arch, ev, hashes[ev], "row.json")
                print(f"{name}: {r['params_total']:,} parameters, {r['params_nonzero']:,} non-zero, "
                      f"{teacher / r['params_nonzero']:.1f}x fewer than the teacher's {teacher:,}")
    for base in ("baseline", "seq_kd"):
        names = [base] + [f"{base}-seed{s}" for s in cfg.seeds[1:]]
        if all(arch.entry(f"eval_{n}", hashes[f"eval_{n}"]) for n in names):
            rows = [_row(arch, hashes, n)[1] for n in names]
            stats = [(statistics.mean(v), statistics.stdev(v)) for v in
                     ([r[k] for r in rows] for k in ("bleu_greedy", "bleu_beam", "val_bleu"))]
            print(f"{base}, seeds {cfg.seeds}: test greedy {stats[0][0]:.2f} ± {stats[0][1]:.2f}, "
                  f"beam {stats[1][0]:.2f} ± {stats[1][1]:.2f}; val {stats[2][0]:.2f} ± {stats[2][1]:.2f}")


if __name__ == "__main__":
    main()
