"""results.json -> report.md and PNG plots (paper-style tables, speed/quality frontier, pruning)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from seqkd.fsutil import write_json, write_text

PAPER_NOTE = ("Kim & Rush (2016), WMT14 En-De: baseline 2x500 14.7 greedy / 17.6 beam; Seq-KD 18.9 / 19.0; "
              "teacher 17.7 / 19.5.")


def machine_info(threads: int) -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {}
    for mod in ("torch", "transformers", "ctranslate2", "sacrebleu", "sentencepiece"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            versions[mod] = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads or torch.get_num_threads(), "gpu": gpu,
            "python": platform.python_version(), "versions": versions}


def _significance(out: Path, systems: list[str], refs: list[str], samples: int) -> dict:
    """Paired bootstrap resampling (sacreBLEU) of each system's beam output against the baseline's."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    ev = out / "eval"
    hyps = {s: (ev / f"{s}.beam.txt").read_text(encoding="utf-8").splitlines() for s in systems}
    others = [s for s in systems if s != "baseline"]
    named = [("baseline", hyps["baseline"])] + [(s, hyps[s]) for s in others]
    _, scores = PairedTest(named, {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=samples)()
    return {s: {"p_value": scores["BLEU"][i + 1].p_value, "significant": scores["BLEU"][i + 1].p_value < 0.05}
            for i, s in enumerate(others)}


def write_report(out: Path, cfg, runner, systems: list[str], best: str, wall: float, refs: list[str]) -> dict:
    rows = [json.loads((out / "eval" / f"{s}.json").read_text()) for s in systems]
    sig = _significance(out, systems, refs, cfg.bootstrap_samples)
    for r in rows:
        r.update(sig.get(r["name"], {}))
    teacher = next(r for r in rows if r["name"] == "teacher")
    results = {
        "preset": cfg.preset, "src": cfg.data.src, "tgt": cfg.data.tgt,
        "test_set": f"{cfg.data.corpus}:{cfg.data.test_split}", "sacrebleu_signature": rows[0]["bleu_signature"],
        "wall_seconds": sum(runner.seconds.values()), "wall_seconds_this_invocation": wall,
        "stage_seconds": runner.seconds, "stages_run_now": runner.ran, "best_student": best,
        "machine": machine_info(cfg.threads), "config": asdict(cfg), "systems": rows,
        "claims": _claims(rows, teacher, best),
    }
    write_json(out / "results.json", results)
    write_text(out / "report.md", _markdown(results))
    _plots(out, results)
    return results


def _claims(rows: list[dict], teacher: dict, best_name: str) -> dict:
    """The paper's comparisons; the best student is the one chosen on validation BLEU, not on test."""
    by = {r["name"]: r for r in rows}
    base, kd, best = by["baseline"], by["seq_kd"], by[best_name]
    pruned = [r for r in rows if r["name"].startswith("pruned")]
    return {
        "seq_kd_greedy_minus_baseline_greedy": kd["bleu_greedy"] - base["bleu_greedy"],
        "seq_kd_greedy_minus_baseline_beam": kd["bleu_greedy"] - base["bleu_beam"],
        "greedy_beam_gap_baseline": base["bleu_beam"] - base["bleu_greedy"],
        "greedy_beam_gap_seq_kd": kd["bleu_beam"] - kd["bleu_greedy"],
        "best_student_beam_minus_teacher_beam": best["bleu_beam"] - teacher["bleu_beam"],
        "student_greedy_vs_teacher_beam_speedup": by[best["name"]]["sent_per_s_greedy"] / teacher["sent_per_s_beam"],
        "int8_greedy_vs_teacher_beam_speedup": by["best_int8"]["sent_per_s_greedy"] / teacher["sent_per_s_beam"],
        "teacher_params_over_pruned_nonzero": {r["name"]: teacher["params_total"] / max(1, r["params_nonzero"])
                                               for r in pruned},
    }


def _markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# seqkd reproduce: preset `{res['preset']}`, {res['src']}->{res['tgt']}, test {res['test_set']}", ""]
    if res["preset"] == "tiny":
        lines += ["**Smoke-test preset: tiny data and models; these numbers prove nothing about the method.**", ""]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, GPU: {m['gpu'] or 'none'}; "
              f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
              f"Total stage wall time: {res['wall_seconds'] / 60:.1f} min. Best student (validation BLEU): "
              f"`{res['best_student']}`.", "", f"sacreBLEU signature: `{res['sacrebleu_signature']}`", "",
              "| system | params | non-zero | BLEU greedy | BLEU beam | chrF greedy | PPL | p(t=y_hat) | "
              "sent/s greedy | sent/s beam | MB | sig. vs baseline (p) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["systems"]:
        sig = "" if r["name"] == "baseline" else (f"{'**yes**' if r['significant'] else 'no'} ({r['p_value']:.3f})")
        lines.append(f"| {r['name']} | {r['params_total'] / 1e6:.2f}M | {r['params_nonzero'] / 1e6:.2f}M | "
                     f"{r['bleu_greedy']:.2f} | {r['bleu_beam']:.2f} | {r['chrf_greedy']:.2f} | {r['ppl']:.2f} | "
                     f"{100 * r['p_beam']:.3g}% | {r['sent_per_s_greedy']:.0f} | {r['sent_per_s_beam']:.0f} | "
                     f"{r['size_mb']:.1f} | {sig} |")
    c = res["claims"]
    lines += ["", "## The paper's claims against these numbers", "",
              f"- Seq-KD greedy - baseline greedy: {c['seq_kd_greedy_minus_baseline_greedy']:+.2f} BLEU "
              "(paper: +4.2 on WMT14 En-De).",
              f"- Seq-KD greedy - baseline beam: {c['seq_kd_greedy_minus_baseline_beam']:+.2f} BLEU (paper: +1.3).",
              f"- Greedy-to-beam gap: baseline {c['greedy_beam_gap_baseline']:+.2f}, Seq-KD "
              f"{c['greedy_beam_gap_seq_kd']:+.2f} (paper: 2.9 vs 0.1).",
              f"- Best student beam - teacher beam: {c['best_student_beam_minus_teacher_beam']:+.2f} BLEU.",
              f"- Best student greedy vs teacher beam, sentences/s: "
              f"{c['student_greedy_vs_teacher_beam_speedup']:.1f}x "
              f"(int8: {c['int8_greedy_vs_teacher_beam_speedup']:.1f}x; "
              "paper: about 10x).",
              "- Teacher parameters / pruned non-zero parameters: "
              + ", ".join(f"{k} {v:.1f}x" for k, v in c["teacher_params_over_pruned_nonzero"].items())
              + " (paper: 13x at 80%).", "", PAPER_NOTE, "",
              "Significance: sacreBLEU paired bootstrap resampling of beam outputs against the baseline, p < 0.05.",
              "", "## Wall time per stage", "", "| stage | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.2f} |" for k, v in res["stage_seconds"].items()]
    lines += ["", "Plots: bleu_greedy_beam.png, speed_quality.png, pruning.png, learning_curves.png.", ""]
    return "\n".join(lines)


def _plots(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["systems"]
    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["bleu_greedy"] for r in rows], 0.4, label="greedy")
    ax.bar([i + 0.2 for i in x], [r["bleu_beam"] for r in rows], 0.4, label="beam")
    ax.set_xticks(list(x), names, rotation=45, ha="right")
    ax.set_ylabel("BLEU")
    ax.legend()
    ax.set_title("BLEU, greedy vs beam")
    fig.tight_layout()
    fig.savefig(out / "bleu_greedy_beam.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        for key, mk in (("greedy", "o"), ("beam", "s")):
            ax.scatter(r[f"sent_per_s_{key}"], r[f"bleu_{key}"], marker=mk)
            ax.annotate(f"{r['name']} ({key})", (r[f"sent_per_s_{key}"], r[f"bleu_{key}"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("sentences/s (log)")
    ax.set_ylabel("BLEU")
    ax.set_title("Speed / quality")
    fig.tight_layout()
    fig.savefig(out / "speed_quality.png", dpi=110)
    plt.close(fig)

    pr = [r for r in rows if r["name"].startswith("pruned") or r["name"] == res["best_student"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    pr.sort(key=lambda r: r["params_nonzero"])
    ax.plot([r["params_nonzero"] / 1e6 for r in pr], [r["bleu_beam"] for r in pr], "o-", label="beam")
    ax.plot([r["params_nonzero"] / 1e6 for r in pr], [r["bleu_greedy"] for r in pr], "s--", label="greedy")
    for r in pr:
        ax.annotate(r["name"], (r["params_nonzero"] / 1e6, r["bleu_beam"]), fontsize=7)
    ax.set_xlabel("non-zero parameters (M)")
    ax.set_ylabel("BLEU")
    ax.legend()
    ax.set_title("Pruning")
    fig.tight_layout()
    fig.savefig(out / "pruning.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("teacher", "baseline", "word_kd", "seq_kd"):
        mp = out / name / "metrics.jsonl"
        if mp.exists():
            val = [json.loads(ln) for ln in mp.read_text().splitlines() if '"val"' in ln]
            if val and "val_bleu" in val[0]:
                ax.plot([v["step"] for v in val], [v["val_bleu"] for v in val], "o-", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation BLEU (greedy)")
    ax.legend()
    ax.set_title("Learning curves")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)


