"""results.json -> report.md and PNG plots (paper-style tables, speed/quality frontier, pruning, every training
stage's validation curve)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from seqkd.data.corpus import read_lines
from seqkd.inference.evaluate import paired_significance
from seqkd.inference.plots import Panel, Point, Series, frontier_plot
from seqkd.reproduce.curves import training_curves
from seqkd.reproduce.graph import Stage, eval_name, systems
from seqkd.reproduce.machine import machine_info
from seqkd.util.fsutil import read_json, write_json, write_text

PAPER_NOTE = ("Kim & Rush (2016), WMT14 En-De: teacher 4x1000 17.7 greedy / 19.5 beam; 2x500 baseline 14.7 / 17.6; "
              "Seq-KD 18.9 / 19.0; Seq-KD + Seq-Inter + Word-KD 18.8 / 19.2.")

_FIX = "delete its stage folder and rerun `seqkd reproduce`"


def _significance(out: Path, systems: list[str], refs: list[str], samples: int) -> dict:
    """Paired bootstrap resampling (sacreBLEU) of each system's beam output against the baseline's
    (`evaluate.paired_significance`: p = 1 for the same per-sentence BLEU statistics)."""
    hyps = {s: read_lines(out / eval_name(s) / "beam.txt") for s in systems}  # lines end at \n only, as written
    return paired_significance(hyps, refs, samples)


def write_report(out: Path, cfg, runner, graph: list[Stage], wall: float, refs: list[str]) -> dict:
    """results.json, report.md and the plots, from the stage folders alone (each system's evaluation stage,
    the choices, the speed stage): a grid restored from its archive reports without any model."""
    rows = [{**read_json(out / eval_name(s.name) / "row.json", fix=_FIX), "group": s.group,
             **({"scheme": s.scheme} if s.scheme else {}), "machine": runner.machines.get(eval_name(s.name), {})}
            for s in systems(graph)]
    best = read_json(out / "best" / "pick.json", ["model"], _FIX)["model"]
    sig = _significance(out, [r["name"] for r in rows], refs, cfg.bootstrap_samples)
    for r in rows:
        r.update(sig.get(r["name"], {}))
    speed = read_json(out / "speed" / "speed.json", fix=_FIX)
    results = {
        "preset": cfg.preset, "note": cfg.note, "src": cfg.data.src, "tgt": cfg.data.tgt,
        "test_set": f"{cfg.data.corpus}:{cfg.data.test_split}", "sacrebleu_signature": rows[0]["bleu_signature"],
        "wall_seconds": sum(runner.seconds.values()), "wall_seconds_this_invocation": wall,
        # in the graph's order, however `--jobs` interleaved them: the same table for any schedule
        "stage_seconds": {s.name: runner.seconds[s.name] for s in graph if s.name in runner.seconds},
        "stage_machines": {s.name: runner.machines[s.name] for s in graph if s.name in runner.machines},
        "stages_run_now": runner.ran,
        "best_student": best,
        "machine": machine_info(cfg.threads), "config": asdict(cfg), "systems": rows,
        "seeds": seed_stats(rows, cfg.seeds), "speed": speed,
    }
    if (out / "fast" / "pick.json").exists():  # how `fast` was chosen (on validation)
        pick = read_json(out / "fast" / "pick.json", fix=_FIX)
        results["fast_pick"] = {k: pick[k] for k in ("model", "within_budget", "teacher_val_bleu_beam", "max_drop")}
    results["claims"] = claims(rows, best, speed, results["seeds"])
    results["curves"], results["curve_panels"] = training_curves(out, graph, cfg.small_suffix)
    write_json(out / "results.json", results)
    write_text(out / "report.md", _markdown(results))
    _plots(out, results)
    return results


def seed_stats(rows: list[dict], seeds, keys: tuple[str, ...] = ("bleu_greedy", "bleu_beam")) -> dict:
    """Mean and sample sd over seeds of baseline and seq_kd (main size), of each metric in `keys`
    (default: test greedy and beam BLEU; `reproduce --status` passes best validation BLEU)."""
    import statistics

    by = {r["name"]: r for r in rows}
    out = {}
    for system in ("baseline", "seq_kd"):
        names = [system] + [f"{system}-seed{s}" for s in list(seeds)[1:]]
        got = [by[n] for n in names if n in by]
        if len(got) < 2:
            continue
        out[system] = {"n": len(got), "seeds": list(seeds)[: len(got)]}
        for key in keys:
            vals = [g[key] for g in got]
            out[system][key] = {"mean": statistics.mean(vals), "sd": statistics.stdev(vals), "values": vals}
    return out


# The pruning claim: 80% pruned, 13x fewer parameters than the teacher (Kim & Rush 2016, weight pruning). A float:
# it is also the default of the preset's `int8_min_ratio`, a field of the int8_pick stage's identity.
Z1_RATIO = 13.0

# The paper's figures for each claim (Kim & Rush 2016, WMT14 En-De).
PAPER = {
    "Q1": "Seq-KD 2x500 greedy 18.9 vs baseline 14.7 greedy (+4.2) / 17.6 beam (+1.3)",
    "Q2": "Seq-KD 2x500 greedy 18.9 vs teacher beam 19.5 (-0.6)",
    "S1": "about 10x (student greedy vs teacher beam 5)",
    "Z1": f"80% pruned 2x500: {Z1_RATIO:g}x fewer parameters than the teacher, -0.4 BLEU vs its beam",
}


def _settings(sp: dict) -> str:
    """How each system of the speed stage decoded: each one's fastest settings, chosen on validation."""
    if not sp.get("tuned_on"):
        return "float32 with the default settings for every system"
    parts = []
    for key in ("teacher_beam", "student_greedy", "fast_greedy", "fast_greedy_vmap"):
        if key in sp and "settings" in sp[key]:
            s = sp[key]["settings"]
            parts.append(f"{key} {s['compute_type']}, {s['inter_threads']} batch(es) at once"
                         + (f", engine batching of {s['max_batch_size'] or 'max-tokens'} tokens" if s["engine_batching"]
                            else "") + ("" if s["return_scores"] else ", no scores"))
    return "each system with its fastest settings chosen on validation (" + "; ".join(parts) + ")"


