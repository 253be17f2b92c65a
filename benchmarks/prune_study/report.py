"""Pruning study report: the evaluations under RUN/eval -> results.json, report.md, bleu_vs_nonzero.png.

    python benchmarks/prune_study/report.py RUN --teacher runs/student-de-en --out docs/results/prune-study
    python benchmarks/prune_study/report.py --pick-int8 RUN   # prints the pruned model to export as int8

The int8 candidate is chosen on validation BLEU (never on the test set): among the pruned models with
at least 20x fewer non-zero parameters than the teacher, the one with the best validation BLEU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqkd.fsutil import write_json, write_text
from seqkd.report import machine_info

TARGET_RATIO = 20.0
# run sub-folders, each one `seqkd prune` output (its rounds in round-k): the 0% control, the three schemes'
# gradual chains, and class-blind / class-distribution 80% retrained 4x longer from their 50% rounds
SERIES = ("pruned_0", "class-blind", "class-uniform", "class-distribution", "class-blind-long",
          "class-distribution-long")


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


def _nonzero(model: Path) -> dict:
    from seqkd.models import load_model
    from seqkd.prune import sparsity_report

    return sparsity_report(load_model(model))


def pruned_points(run: Path) -> list[dict]:
    """Every pruned model folder (schemes and their rounds) with its prune_result and validation BLEU."""
    rows = []
    for scheme_dir in [run / s for s in SERIES]:
        for d in sorted(scheme_dir.glob("round-*")) + [scheme_dir]:
            if not (d / "prune_result.json").exists():
                continue
            pr = _load(d / "prune_result.json")
            val = _load(d / "train_result.json")["best_metric"]
            scheme = pr["scheme"] if scheme_dir.name != "pruned_0" else "none"
            rows.append({"dir": str(d), "series": scheme_dir.name, "scheme": scheme,
                         "target_sparsity": pr["target_sparsity"], "val_bleu": val,
                         **{k: pr[k] for k in ("params_total", "params_nonzero", "non_embedding_total",
                                               "non_embedding_nonzero")}})
    return rows


def pick_int8(run: Path, teacher_nonzero: int) -> str:
    pts = [p for p in pruned_points(run) if p["target_sparsity"] > 0]
    ok = [p for p in pts if teacher_nonzero / p["params_nonzero"] >= TARGET_RATIO]
    if ok:
        return max(ok, key=lambda p: (p["val_bleu"], -p["params_nonzero"]))["dir"]
    return min(pts, key=lambda p: p["params_nonzero"])["dir"]


def _eval_name(p: dict) -> str:
    if p["series"] == "pruned_0":
        return "pruned_0"
    return f"{p['series']}-{round(100 * p['target_sparsity'])}"


def build(run: Path, teacher: Path) -> dict:
    ev = run / "eval"
    t_nz = _nonzero(teacher)
    rows = []
    for name, model, kind in [("teacher", teacher, "teacher"), ("seq_kd", run / "seq_kd", "student"),
                              ("seq_kd+seq_inter", run / "seq_kd+seq_inter", "student (parent)")]:
        e = _load(ev / f"{name}.json")
        rows.append({"name": name, "kind": kind, "scheme": "", "target_sparsity": 0.0, **_nonzero(model),
                     "val_bleu": _load(model / "train_result.json")["best_metric"], **e})
    for p in pruned_points(run):
        name = _eval_name(p)
        if (ev / f"{name}.json").exists():
            rows.append({"name": name, "kind": "pruned + retrained", **p, **_load(ev / f"{name}.json")})
    shrunk = run / "dec1+seq_inter"
    if (ev / "dec1.json").exists():
        rows.append({"name": "dec1", "kind": "shrunk + retrained", "scheme": "1 of 2 decoder layers",
                     "target_sparsity": 0.0, **_nonzero(shrunk), "val_bleu": _load(shrunk / "train_result.json")[
                         "best_metric"], **_load(ev / "dec1.json")})
    parent = next(r for r in rows if r["name"] == "seq_kd+seq_inter")
    control = next((r for r in rows if r["name"] == "pruned_0"), parent)
    for r in rows:
        r["ratio_to_teacher"] = t_nz["params_nonzero"] / r["params_nonzero"]
        r["delta_beam_vs_parent"] = r["bleu_beam"] - parent["bleu_beam"]
        r["delta_greedy_vs_parent"] = r["bleu_greedy"] - parent["bleu_greedy"]
        r["delta_beam_vs_control"] = r["bleu_beam"] - control["bleu_beam"]
        r["meets_target"] = (r["kind"] in ("pruned + retrained", "shrunk + retrained")
                             and r["ratio_to_teacher"] >= TARGET_RATIO
                             and min(r["delta_beam_vs_parent"], r["delta_greedy_vs_parent"]) >= -0.5)
    int8 = {}
    for f in ev.glob("int8-*.json"):
        int8 = {**_load(f), "source": f.stem[len("int8-"):], **_load(ev / "int8_export.json")}
    bench = {f.stem[len("bench-"):]: _load(f) for f in sorted(ev.glob("bench-*.json"))}
    return {"teacher_nonzero": t_nz["params_nonzero"], "target_ratio": TARGET_RATIO, "rows": rows, "int8": int8,
            "bench": bench, "machine": machine_info(2)}


def markdown(res: dict) -> str:
    rows = res["rows"]
    lines = ["# Pruning study: Multi30k de->en, test_2016_flickr", "",
             f"Teacher: {res['teacher_nonzero']:,} non-zero parameters. Target: >= {res['target_ratio']:.0f}x fewer "
             "non-zero parameters than the teacher at <= 0.5 BLEU (greedy and beam) below the unpruned student.", "",
             "| model | scheme | sparsity | non-zero (all) | non-zero (non-emb.) | x fewer than teacher | val BLEU "
             "| test greedy | test beam5 | beam vs parent | beam vs 0% control | target met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['scheme']} | {r['target_sparsity']:.2f} | {r['params_nonzero']:,} "
                     f"| {r['non_embedding_nonzero']:,} | {r['ratio_to_teacher']:.1f} | {r['val_bleu']:.2f} "
                     f"| {r['bleu_greedy']:.2f} | {r['bleu_beam']:.2f} | {r['delta_beam_vs_parent']:+.2f} "
                     f"| {r['delta_beam_vs_control']:+.2f} | {'yes' if r['meets_target'] else ''} |")
    lines += ["", f"BLEU signature: `{rows[0]['bleu_signature']}`", ""]
    if res["int8"]:
        i = res["int8"]
        lines += ["## int8", "",
                  f"{i['source']} as CTranslate2 int8: test BLEU {i['bleu_greedy']:.2f} greedy / {i['bleu_beam']:.2f} "
                  f"beam; on disk {i['ct2_int8_mb']:.2f} MB int8 vs {i['ct2_float32_mb']:.2f} MB CT2 float32 and "
                  f"{i['hf_safetensors_mb']:.2f} MB HF safetensors (zeros are stored: dense formats).", ""]
    if res["bench"]:
        lines += ["## Speed on dense kernels (CTranslate2, 2 threads, test_2016_flickr)", "",
                  "| model | engine | search | sent/s | target tok/s |", "|---|---|---|---|---|"]
        for name, brows in res["bench"].items():
            for b in brows:
                lines.append(f"| {name} | {b['engine']} | {b['search']} | {b['sent_per_s']:.1f} "
                             f"| {b['tgt_tok_per_s']:.0f} |")
        lines.append("")
    m = res["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores; versions {m['versions']}.", "",
              "Plot: bleu_vs_nonzero.png.", ""]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    fig, ax = plt.subplots(figsize=(8, 5))
    parent = next(r for r in rows if r["name"] == "seq_kd+seq_inter")
    for scheme, marker in (("class-blind", "o"), ("class-uniform", "s"), ("class-distribution", "^"),
                           ("class-blind-long", "D"), ("class-distribution-long", "v")):
        pts = sorted([r for r in rows if r.get("series") == scheme], key=lambda r: -r["params_nonzero"])
        base = f"{scheme.removesuffix('-long')}-50"
        start = next((r for r in rows if r["name"] == base), parent) if scheme.endswith("long") else parent
        if not pts:
            continue
        for key, style in (("bleu_beam", "-"), ("bleu_greedy", "--")):
            xs = [start["params_nonzero"]] + [r["params_nonzero"] for r in pts]
            ys = [start[key]] + [r[key] for r in pts]
            ax.plot(xs, ys, style, marker=marker, label=f"{scheme} ({key.split('_')[1]})")
    for r in rows:
        if r["name"] in ("teacher", "pruned_0", "dec1"):
            ax.scatter([r["params_nonzero"]], [r["bleu_beam"]], marker="*", s=120, zorder=3)
            ax.annotate(r["name"], (r["params_nonzero"], r["bleu_beam"]), textcoords="offset points", xytext=(5, 5))
    limit = res["teacher_nonzero"] / res["target_ratio"]
    ax.axvline(limit, color="grey", ls=":", label=f"{res['target_ratio']:.0f}x fewer than teacher")
    ax.axhline(parent["bleu_beam"] - 0.5, color="grey", ls="-.", label="parent beam - 0.5")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters")
    ax.set_ylabel("test_2016_flickr BLEU")
    ax.set_title("Magnitude pruning + retraining (Multi30k de->en)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the study's run folder (runs/prune-study)")
    ap.add_argument("--teacher", default="runs/student-de-en", help="teacher model folder")
    ap.add_argument("--pick-int8", action="store_true", help="print the model folder to export as int8 and exit")
    ap.add_argument("--out", default="docs/results/prune-study", help="report folder")
    a = ap.parse_args()
    run, teacher = Path(a.run), Path(a.teacher)
    if a.pick_int8:
        print(pick_int8(run, _nonzero(teacher)["params_nonzero"]))
        return
    res = build(run, teacher)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", res)
    write_text(out / "report.md", markdown(res))
    plot(res, out / "bleu_vs_nonzero.png")
    print(markdown(res))


if __name__ == "__main__":
    main()
