"""Decoding speed: throughput (sentences/s, target tokens/s) and latency (one sentence at a time,
p50/p95 ms), per model, engine, shortlist and search, in one interleaved run.

Throughput is the median of `repeats` timings with its range, the repetitions of all variants
interleaved; every variant sees the same lines, thread count and decoding settings (`DecodeConfig`:
thread layout, batching, scores, vmap).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.evaluate import bleu
from seqkd.inference.plots import Panel, Point, Series
from seqkd.inference.plots import frontier_plot as draw_frontier  # matplotlib is imported only when it draws
from seqkd.inference.timing import Timing, time_interleaved
from seqkd.util.fsutil import SeqkdError

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
    """Time every (model, engine, shortlist, thread layout, search) over `src` with `time_interleaved`: a
    warm-up, then each repetition times every variant once, in an order rotated per repetition, so that a
    slow spell of the machine hits all of them alike; every translator stays loaded.

    Throughput: the median of `repeats` timings (and the min/max). Latency: the first `latency_sents`
    lines one at a time, every variant in turn for each line (0 = skip). With `refs`, each row also has
    the BLEU of its output (sacreBLEU, with the signature). `vmap_both`: with `cfg.vmap` set, every
    CTranslate2 engine is measured both without and with the shortlist (else only with it). `layouts`:
    CTranslate2 inter_threads values to compare (each batch then gets threads // inter_threads threads;
    default: cfg.inter_threads alone).
    """
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    variants = _variants(models, engines, beam, threads, cfg or DecodeConfig(), vmap_both, layouts)
    timings = time_interleaved([(tr, k) for _, tr, k in variants], src, repeats)
    ms: list[list[float]] = [[] for _ in variants]
    for line in src[:latency_sents]:
        for i, (_, tr, k) in enumerate(variants):
            ms[i].append(_time_one(tr, line, k))
    rows = []
    for i, ((fields, _, _), tm) in enumerate(zip(variants, timings)):
        row = {**fields, **throughput(tm)}
        if refs is not None:
            score = bleu(tm.texts(), refs)
            row.update(bleu=score.score, bleu_signature=score.signature)
        if latency_sents:
            row.update(latency_stats(ms[i]))
        rows.append(row)
    return rows


def throughput(tm: Timing) -> dict:
    """A bench row's timing fields: sentences, repetitions, seconds (median, min, max), sentences/s (median and
    range) and target tokens/s (the kept repetition's tokens, `</s>` included, at the median rate)."""
    tokens = sum(len(h[0].pieces) + 1 for h in tm.hyps)
    return {"sentences": tm.n, "repeats": len(tm.seconds), "seconds": statistics.median(tm.seconds),
            "seconds_min": min(tm.seconds), "seconds_max": max(tm.seconds), "sent_per_s": tm.sent_per_s,
            "sent_per_s_min": tm.sent_per_s_min, "sent_per_s_max": tm.sent_per_s_max,
            "tgt_tok_per_s": tokens / tm.n * tm.sent_per_s if tm.n else 0.0}


def _variants(models: str | list[str], engines: list[str], beam: int, threads: int, base: DecodeConfig,
              vmap_both: bool, layouts: list[int] | None) -> list[tuple[dict, Translator, int]]:
    """`bench`'s variants, each translator loaded once for its greedy and beam rows: (row fields, translator,
    beam)."""
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
                        variants.append(({"model": str(model), "engine": name, "search": "greedy" if k == 1
                                          else f"beam{k}", "threads": threads, "inter_threads": inter,
                                          "vmap": bool(vmap)}, tr, k))
    return variants


ROW_FIELDS = ("model", "engine", "search", "threads", "inter_threads", "sentences", "seconds", "sent_per_s",
              "sent_per_s_min", "sent_per_s_max", "tgt_tok_per_s")  # what `table` and S1 read of each row


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a `seqkd bench --out` JSON file; a file that cannot be read or is not a list of bench rows is
    a one-line SeqkdError naming it."""
    p = Path(path)
    try:
        rows = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise SeqkdError(f"{p}: not a readable JSON file ({e})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and set(ROW_FIELDS) <= set(r)
                                                         for r in rows):
        raise SeqkdError(f"{p}: not the rows of `seqkd bench --out` (a non-empty list of objects with "
                         f"{', '.join(ROW_FIELDS)})")
    return rows


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
    repetitions, and the student's BLEU minus the teacher's. No such row (or no BLEU): a SeqkdError."""
    scored = [r for r in rows if "bleu" in r and engine in (None, r["engine"])]
    s = _fastest(scored, student, "greedy", engine)
    t = _fastest(scored, teacher, "beam", engine)
    return {"student": f"{student} {_engine(s)} {_layout(s)} greedy", "teacher": f"{teacher} {_engine(t)} {_layout(t)} "
            f"{t['search']}", "student_sent_per_s": s["sent_per_s"], "teacher_sent_per_s": t["sent_per_s"],
            "speedup": s["sent_per_s"] / t["sent_per_s"],
            "speedup_range": [s["sent_per_s_min"] / t["sent_per_s_max"], s["sent_per_s_max"] / t["sent_per_s_min"]],
            "bleu_gap": s["bleu"] - t["bleu"]}


def _fastest(scored: list[dict], model: str, search: str, engine: str | None) -> dict:
    """The row of `model` (folder name) with `search` ("greedy", or "beam": any beam size) and the most
    sentences/s among `scored`."""
    sel = [r for r in scored if Path(r["model"]).name == model and r["search"].startswith(search)]
    if not sel:
        models = sorted({Path(r["model"]).name for r in scored})
        raise SeqkdError(f"S1: no {search} row of model {model!r} with BLEU" + (f" on engine {engine}" if engine
                         else "") + f" among the bench rows (models with BLEU: {', '.join(models) or 'none'})")
    return max(sel, key=lambda r: r["sent_per_s"])


def s1_lines(rows: list[dict], teacher: str, engine: str | None = None) -> list[str]:
    """One S1 line (`best_against_best`) for each model of `rows` other than `teacher`, in first-seen order."""
    lines = []
    for student in dict.fromkeys(Path(r["model"]).name for r in rows):
        if student == teacher:
            continue
        s = best_against_best(rows, teacher, student, engine)
        lo, hi = s["speedup_range"]
        lines.append(f"S1 = {s['speedup']:.1f}x (range {lo:.1f}-{hi:.1f}x): {s['student']} "
                     f"{s['student_sent_per_s']:.1f} sent/s over {s['teacher']} {s['teacher_sent_per_s']:.1f} sent/s; "
                     f"BLEU {s['bleu_gap']:+.2f}")
    return lines


def frontier_plot(rows: list[dict], path: str | Path) -> None:
    """BLEU against sentences/s (and against p50 latency): `frontier_series`, every layout being in the
    table, with the Pareto front drawn as a dashed line."""
    draw_frontier(frontier_series(rows), [Panel("sent_per_s", "sentences/s (log; filled = greedy, hollow = beam)"),
                                          Panel("p50_ms", "p50 ms per sentence, one at a time (log)", -1)],
                  path, "Speed / quality frontier (each system at its best thread layout)")
