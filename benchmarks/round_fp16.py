"""Question: what does rounding a trained model's weights to float16 values (`TrainConfig.round_to: float16`) cost in
validation BLEU?

Each model folder is decoded greedily on the validation set (CTranslate2, as training validates) twice: as trained
and inside `precision.rounded(model, "float16")`. The `multi30k` figures (docs/results/multi30k-de-en/README.md,
"Recipes"): the archived teacher and chapter 1's float32 baseline (its weights restored from a copy of the archive
made before they were dropped, entry baseline@9d98614b2337fdcd), 2 threads:

    python benchmarks/round_fp16.py --src ../shared/data/multi30k/val.de.gz --ref ../shared/data/multi30k/val.en.gz \
        RUN/teacher RUN/baseline
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from seqkd.data.corpus import read_lines
from seqkd.data.vocab import Vocab
from seqkd.models.marian import load_model
from seqkd.training.precision import rounded
from seqkd.training.validation import val_bleu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="trained model folders")
    ap.add_argument("--src", required=True, help="validation source (plain or .gz)")
    ap.add_argument("--ref", required=True, help="validation reference (plain or .gz)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    src, ref = read_lines(a.src), read_lines(a.ref)
    for d in a.models:
        model, vocab, tmp = load_model(d), Vocab(d), Path(tempfile.mkdtemp())
        fp32 = val_bleu(tmp, model, vocab, src, ref)
        with rounded(model, "float16"):
            fp16 = val_bleu(tmp, model, vocab, src, ref)
        print(json.dumps({"model": d, "val_bleu_float32": round(fp32, 2), "val_bleu_rounded_float16": round(fp16, 2),
                          "delta": round(fp16 - fp32, 2)}))


if __name__ == "__main__":
    main()
