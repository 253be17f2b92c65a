"""Decoding speed: sentences/s and target tokens/s per engine, greedy and beam, in one run."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from seqkd.decode import DecodeConfig, Translator

ENGINES = {"hf": ("hf", "float32"), "ct2": ("ct2", "float32"), "ct2-int8": ("ct2", "int8")}


def bench(model_dir: str, src: list[str], engines: list[str], beam: int = 5, threads: int = 0,
          cfg: DecodeConfig | None = None, repeats: int = 1) -> list[dict]:
    """Time each (engine, search) over `src`; a warm-up on a few lines precedes each measurement.

    The best of `repeats` timings is reported. All runs share the thread count and the batches.
    """
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    base = cfg or DecodeConfig()
    rows = []
    for name in engines:
        engine, compute = ENGINES[name]
        tr = Translator(model_dir, replace(base, engine=engine, compute_type=compute, threads=threads))
        for k in (1, beam):
            tr.translate(src[:16], beam=k)
            best, toks = float("inf"), 0
            for _ in range(repeats):
                t = time.perf_counter()
                out = tr.translate(src, beam=k)
                best = min(best, time.perf_counter() - t)
                toks = sum(len(h[0].pieces) + 1 for h in out)
            rows.append({"engine": name, "search": "greedy" if k == 1 else f"beam{k}", "threads": threads,
                         "sentences": len(src), "seconds": best, "sent_per_s": len(src) / best,
                         "tgt_tok_per_s": toks / best})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| engine | search | threads | sentences | seconds | sent/s | target tok/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['search']} | {r['threads']} | {r['sentences']} | {r['seconds']:.2f} "
                     f"| {r['sent_per_s']:.1f} | {r['tgt_tok_per_s']:.0f} |")
    return "\n".join(lines)