S1_MAX_DROP = 1.0  # S1 counts a student whose greedy test BLEU is at most this far under the teacher's beam


def s1_claim(speed: dict) -> dict:
    """S1 from the speed stage: the fastest greedy student decoding measured (the `fast` pick, with and without
    its shortlist, where the grid has one; else the best student) among those within S1_MAX_DROP test BLEU of
    the teacher's beam (if none is, the fastest, and the claim fails): its median sentences/s over the teacher's
    beam-5 median, with the range over the interleaved repetitions."""
    tb = speed["teacher_beam"]
    keys = [k for k in ("fast_greedy", "fast_greedy_vmap") if k in speed] or ["student_greedy"]

    def ratio(k: str) -> float:
        return speed[k]["sent_per_s_median"] / tb["sent_per_s_median"]

    within = [k for k in keys if speed[k]["bleu"] >= tb["bleu"] - S1_MAX_DROP]
    k = max(within or keys, key=ratio)
    s, model = speed[k], speed["fast"] if k.startswith("fast") else speed["student"]
    rng = [s["sent_per_s_min"] / tb["sent_per_s_max"], s["sent_per_s_max"] / tb["sent_per_s_min"]]
    gap = s["bleu"] - tb["bleu"]
    text = (f"`{model}` greedy{' with the shortlist' if k.endswith('vmap') else ''}: {ratio(k):.1f}x (range "
            f"{rng[0]:.1f}-{rng[1]:.1f}x over {len(tb['seconds'])} interleaved repetitions), test BLEU "
            f"{s['bleu']:.2f} vs the teacher's beam {tb['bleu']:.2f} ({gap:+.2f})")
    return {"speedup": ratio(k), "range": rng, "decoding": k, "model": model, "bleu_vs_teacher_beam": gap,
            "text": text, "holds": ratio(k) >= 10 and bool(within)}


