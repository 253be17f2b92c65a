"""Question: how far are a grid's distilled training targets from the references? Corpus BLEU (sacreBLEU
defaults) and exact-match share of the Seq-KD and Seq-Inter `train.tgt` against the training
references, and for Seq-Inter how the pick sits in the n-best list (rank 0 = the beam's first).

The committed figures (docs/results/multi30k-large-de-en/README.md, the data rows of each run, and
run*/distilled_targets.json there) came from, for run 3 (the others alike, each while its run folder existed):

    python benchmarks/distilled_targets.py --run runs/multi30k-de-en --data-dir ../shared/data/multi30k \\
        --out docs/results/multi30k-large-de-en/run3/distilled_targets.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import sacrebleu

from seqkd.data.corpus import read_parallel
from seqkd.data.load import DataConfig, load_pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/multi30k-de-en", help="a reproduce run folder")
    p.add_argument("--data-dir", help="local corpus copy (else $SEQKD_DATA)")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--out", help="also write the figures as JSON")
    a = p.parse_args()
    src, ref = load_pairs(DataConfig(data_dir=a.data_dir, src=a.src, tgt=a.tgt), "train")
    res = {"pairs": len(ref)}
    for name in ("data_seq_kd", "data_seq_inter"):
        d = Path(a.run) / name
        dsrc, hyp = read_parallel(d / "train.src", d / "train.tgt")
        if dsrc != src:
            raise SystemExit(f"{d}: its sources are not the cleaned training sources of {a.src}-{a.tgt}")
        res[name] = {"bleu_vs_refs": sacrebleu.corpus_bleu(hyp, [ref]).score,
                     "identical_share": sum(h == r for h, r in zip(hyp, ref)) / len(ref)}
    rows = [json.loads(ln) for f in sorted((Path(a.run) / "data_seq_inter" / "shards").glob("*.jsonl"))
            for ln in f.read_text().splitlines()]
    if rows:
        res["data_seq_inter"] |= {"mean_rank": statistics.mean(r["rank"] for r in rows),
                                  "rank0_share": sum(r["rank"] == 0 for r in rows) / len(rows),
                                  "mean_sentence_bleu": statistics.mean(r["sim"] for r in rows),
                                  "sentence_bleu_100_share": sum(r["sim"] >= 99.99 for r in rows) / len(rows)}
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
