"""Question: how much faster is Seq-KD generation with CTranslate2 than with HF generate (beam 5, same teacher, same
lines, one run), and Word-KD training with an offline top-k cache than with an online teacher?

The committed figure (docs/results/distill-speed/README.md, section 1; the teacher is the model of
docs/results/student-de-en) came from the command below; `--out docs/results/distill-speed/engines/distill_speed.json`
writes the JSON committed there:

    python benchmarks/distill_speed.py --teacher runs/student-de-en --lines 500 --data-dir ../shared/data/multi30k
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from seqkd.data.load import DataConfig, load_pairs
from seqkd.inference.decode import DecodeConfig, Translator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kd-steps", type=int, default=20, help="training steps per Word-KD mode (0 = skip)")
    p.add_argument("--student-size", default="student-small")
    p.add_argument("--out", help="write the numbers as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    src, tgt = load_pairs(DataConfig(src=a.src, tgt=a.tgt, data_dir=a.data_dir), "train")
    src, tgt = src[: a.lines], tgt[: a.lines]
    res: dict = {"lines": len(src), "beam": a.beam, "threads": a.threads}
    for engine in ("ct2", "hf"):
        tr = Translator(a.teacher, DecodeConfig(engine=engine, beam=a.beam))
        tr.translate(src[:16])
        t = time.perf_counter()
        tr.translate(src)
        res[f"{engine}_sent_per_s"] = len(src) / (time.perf_counter() - t)
    res["ct2_over_hf"] = res["ct2_sent_per_s"] / res["hf_sent_per_s"]
    print(f"Seq-KD generation, beam {a.beam}, {len(src)} lines: CT2 {res['ct2_sent_per_s']:.1f} sent/s, "
          f"HF generate {res['hf_sent_per_s']:.1f} sent/s, ratio {res['ct2_over_hf']:.2f}x")
    if a.kd_steps:
        res.update(_word_kd_speed(a, src, tgt))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


def _word_kd_speed(a, src: list[str], tgt: list[str]) -> dict:
    from seqkd.data.vocab import Vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.kd import build_topk_cache, offline_teacher, online_teacher
    from seqkd.training.losses import LossConfig
    from seqkd.training.trainer import TrainConfig, TrainData, train

    vocab = Vocab(a.teacher)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache = build_topk_cache(a.teacher, src, tgt, Path(tmp) / "cache", k=8, progress=False)
        out["topk_cache_seconds"] = time.perf_counter() - t
        cfg = TrainConfig(max_steps=a.kd_steps, max_epochs=100, val_bleu=False, ckpt_every=10_000,
                          loss=LossConfig(word_kd_alpha=0.5))
        for mode in ("offline", "online"):
            fn = offline_teacher(cache, vocab, src, tgt) if mode == "offline" else online_teacher(a.teacher, vocab)
            model = build_model(ModelConfig(a.student_size), vocab.size, vocab.pad_id, vocab.eos_id)
            r = train(Path(tmp) / mode, cfg, model, vocab, TrainData(src, tgt, src[:50], tgt[:50]), teacher_fn=fn,
                      progress=False)
            out[f"word_kd_{mode}_tgt_tok_per_s"] = r["target_tokens"] / r["train_seconds"]
    print(f"Word-KD training ({a.student_size}, {a.kd_steps} steps): offline top-8 "
          f"{out['word_kd_offline_tgt_tok_per_s']:.0f} tok/s, online {out['word_kd_online_tgt_tok_per_s']:.0f} tok/s; "
          f"building the cache took {out['topk_cache_seconds']:.1f} s for {len(src)} pairs")
    return out


if __name__ == "__main__":
    main()