def claims(rows: list[dict], best_name: str, speed: dict, seeds: dict) -> dict:
    """Q1, Q2, S1 and Z1: this run's figure, the paper's, and whether the claim holds here.

    The best student is the one chosen on validation BLEU, never on test; Q1 uses the seed means
    where several seeds ran.
    """
    by = {r["name"]: r for r in rows}
    teacher, best = by["teacher"], by[best_name]

    def mean(system: str, key: str) -> float:
        return seeds[system][key]["mean"] if system in seeds else by[system][key]

    q1_g = mean("seq_kd", "bleu_greedy") - mean("baseline", "bleu_greedy")
    q1_b = mean("seq_kd", "bleu_greedy") - mean("baseline", "bleu_beam")
    q2 = best["bleu_greedy"] - teacher["bleu_beam"]
    s1 = s1_claim(speed)
    pruned = [r for r in rows if r["group"] in ("pruned", "int8")]
    for r in pruned:
        r["x_fewer_than_teacher"] = teacher["params_total"] / max(1, r["params_nonzero"])
        r["beam_vs_teacher"] = r["bleu_beam"] - teacher["bleu_beam"]
    ok = [r for r in pruned if r["x_fewer_than_teacher"] >= Z1_RATIO and r["beam_vs_teacher"] >= -0.4]
    z1 = max(ok, key=lambda r: r["x_fewer_than_teacher"]) if ok else max(
        (r for r in pruned if r["x_fewer_than_teacher"] >= Z1_RATIO), key=lambda r: r["bleu_beam"], default=None)

    def shown(system: str, key: str) -> str:  # `mean`, with the seeds' sd where there are seeds
        return f"{mean(system, key):.2f}" + (f" ± {seeds[system][key]['sd']:.2f}" if system in seeds else "")

    seeds_note = f" (mean ± sd over {seeds['seq_kd']['n']} seeds)" if "seq_kd" in seeds else ""
    return {
        "Q1": {"claim": "Seq-KD greedy >= baseline greedy + 2, and >= baseline beam",
               "this_run": f"Seq-KD greedy {shown('seq_kd', 'bleu_greedy')} vs baseline greedy "
                           f"{shown('baseline', 'bleu_greedy')} ({q1_g:+.2f}) and beam "
                           f"{shown('baseline', 'bleu_beam')} ({q1_b:+.2f}){seeds_note}",
               "seq_kd_minus_baseline_greedy": q1_g, "seq_kd_greedy_minus_baseline_beam": q1_b,
               "paper": PAPER["Q1"], "holds": q1_g >= 2 and q1_b >= 0},
        "Q2": {"claim": "best student greedy within 0.5 BLEU of the teacher's beam",
               "this_run": f"{best_name} greedy {best['bleu_greedy']:.2f} vs teacher beam {teacher['bleu_beam']:.2f} "
                           f"({q2:+.2f})", "best_greedy_minus_teacher_beam": q2,
               "paper": PAPER["Q2"], "holds": q2 >= -0.5},
        "S1": {"claim": f"the fastest student greedy within {S1_MAX_DROP:g} test BLEU of the teacher's beam: its "
                        "sentences/s / the teacher's beam-5 sentences/s, each with its fastest settings, >= 10x",
               "this_run": s1.pop("text"), **s1, "paper": PAPER["S1"]},
        "Z1": {"claim": f">= {Z1_RATIO:g}x fewer non-zero parameters than the teacher, within 0.4 BLEU of the "
                        "teacher's beam",
               "this_run": f"no pruned model reaches {Z1_RATIO:g}x" if z1 is None else
               f"{z1['name']}: {z1['x_fewer_than_teacher']:.1f}x fewer, beam {z1['bleu_beam']:.2f} "
               f"({z1['beam_vs_teacher']:+.2f} vs teacher)",
               "model": z1 and z1["name"], "paper": PAPER["Z1"], "holds": bool(ok)},
        "greedy_beam_gap": {"baseline": mean("baseline", "bleu_beam") - mean("baseline", "bleu_greedy"),
                            "seq_kd": mean("seq_kd", "bleu_beam") - mean("seq_kd", "bleu_greedy"),
                            "paper": "2.9 vs 0.1", "seeds": seeds["seq_kd"]["n"] if "seq_kd" in seeds else 1},
    }


