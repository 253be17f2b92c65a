"""Decoding speed: throughput (sentences/s, target tokens/s) and latency (one sentence at a time,
p50/p95 ms), per model, engine, shortlist and search, in one interleaved run.

Throughput is the median of `repeats` timings with its range, the repetitions of all variants
interleaved; every variant sees the same lines, thread count and decoding settings (`DecodeConfig`:
thread layout, batching, scores, vmap).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.evaluate import bleu
from seqkd.inference.plots import Panel, Point, Series
from seqkd.inference.plots import frontier_plot as draw_frontier  # matplotlib is imported only when it draws

ENGINES = {"hf": ("hf", "float32"), "ct2": ("ct2", "float32"), "ct2-int8": ("ct2", "int8")}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def latency_stats(ms: list[float]) -> dict:
    """p50 / p95 / mean of per-sentence milliseconds."""
    return {"latency_sentences": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "mean_ms": statistics.mean(ms) if ms else float("nan")}


def _time_one(tr: Translator, line: str, beam: int) -> float:
    t = time.perf_counter()
    tr.translate([line], beam=beam)
    return 1000 * (time.perf_counter() - t)


def latency(tr: Translator, lines: list[str], beam: int) -> dict:
    """Milliseconds per sentence translated alone (batch of one), as an interactive user sees it."""
    return latency_stats([_time_one(tr, line, beam) for line in lines])


def bench(models: str | list[str], src: list[str], engines: list[str], beam: int = 5, threads: int = 0,
          cfg: DecodeConfig | None = None, repeats: int = 1, latency_sents: int = 0,
          refs: list[str] | None = None, vmap_both: bool = False,
          layouts: list[int] | None = None) -> list[dict]:
    """Time every (model, engine, shortlist, thread layout, search) over `src`, interleaved: each
    repetition times every variant once, in an order rotated per repetition, so that a slow spell of the
    machine hits all of them alike. A warm-up on a few lines precedes the first repetition; every
    translator stays loaded.

    Throughput: the median of `repeats` timings (and the min/max). Latency: the first `latency_sents`
    lines one at a time, every variant in turn for each line (0 = skip). With `refs`, each row also has
    the BLEU of its output (sacreBLEU, with the signature). `vmap_both`: with `cfg.vmap` set, every
    CTranslate2 engine is measured both without and with the shortlist (else only with it). `layouts`:
    CTranslate2 inter_threads values to compare (each batch then gets threads // inter_threads threads;
    default: cfg.inter_threads alone).
    """
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    variants = _variants(models, src, engines, beam, threads, cfg or DecodeConfig(), vmap_both, layouts)
    secs: list[list[float]] = [[] for _ in variants]
    outs: list[list] = [[] for _ in variants]
    for rep in range(max(1, repeats)):
        start = rep % len(variants)
        for i in list(range(start, len(variants))) + list(range(start)):
            _, tr, k = variants[i]
            t = time.perf_counter()
            outs[i] = tr.translate(src, beam=k)
            secs[i].append(time.perf_counter() - t)
    ms: list[list[float]] = [[] for _ in variants]
    for line in src[:latency_sents]:
        for i, (_, tr, k) in enumerate(variants):
            ms[i].append(_time_one(tr, line, k))
    rows = []
    for i, (fields, _, _) in enumerate(variants):
        med, out = statistics.median(secs[i]), outs[i]
        row = {**fields, "sentences": len(src), "repeats": len(secs[i]),
               "seconds": med, "seconds_min": min(secs[i]), "seconds_max": max(secs[i]),
               "sent_per_s": len(src) / med, "sent_per_s_min": len(src) / max(secs[i]),
               "sent_per_s_max": len(src) / min(secs[i]),
               "tgt_tok_per_s": sum(len(h[0].pieces) + 1 for h in out) / med}
        if refs is not None:
            score = bleu([h[0].text for h in out], refs)
            row.update(bleu=score.score, bleu_signature=score.signature)
        if latency_sents:
            row.update(latency_stats(ms[i]))
        rows.append(row)
    return rows


def _variants(models: str | list[str], src: list[str], engines: list[str], beam: int, threads: int,
              base: DecodeConfig, vmap_both: bool, layouts: list[int] | None) -> list[tuple[dict, Translator, int]]:
    """`bench`'s variants, each loaded and warmed up on the first 16 lines: (row fields, translator, beam)."""
    vmaps = [None, base.vmap] if base.vmap and vmap_both else [base.vmap]
    variants = []  # (row fields, translator, beam)
    for model in [models] if isinstance(models, (str, Path)) else models:
        for name in engines:
            engine, compute = ENGINES[name]
            for vmap in vmaps:
                if engine == "hf" and vmap:
                    continue  # the shortlist is a CTranslate2 feature
                for inter in (layouts or [base.inter_threads]) if engine == "ct2" else [1]:
                    tr = Translator(model, replace(base, engine=engine, compute_type=compute, threads=threads,
                                                   vmap=vmap, inter_threads=inter))
                    for k in (1, beam):
                        tr.translate(src[:16], beam=k)
                        variants.append(({"model": str(model), "engine": name, "search": "greedy" if k == 1
                                          else f"beam{k}", "threads": threads, "inter_threads": inter,
                                          "vmap": bool(vmap)}, tr, k))
    return variants


