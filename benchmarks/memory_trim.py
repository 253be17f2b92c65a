"""Resident memory of a training run with and without handing freed heap memory back (malloc_trim).

Runs `seqkd.training.trainer.train` on the teacher size for --steps steps, validating every 10 (the RSS is logged
at each validation as `rss_mb`), once with `memory.release_memory` as it is and once with it
reduced to reading the RSS. Run one mode per process, one after the other, on an idle machine:

    python benchmarks/memory_trim.py no-trim --vocab runs/multi30k-de-en/vocab --data-dir ../shared/data/multi30k
    python benchmarks/memory_trim.py trim --vocab runs/multi30k-de-en/vocab --data-dir ../shared/data/multi30k
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from seqkd.data.load import DataConfig, load_pairs
from seqkd.data.vocab import Vocab
from seqkd.models.marian import ModelConfig, build_model
from seqkd.training.trainer import TrainConfig, TrainData, train
from seqkd.util import memory


def rss_only() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["trim", "no-trim"])
    p.add_argument("--vocab", required=True, help="vocabulary folder")
    p.add_argument("--data-dir", help="local Multi30k copy")
    p.add_argument("--size", default="medium")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.mode == "no-trim":
        memory.release_memory = rss_only
    torch.set_num_threads(a.threads)
    dc = DataConfig(data_dir=a.data_dir)
    (src, tgt), (vs, vt) = load_pairs(dc, "train"), load_pairs(dc, "val")
    vocab = Vocab(a.vocab)
    model = build_model(ModelConfig(a.size), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    out = Path(tempfile.mkdtemp(prefix=f"memory_{a.mode}_"))
    cfg = TrainConfig(max_tokens=4096, max_steps=a.steps, val_every=10, val_bleu=False, val_max_sents=200, bf16="on",
                      log_every=10, ckpt_every=10_000)
    try:
        train(out / "run", cfg, model, vocab, TrainData(src, tgt, vs, vt), progress=False)
        rows = [json.loads(ln) for ln in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    val = [r for r in rows if r["type"] == "val"]
    print(json.dumps({"mode": a.mode, "rss_mb_at_validations": [round(r["rss_mb"]) for r in val],
                      "wall_s": round(val[-1]["elapsed"]),
                      "tgt_tok_s": [round(r["tgt_tokens_per_s"]) for r in rows if r["type"] == "train"]}))


if __name__ == "__main__":
    main()