def _fmt_row(r: dict) -> str:
    sig = "" if r["name"] == "baseline" else (f"{'**yes**' if r['significant'] else 'no'} ({r['p_value']:.3f})")
    return (f"| {r['name']} | {r['params_total'] / 1e6:.2f}M | {r['params_nonzero'] / 1e6:.2f}M | "
            f"{r.get('val_bleu_greedy', float('nan')):.2f} | {r['bleu_greedy']:.2f} | {r['bleu_beam']:.2f} | "
            f"{r['chrf_greedy']:.2f} | {r['ppl']:.2f} | {100 * r['p_beam']:.3g}% | {r['sent_per_s_greedy']:.0f} | "
            f"{r['sent_per_s_beam']:.0f} | {_ms(r, 'greedy')} | {_ms(r, 'beam')} | {r['size_mb']:.1f} | {sig} |")


def _ms(r: dict, search: str) -> str:
    """p50 / p95 ms of one sentence at a time, or '-' where not measured."""
    if f"p50_ms_{search}" not in r:
        return "-"
    return f"{r[f'p50_ms_{search}']:.1f} / {r[f'p95_ms_{search}']:.1f}"


def _markdown(res: dict) -> str:
    return "\n".join(_claims_md(res) + _table1_md(res) + _pruning_md(res) + _speed_md(res) + _curves_md(res)
                     + _stages_md(res))


def _claims_md(res: dict) -> list[str]:
    """The report's head: the run, its machine, the paper's claims and the greedy-to-beam gap."""
    m = res["machine"]
    lines = []
    if res.get("note"):
        lines += [f"**{res['note'][0].upper() + res['note'][1:]}.**", ""]
    lines += [f"# seqkd reproduce: preset `{res['preset']}`, {res['src']}->{res['tgt']}, test {res['test_set']}", ""]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {_count(m['threads'], 'thread')}, GPU: {m['gpu'] or 'none'}; "
              f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
              f"Total stage wall time: {res['wall_seconds'] / 3600:.2f} h. Best student (validation BLEU): "
              f"`{res['best_student']}`.", "", f"sacreBLEU signature: `{res['sacrebleu_signature']}`", "",
              "## The paper's claims", "", "| claim | this run | the paper | holds |", "|---|---|---|---|"]
    c = res["claims"]
    for k in ("Q1", "Q2", "S1", "Z1"):
        lines.append(f"| {k}: {c[k]['claim']} | {c[k]['this_run']} | {c[k]['paper']} | "
                     f"{'**yes**' if c[k]['holds'] else 'no'} |")
    g = c["greedy_beam_gap"]
    lines += ["", f"Greedy-to-beam gap: baseline {g['baseline']:+.2f}, Seq-KD {g['seq_kd']:+.2f}"
              + (f" (means over {g['seeds']} seeds)" if g.get("seeds", 1) > 1 else "")
              + f" (paper: {g['paper']})."]
    return lines


