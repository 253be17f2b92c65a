"""Question: what are each model's fastest CTranslate2 decoding settings on this machine, found by measurement, one
factor at a time?

Starting from seqkd's defaults, each factor (thread layout, batching, scores, int8, shortlist) is
tried in turn; a setting is kept when its median speed beats the current best by more than the
repetitions' spread, and its BLEU stays within --max-bleu-drop (int8 and a shortlist may change the
output; the other factors must not). Every candidate is timed in the same process, interleaved
with the current best, as the median of --repeats runs.

No figure from it is committed: the grid's `speed` stage runs the same search (`seqkd.inference.decode_tune`) for
every system and its report gives the settings. On any models:

    python benchmarks/decode_settings.py --model runs/multi30k-de-en/teacher --beam 5 \\
        --model runs/multi30k-de-en/seq_kd+seq_inter --beam 1 --vmap runs/vmap.txt \\
        --data-dir ../shared/data/multi30k --out decode_settings.json
"""

from __future__ import annotations

import argparse
import json

from seqkd.data.load import DataConfig, load_pairs
from seqkd.inference.decode_tune import sweep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model folder (repeat)")
    p.add_argument("--beam", action="append", type=int, required=True, help="its beam size (repeat, same order)")
    p.add_argument("--vmap", help="a shortlist (`seqkd shortlist`) to try")
    p.add_argument("--data-dir", help="local Multi30k copy (else $SEQKD_DATA)")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--split", default="val", help="measure on this split (choose settings on validation)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-bleu-drop", type=float, default=0.2)
    p.add_argument("--out", required=True, help="JSON results")
    a = p.parse_args()
    if len(a.model) != len(a.beam):
        p.error("give one --beam per --model")
    dc = DataConfig(src=a.src, tgt=a.tgt, data_dir=a.data_dir, test_split=a.split)
    src, refs = load_pairs(dc, "test")
    rows = [sweep(m, b, src, refs, a.threads, a.vmap, a.repeats, a.max_bleu_drop) for m, b in zip(a.model, a.beam)]
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)
    for r in rows:
        res = r["best_result"]
        print(f"{r['model']} beam {r['beam']}: {res['sent_per_s']:.0f} sent/s ({res['min']:.0f}-{res['max']:.0f}), "
              f"BLEU {res['bleu']:.2f} (default {r['default_bleu']:.2f}) with {r['best']}")


if __name__ == "__main__":
    main()
