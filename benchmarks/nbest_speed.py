"""Question: how fast does the teacher decode for distillation, beam 5 (Seq-KD) and 35-best lists (Seq-Inter), per
CTranslate2 thread layout, on the first N training sentences (the estimate of those stages' time)?
Every configuration is timed `--repeats` times, interleaved (one round runs each configuration once);
rows give the median and the range.

The committed figure (docs/results/distill-speed/README.md, section 2, and layouts/nbest_speed.json there; the
teacher of the multi30k-large grid's first run as of its epoch 8) came from:

    python benchmarks/nbest_speed.py --teacher runs/multi30k-de-en/teacher --lines 200 --repeats 3 \\
        --data-dir ../shared/data/multi30k --out docs/results/distill-speed/layouts/nbest_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from seqkd.data.load import DataConfig, load_pairs
from seqkd.inference.decode import DecodeConfig, Translator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--lines", type=int, default=300)
    p.add_argument("--beams", default="5,35")
    p.add_argument("--layouts", default="1x2,2x1", help="inter_threads x intra_threads")
    p.add_argument("--data-dir")
    p.add_argument("--corpus-pairs", type=int, default=28998, help="to extrapolate the whole corpus's hours")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    a = p.parse_args()
    src, _ = load_pairs(DataConfig(data_dir=a.data_dir), "train")
    src = src[: a.lines]
    configs = []
    for beam in map(int, a.beams.split(",")):
        for layout in a.layouts.split(","):
            inter, intra = map(int, layout.split("x"))
            # max_tokens as the distillation stages use it (seq_inter: 2048 source tokens)
            tokens = 2048 if beam > 5 else 4096
            cfg = DecodeConfig(engine="ct2", beam=beam, nbest=beam if beam > 5 else 1, threads=inter * intra,
                               inter_threads=inter, max_tokens=tokens)  # as `seqkd distill` batches
            tr = Translator(a.teacher, cfg)
            tr.translate(src[:16], beam=beam, nbest=cfg.nbest)  # warm-up
            configs.append((beam, layout, cfg, tr, []))
    texts: dict[int, list] = {}  # beam -> the first layout's hypotheses: every layout must give the same text
    same: dict[tuple[int, str], bool] = {}
    for _ in range(a.repeats):
        for beam, layout, cfg, tr, times in configs:
            t = time.perf_counter()
            out = tr.translate(src, beam=beam, nbest=cfg.nbest)
            times.append(time.perf_counter() - t)
            text = [[h.text for h in hs] for hs in out]
            same[(beam, layout)] = same.get((beam, layout), True) and texts.setdefault(beam, text) == text
    rows = []
    for beam, layout, cfg, _, times in configs:
        rates = sorted(len(src) / s for s in times)
        med = statistics.median(rates)
        rows.append({"beam": beam, "nbest": cfg.nbest, "layout": layout, "sentences": len(src),
                     "same_text_as_first_layout": same[(beam, layout)],
                     "repeats": len(times), "sent_per_s": med, "sent_per_s_min": rates[0],
                     "sent_per_s_max": rates[-1], "corpus_hours": a.corpus_pairs / med / 3600})
        print(f"beam {beam} n-best {cfg.nbest} layout {layout}: {med:.1f} sent/s "
              f"({rates[0]:.1f}-{rates[-1]:.1f}, {len(times)} runs), "
              f"{rows[-1]['corpus_hours']:.2f} h for {a.corpus_pairs} pairs, same text: {same[(beam, layout)]}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
