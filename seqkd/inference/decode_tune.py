"""Each model's fastest CTranslate2 decoding settings, found by measurement one factor at a time.

Starting from seqkd's defaults, each factor (thread layout, batching, scores, int8, shortlist) is
tried in turn; a setting is kept when its slowest timing beats the current best's fastest (the
repetitions' whole range), and its BLEU stays within `max_drop` of the default's (int8 and a
shortlist may change the output; the other factors must not). Every candidate is timed in the same
process, interleaved with the current best, as the median of `repeats` runs. Choose settings on
validation data, never on the test set.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.evaluate import bleu

FACTORS = [
    ("inter_threads", [2]),  # 2 x 1 thread instead of 1 x 2
    ("engine_batching", [True]),  # CTranslate2 sorts and splits (by max_batch_size tokens)
    ("max_batch_size", [1024, 2048, 8192]),
    ("return_scores", [False]),  # greedy only
    ("compute_type", ["int8_float32"]),
    ("vmap", ["<vmap>"]),
]
ENGINE_FACTORS = [(f, v) for f, v in FACTORS if f != "vmap"]  # the settings of one system (a shortlist is another)


def timed(cfg: DecodeConfig, model: str, src: list[str], refs: list[str], beam: int, repeats: int) -> dict:
    tr = Translator(model, cfg)
    tr.translate(src[:32], beam=beam)
    secs, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = tr.translate(src, beam=beam)
        secs.append(time.perf_counter() - t)
    rates = sorted(len(src) / s for s in secs)
    return {"sent_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1],
            "bleu": bleu([h[0].text for h in out], refs).score}


def sweep(model: str, beam: int, src: list[str], refs: list[str], threads: int, vmap: str | None, repeats: int,
          max_drop: float, factors: list[tuple[str, list]] = FACTORS, base: DecodeConfig | None = None) -> dict:
    """Try each factor's values in turn on (src, refs); returns the best settings (`best`, the factor fields),
    their timing and BLEU, the default's BLEU, and every trial."""
    best_cfg = replace(base or DecodeConfig(engine="ct2"), beam=beam, threads=threads)
    best = timed(best_cfg, model, src, refs, beam, repeats)
    base_bleu, trials = best["bleu"], [{"setting": "default", **best}]
    for field, values in factors:
        if (field == "return_scores" and beam > 1) or (field == "vmap" and not vmap):
            continue
        if field == "max_batch_size" and not best_cfg.engine_batching:
            continue
        for v in values:
            cand_cfg = replace(best_cfg, **{field: vmap if v == "<vmap>" else v})
            cand = timed(cand_cfg, model, src, refs, beam, repeats)
            best = timed(best_cfg, model, src, refs, beam, repeats)  # interleaved: re-time the incumbent
            trials.append({"setting": f"{field}={v}", **cand, "incumbent": best})
            if cand["min"] > best["max"] and cand["bleu"] >= base_bleu - max_drop:
                best_cfg, best = cand_cfg, cand
    return {"model": Path(model).name, "beam": beam, "threads": threads, "sentences": len(src),
            "best": {k: v for k, v in asdict(best_cfg).items() if k in {f for f, _ in FACTORS}},
            "best_result": best, "default_bleu": base_bleu, "trials": trials}
