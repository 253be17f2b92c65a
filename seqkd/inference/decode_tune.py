"""Each model's fastest CTranslate2 decoding settings, found by measurement one factor at a time.

Starting from seqkd's defaults, each factor (thread layout, batching, scores, int8, shortlist) is
tried in turn; a setting is kept when its slowest timing beats the current best's fastest (the
repetitions' whole range), and its BLEU stays within `max_drop` of the default's (int8 and a
shortlist may change the output; the other factors must not). Every candidate is timed in the same
process, interleaved with the current best (`timing.time_interleaved`), as the median of `repeats`
runs. Choose settings on validation data, never on the test set (`seqkd tune-decode` runs the sweep; the
grid's speed stage runs it on every system).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.evaluate import bleu
from seqkd.inference.timing import time_interleaved

FACTORS = [
    ("inter_threads", [2]),  # 2 x 1 thread instead of 1 x 2
    ("engine_batching", [True]),  # CTranslate2 sorts and splits (by max_batch_size tokens)
    ("max_batch_size", [1024, 2048, 8192]),
    ("return_scores", [False]),  # greedy only
    ("compute_type", ["int8_float32"]),
    ("vmap", ["<vmap>"]),
]
ENGINE_FACTORS = [(f, v) for f, v in FACTORS if f != "vmap"]  # the settings of one system (a shortlist is another)


def measure(trs: list[Translator], src: list[str], refs: list[str], beam: int, repeats: int) -> list[dict]:
    """Time the translators interleaved (`time_interleaved`); each one's median sentences/s, its range (`min`,
    `max`) and the BLEU of one repetition's output."""
    return [{"sent_per_s": t.sent_per_s, "min": t.sent_per_s_min, "max": t.sent_per_s_max,
             "bleu": bleu(t.texts(), refs).score}
            for t in time_interleaved([(tr, beam) for tr in trs], src, repeats)]


def sweep(model: str, beam: int, src: list[str], refs: list[str], threads: int, vmap: str | None, repeats: int,
          max_drop: float, factors: list[tuple[str, list]] = FACTORS, base: DecodeConfig | None = None) -> dict:
    """Try each factor's values in turn on (src, refs), each candidate timed interleaved with the current best;
    returns the best settings (`best`, the factor fields), their timing and BLEU, the default's BLEU, and every
    trial (the candidate's result, the incumbent's in the same run, and whether the candidate was kept)."""
    best_cfg = replace(base or DecodeConfig(engine="ct2"), beam=beam, threads=threads)
    best_tr = Translator(model, best_cfg)
    (best,) = measure([best_tr], src, refs, beam, repeats)
    base_bleu, trials = best["bleu"], [{"setting": "default", **best}]
    for field, values in factors:
        if (field == "return_scores" and beam > 1) or (field == "vmap" and not vmap):
            continue
        if field == "max_batch_size" and not best_cfg.engine_batching:
            continue
        for v in values:
            cand_cfg = replace(best_cfg, **{field: vmap if v == "<vmap>" else v})
            cand_tr = Translator(model, cand_cfg)
            best, cand = measure([best_tr, cand_tr], src, refs, beam, repeats)
            kept = cand["min"] > best["max"] and cand["bleu"] >= base_bleu - max_drop
            trials.append({"setting": f"{field}={v}", **cand, "incumbent": best, "kept": kept})
            if kept:
                best_cfg, best_tr, best = cand_cfg, cand_tr, cand
    return {"model": Path(model).name, "beam": beam, "threads": threads, "sentences": len(src),
            "best": {k: v for k, v in asdict(best_cfg).items() if k in {f for f, _ in FACTORS}},
            "best_result": best, "default_bleu": base_bleu, "trials": trials}


def sweep_table(rows: list[dict]) -> str:
    """`sweep` results as a markdown table: every trial of every model (sent/s median and range, the incumbent's
    in the same run, BLEU, kept or not), then one line per model with its best settings."""
    lines = ["| model | beam | setting | sent/s (range) | incumbent sent/s (range) | BLEU | kept |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for t in r["trials"]:
            inc = t.get("incumbent")
            inc_text = f"{inc['sent_per_s']:.1f} ({inc['min']:.1f}-{inc['max']:.1f})" if inc else ""
            kept = "" if inc is None else ("yes" if t.get("kept") else "no")
            lines.append(f"| {r['model']} | {r['beam']} | {t['setting']} | {t['sent_per_s']:.1f} ({t['min']:.1f}-"
                         f"{t['max']:.1f}) | {inc_text} | {t['bleu']:.2f} | {kept} |")
    for r in rows:
        res = r["best_result"]
        lines.append(f"{r['model']} beam {r['beam']}: {res['sent_per_s']:.1f} sent/s ({res['min']:.1f}-"
                     f"{res['max']:.1f}), BLEU {res['bleu']:.2f} (default {r['default_bleu']:.2f}) with {r['best']}")
    return "\n".join(lines)
