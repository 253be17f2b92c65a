"""One training run into a folder, the sequence `seqkd train` and the grid's training stages share: the folder's
lock, the vocabulary (given, the starting model's, or trained into the folder), the model (loaded or built), the
Word-KD teacher, then the loop (`trainer.train`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seqkd.data.vocab import Vocab, VocabConfig, train_vocab
from seqkd.models.marian import build_model, load_model
from seqkd.training import dist
from seqkd.training.trainer import TeacherFn, TrainConfig, TrainData, run_lock, train


def train_run(out: str | Path, cfg: TrainConfig, model_cfg, data: TrainData, vocab: Vocab | str | Path | None = None,
              init_from: str | Path | None = None, teacher: Callable[[Vocab], TeacherFn | None] | None = None,
              vocab_cfg: VocabConfig | None = None, vocab_threads: int = 2, config_text: str = "",
              progress: bool = True) -> dict:
    """Train into `out`; returns `trainer.train`'s result. Under torchrun every rank calls this alike.

    vocab: a `Vocab` or its folder; None: trained on `data.src` / `data.tgt` (in memory) with `vocab_cfg` into
    OUT/vocab by rank 0 (the other ranks wait for it). init_from: the model folder to start from (its weights; what
    `cfg.init_from` says is only recorded), else a fresh `model_cfg` model seeded with `cfg.seed`. teacher: the
    Word-KD targets (`trainer.TeacherFn`) for the vocabulary, made once the vocabulary is there. The folder's lock
    is held from before the vocabulary is written to the end of training: one writer per folder.
    """
    out = Path(out)
    d = dist.setup(cfg.device)
    with run_lock(out, d):
        if vocab is None:
            if d.main:
                train_vocab(data.src, data.tgt, vocab_cfg or VocabConfig(), out / "vocab", threads=vocab_threads)
            dist.barrier(d)
            vocab = out / "vocab"
        v = vocab if isinstance(vocab, Vocab) else Vocab(vocab)
        model = load_model(init_from) if init_from else build_model(model_cfg, v.size, v.pad_id, v.eos_id,
                                                                    seed=cfg.seed)
        return train(out, cfg, model, v, data, teacher_fn=teacher(v) if teacher else None, config_text=config_text,
                     progress=progress, locked=True)