def _table1_md(res: dict) -> list[str]:
    """Table 1 (every system but the pruned and int8 ones), the seeds, and the float32 control."""
    lines = ["", "## Table 1", "",
             "| system | params | non-zero | val BLEU greedy | BLEU greedy | BLEU beam | chrF greedy | PPL | "
             "p(t=y_hat) | sent/s greedy | sent/s beam | ms greedy p50 / p95 | ms beam p50 / p95 | MB | "
             "sig. vs baseline (p) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_fmt_row(r) for r in res["systems"] if r["group"] not in ("pruned", "int8")]
    if res["seeds"]:
        lines += ["", "Seeds (main student size), test BLEU mean ± sd:", "",
                  "| system | seeds | greedy | beam | values (greedy) |", "|---|---|---|---|---|"]
        for name, st in res["seeds"].items():
            lines.append(f"| {name} | {st['n']} | {st['bleu_greedy']['mean']:.2f} ± {st['bleu_greedy']['sd']:.2f} | "
                         f"{st['bleu_beam']['mean']:.2f} ± {st['bleu_beam']['sd']:.2f} | "
                         + ", ".join(f"{v:.2f}" for v in st["bleu_greedy"]["values"]) + " |")
    by = {r["name"]: r for r in res["systems"]}
    if "baseline-fp32" in by:
        f, st = by["baseline-fp32"], res["seeds"].get("baseline")
        if st:
            g, b = st["bleu_greedy"], st["bleu_beam"]
            ref = (f"the bf16 baseline's {st['n']} seeds: {g['mean']:.2f} ± {g['sd']:.2f} / "
                   f"{b['mean']:.2f} ± {b['sd']:.2f}")
        else:
            ref = f"the bf16 baseline: {by['baseline']['bleu_greedy']:.2f} / {by['baseline']['bleu_beam']:.2f}"
        lines += ["", f"Precision control: `baseline-fp32` (the same recipe and seed in float32) scores "
                  f"{f['bleu_greedy']:.2f} greedy / {f['bleu_beam']:.2f} beam, against {ref}."]
    return lines


def _pruning_md(res: dict) -> list[str]:
    """The pruned and int8 systems."""
    lines = ["", "## Pruning and int8", "",
             "Each round prunes the previous one, retrains on the Seq-KD data and fine-tunes on the Seq-Inter data "
             "with masks kept; `pruned_0` is the control given the same retraining without pruning. The int8 "
             "model's source is chosen on validation BLEU. MB is the file on disk: pruned models are stored "
             "dense (their zeros take space); only `best_int8` is smaller.", "",
             "| system | params | non-zero | x fewer than teacher | val BLEU greedy | BLEU greedy | BLEU beam | "
             "beam vs teacher | sent/s greedy | MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["systems"]:
        if r["group"] in ("pruned", "int8"):
            lines.append(f"| {r['name']} | {r['params_total'] / 1e6:.2f}M | {r['params_nonzero'] / 1e6:.3f}M | "
                         f"{r['x_fewer_than_teacher']:.1f} | {r.get('val_bleu_greedy', float('nan')):.2f} | "
                         f"{r['bleu_greedy']:.2f} | {r['bleu_beam']:.2f} | {r['beam_vs_teacher']:+.2f} | "
                         f"{r['sent_per_s_greedy']:.0f} | {r['size_mb']:.1f} |")
    return lines


def _count(n: int, word: str) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _speed_md(res: dict) -> list[str]:
    """The speed measurement (S1) and, when there is one, the fast student's table."""
    sp = res["speed"]
    tb, sg = sp["teacher_beam"], sp["student_greedy"]
    threads = _count(sp["threads"], "thread") if sp["threads"] else "all threads"
    lines = ["", f"Speed (S1): CTranslate2, {_settings(sp)}, {threads}, {sp['n']} test "
             f"sentences, "
             f"{len(tb['seconds'])} interleaved repetitions: teacher beam {tb['sent_per_s_median']:.0f} sent/s "
             f"(range {tb['sent_per_s_min']:.0f}-{tb['sent_per_s_max']:.0f}), `{sp['student']}` greedy "
             f"{sg['sent_per_s_median']:.0f} sent/s (range {sg['sent_per_s_min']:.0f}-{sg['sent_per_s_max']:.0f}). "
             + columns_note(res)]
    if sp.get("fast"):
        fp = res.get("fast_pick", {})
        if fp.get("within_budget", True):
            how = ("the fastest student within " + (f"{fp['max_drop']:g} BLEU" if fp else "the preset's BLEU budget")
                   + " of the teacher's beam on validation"
                   + (f" ({fp['teacher_val_bleu_beam']:.2f})" if fp else ""))
        else:
            how = (f"no student came within {fp['max_drop']:g} BLEU of the teacher's validation beam "
                   f"({fp['teacher_val_bleu_beam']:.2f}), so this is the one with the best validation BLEU, "
                   "not the fastest")
        lines += ["", f"Fast student (`fast` = `{sp['fast']}`: {how}), same run:", "",
                  "| decoding | test BLEU | sent/s (median) | range | x teacher beam |", "|---|---|---|---|---|"]
        for key, what in (("teacher_beam", "teacher, beam"), ("student_greedy", f"{sp['student']}, greedy"),
                          ("fast_greedy", "fast, greedy"), ("fast_greedy_vmap", "fast, greedy, shortlist")):
            if key in sp:
                x = sp[key]
                ratio = x["sent_per_s_median"] / tb["sent_per_s_median"]
                lines.append(f"| {what} | {x.get('bleu', float('nan')):.2f} | {x['sent_per_s_median']:.0f} | "
                             f"{x['sent_per_s_min']:.0f}-{x['sent_per_s_max']:.0f} | {ratio:.1f}x |")
    return lines


def columns_note(res: dict) -> str:
    """How the per-system speed columns were timed: one pass each, and on fewer threads than the run (a stage
    beside them, under `--jobs`) where the evaluation stages had fewer."""
    note = "The per-system speed and latency columns come from one pass each"
    threads = sorted({r["machine"]["threads"] for r in res["systems"] if r.get("machine", {}).get("threads")})
    if threads and threads[0] < res["machine"]["threads"]:
        note += (f", timed by evaluation stages on {'-'.join(map(str, threads))} of the run's "
                 f"{res['machine']['threads']} threads, with another stage running beside them under `--jobs`: "
                 "they rank systems roughly; this speed measurement ran alone")
    return note + "."


def _curves_md(res: dict) -> list[str]:
    """Each training stage's validation curve: epochs, best (epoch) and greedy BLEU at every validated epoch."""
    lines = ["", "## Validation curves", "",
             "Greedy BLEU on the validation set after each epoch (learning_curves.png draws them); training stops "
             "when it has not improved for the recipe's patience, and keeps its best epoch.", "",
             "| stage | epochs | best (epoch) | val BLEU by epoch |", "|---|---|---|---|"]
    for panel, names in res.get("curve_panels", {}).items():
        lines.append(f"| **{panel}** | | | |")
        for name in names:
            c = res["curves"][name]
            i = max(range(len(c["val_bleu"])), key=c["val_bleu"].__getitem__)
            lines.append(f"| {name} | {len(c['epoch'])} | {c['val_bleu'][i]:.2f} ({c['epoch'][i]}) | "
                         + " ".join(f"{v:.1f}" for v in c["val_bleu"]) + " |")
    return lines


def _stages_md(res: dict) -> list[str]:
    """The notes, each stage's wall time and the plots' names."""
    lines = ["", PAPER_NOTE, "",
             "Significance: sacreBLEU paired bootstrap resampling of beam outputs against the baseline, p < 0.05.",
             "", "## Wall time per stage", "", "| stage | minutes | machine |", "|---|---|---|"]
    lines += [f"| {k} | {v / 60:.2f} | {_machine(res['stage_machines'].get(k, {}))} |"
              for k, v in res["stage_seconds"].items()]
    lines += ["", "Plots: bleu_greedy_beam.png, speed_quality.png, pruning.png, learning_curves.png.", ""]
    return lines


def _machine(m: dict) -> str:
    """A stage's machine in a few words: CPU (ISA), threads, GPU."""
    if not m:
        return "-"
    isa = f" ({', '.join(m['isa'])})" if m.get("isa") else ""
    n = m.get("threads", "?")
    return f"{m.get('cpu', '?')}{isa}, {_count(n, 'thread')}" + (f", {m['gpu']}" if m.get("gpu") else "")


def _plots(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["systems"]
    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(10, 0.35 * len(rows)), 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["bleu_greedy"] for r in rows], 0.4, label="greedy")
    ax.bar([i + 0.2 for i in x], [r["bleu_beam"] for r in rows], 0.4, label="beam")
    ax.set_xticks(list(x), names, rotation=45, ha="right")
    ax.set_ylabel("BLEU")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: over the bars it hides the last ones
    ax.set_title("BLEU, greedy vs beam")
    fig.tight_layout()
    fig.savefig(out / "bleu_greedy_beam.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    _speed_plot(out, rows)
    _pruning_plot(plt, out, rows, res["best_student"])
    _curves_plot(plt, out, res)


def _curves_plot(plt, out: Path, res: dict) -> None:
    """learning_curves.png: validation BLEU against epoch, one panel per `curve_panels` entry."""
    from matplotlib.ticker import MaxNLocator

    groups = list(res["curve_panels"].items())
    cols = 2 if len(groups) > 1 else 1
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    for ax, (panel, names) in zip(axes.flat, groups):
        for name in names:
            c = res["curves"][name]
            ax.plot(c["epoch"], c["val_bleu"], "o-", ms=2, label=name)
        ax.set_title(panel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("val BLEU (greedy)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("Validation curves of every training stage")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)


def _speed_plot(out: Path, rows: list[dict]) -> None:
    """BLEU against sentences/s and, when measured, against p50 latency (one sentence at a time): one
    marker per system, greedy filled, beam hollow, the Pareto front drawn."""
    series = [Series(r["name"], [Point({k: r[f"{k}_{s}"] for k in ("sent_per_s", "p50_ms") if f"{k}_{s}" in r},
                                       r[f"bleu_{s}"], s == "greedy") for s in ("greedy", "beam")])
              for r in rows]
    frontier_plot(series, [Panel("sent_per_s", "sentences/s (log; filled = greedy, hollow = beam)"),
                           Panel("p50_ms", "p50 ms per sentence, one at a time (log)", -1)],
                  out / "speed_quality.png", "Speed / quality", legend_cols=2)


def _pruning_plot(plt, out: Path, rows: list[dict], best: str) -> None:
    """Beam BLEU against x fewer non-zeros than the teacher: one line per scheme's chain (starting
    at the unpruned parent), the 0% control as its own marker, the teacher and the paper's 13x."""
    teacher = next(r for r in rows if r["name"] == "teacher")
    parent = next(r for r in rows if r["name"] == best)
    pruned = [r for r in rows if r["group"] == "pruned" and r["name"] != "pruned_0"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scheme, mk in (("class-blind", "o-"), ("class-distribution", "s-"), ("class-uniform", "^-")):
        sel = [parent] + sorted((r for r in pruned if r["scheme"] == scheme), key=lambda r: -r["params_nonzero"])
        if len(sel) > 1:
            ax.plot([teacher["params_total"] / r["params_nonzero"] for r in sel], [r["bleu_beam"] for r in sel], mk,
                    label=f"{scheme} (beam)")
    control = next((r for r in rows if r["name"] == "pruned_0"), None)
    if control:
        ax.scatter([teacher["params_total"] / control["params_nonzero"]], [control["bleu_beam"]], marker="*", s=120,
                   color="green", zorder=3, label="0% control (same retraining)")
    ax.axhline(teacher["bleu_beam"], color="k", lw=1, label="teacher beam")
    ax.axhline(teacher["bleu_beam"] - 0.4, color="k", lw=1, ls=":", label="teacher beam - 0.4")
    ax.axvline(Z1_RATIO, color="grey", lw=1, ls="--", label=f"{Z1_RATIO:g}x (paper)")
    ax.set_xscale("log")
    ax.set_xlabel("x fewer non-zero parameters than the teacher (log)")
    ax.set_ylabel("BLEU (beam)")
    ax.legend(fontsize=7)
    ax.set_title(f"Pruning {best}")
    fig.tight_layout()
    fig.savefig(out / "pruning.png", dpi=110)
    plt.close(fig)