def _layout(r: dict) -> str:
    """inter_threads x threads per batch, e.g. 2x1."""
    return f"{r['inter_threads']}x{max(1, r['threads'] // r['inter_threads'])}"


def _engine(r: dict) -> str:
    return f"{r['engine']}{' +vmap' if r.get('vmap') else ''}"


def table(rows: list[dict]) -> str:
    lines = ["| model | engine | search | threads (batches x per batch) | sentences | BLEU | seconds (median) | "
             "sent/s (range) | target tok/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = (f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f}" if "p50_ms" in r else " | ")
        lines.append(f"| {Path(r['model']).name} | {_engine(r)} | {r['search']} | "
                     f"{_layout(r)} | {r['sentences']} | {r.get('bleu', float('nan')):.2f} | {r['seconds']:.2f} | "
                     f"{r['sent_per_s']:.1f} ({r['sent_per_s_min']:.1f}-{r['sent_per_s_max']:.1f}) | "
                     f"{r['tgt_tok_per_s']:.0f} | {lat} |")
    return "\n".join(lines)


def _systems(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Scored rows grouped by system, (model folder name, engine, search) in first-seen order; the
    thread layouts of a system are its group."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if "bleu" in r:
            groups.setdefault((Path(r["model"]).name, _engine(r), r["search"]), []).append(r)
    return groups


def frontier_series(rows: list[dict]) -> list[Series]:
    """One Series per model and engine (marker = model, colour = engine), one Point per search (greedy
    filled, beam hollow) at the system's best thread layout for each panel: the most sentences/s, and the
    least p50 ms when every row has latency."""
    groups = _systems(rows)
    models = list(dict.fromkeys(m for m, _, _ in groups))
    engines = list(dict.fromkeys(e for _, e, _ in groups))
    latency = all("p50_ms" in r for g in groups.values() for r in g)
    series: dict[tuple[str, str], Series] = {}
    for (m, e, s), group in groups.items():
        fastest = max(group, key=lambda r: r["sent_per_s"])
        x = {"sent_per_s": fastest["sent_per_s"], **({"p50_ms": min(r["p50_ms"] for r in group)} if latency else {})}
        sr = series.setdefault((m, e), Series(f"{m} {e}", style=(engines.index(e), models.index(m))))
        sr.points.append(Point(x, fastest["bleu"], s == "greedy"))
    return list(series.values())


def best_against_best(rows: list[dict], teacher: str, student: str, engine: str | None = None) -> dict:
    """S1 from one bench run: the student's fastest greedy row over the teacher's fastest beam row
    (models named by folder name; any shortlist or layout, and any engine unless `engine` names one, e.g.
    "ct2" for float32 on both sides), the median ratio, the range from the extremes of the two rows'
    repetitions, and the student's BLEU minus the teacher's."""
    scored = [r for r in rows if "bleu" in r and engine in (None, r["engine"])]
    s = max((r for r in scored if Path(r["model"]).name == student and r["search"] == "greedy"),
            key=lambda r: r["sent_per_s"])
    t = max((r for r in scored if Path(r["model"]).name == teacher and r["search"].startswith("beam")),
            key=lambda r: r["sent_per_s"])
    return {"student": f"{student} {_engine(s)} {_layout(s)} greedy", "teacher": f"{teacher} {_engine(t)} {_layout(t)} "
            f"{t['search']}", "student_sent_per_s": s["sent_per_s"], "teacher_sent_per_s": t["sent_per_s"],
            "speedup": s["sent_per_s"] / t["sent_per_s"],
            "speedup_range": [s["sent_per_s_min"] / t["sent_per_s_max"], s["sent_per_s_max"] / t["sent_per_s_min"]],
            "bleu_gap": s["bleu"] - t["bleu"]}


def frontier_plot(rows: list[dict], path: str | Path) -> None:
    """BLEU against sentences/s (and against p50 latency): `frontier_series`, every layout being in the
    table, with the Pareto front drawn as a dashed line."""
    draw_frontier(frontier_series(rows), [Panel("sent_per_s", "sentences/s (log; filled = greedy, hollow = beam)"),
                                          Panel("p50_ms", "p50 ms per sentence, one at a time (log)", -1)],
                  path, "Speed / quality frontier (each system at its best thread layout)")
