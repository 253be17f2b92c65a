"""Where a run's text comes from: a named corpus split or explicit parallel files."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from seqkd.corpus import clean_pairs, load_split, read_parallel

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    corpus: str = "multi30k"
    src: str = "de"
    tgt: str = "en"
    data_dir: str | None = None  # local copy of the corpus files; else SEQKD_DATA; else download
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test_2016_flickr"
    # explicit files override the named corpus split of the same role
    train_src: str | None = None
    train_tgt: str | None = None
    val_src: str | None = None
    val_tgt: str | None = None
    distilled: str | None = None  # a `seqkd distill` folder: its train.src / train.tgt are the training pairs
    max_train_pairs: int = 0  # 0 = all (the tiny preset uses a slice)
    max_chars: int = 1000
    max_ratio: float = 9.0


def load_pairs(dc: DataConfig, role: str) -> tuple[list[str], list[str]]:
    """Lines for role 'train', 'val' or 'test'; training pairs are cleaned (counts logged)."""
    files = {"train": (dc.train_src, dc.train_tgt), "val": (dc.val_src, dc.val_tgt)}.get(role, (None, None))
    if role == "train" and dc.distilled:
        files = (f"{dc.distilled}/train.src", f"{dc.distilled}/train.tgt")
    if files[0] and files[1]:
        src, tgt = read_parallel(files[0], files[1])
    else:
        split = {"train": dc.train_split, "val": dc.val_split, "test": dc.test_split}[role]
        src, tgt = load_split(dc.corpus, split, dc.src, dc.tgt, data_dir=dc.data_dir)
    if role == "train":
        if dc.max_train_pairs:
            src, tgt = src[: dc.max_train_pairs], tgt[: dc.max_train_pairs]
        src, tgt, stats = clean_pairs(src, tgt, dc.max_chars, dc.max_ratio)
        log.info("training data: %s", stats)
    return src, tgt
