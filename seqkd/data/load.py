"""Where a run's text comes from: a named corpus split or explicit parallel files."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from seqkd.data.corpus import CleanStats, clean_pairs, corpus_files, iter_parallel, keep_pair, misaligned, read_parallel
from seqkd.util.fsutil import SeqkdError

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


def explicit_files(dc: DataConfig, role: str) -> tuple[str, str] | None:
    """The two files the config names for role 'train', 'val' or 'test': a distilled folder's train.src /
    train.tgt (training), else train_src / train_tgt or val_src / val_tgt when both are given; None: the role
    reads the named corpus split."""
    if role == "train" and dc.distilled:
        return f"{dc.distilled}/train.src", f"{dc.distilled}/train.tgt"
    files = {"train": (dc.train_src, dc.train_tgt), "val": (dc.val_src, dc.val_tgt)}.get(role, (None, None))
    return files if files[0] and files[1] else None


def role_files(dc: DataConfig, role: str) -> tuple[str, str]:
    """The two files role 'train', 'val' or 'test' reads (a named corpus split is found or fetched first)."""
    files = explicit_files(dc, role)
    if files:
        return files
    split = {"train": dc.train_split, "val": dc.val_split, "test": dc.test_split}[role]
    s, t = corpus_files(dc.corpus, split, dc.src, dc.tgt, data_dir=dc.data_dir)
    return str(s), str(t)


def load_pairs(dc: DataConfig, role: str) -> tuple[list[str], list[str]]:
    """Lines for role 'train', 'val' or 'test'; training pairs are cleaned (counts logged)."""
    src, tgt = read_parallel(*role_files(dc, role))
    files = explicit_files(dc, role)
    if role == "train":
        if dc.max_train_pairs:
            src, tgt = src[: dc.max_train_pairs], tgt[: dc.max_train_pairs]
        src, tgt, stats = clean_pairs(src, tgt, dc.max_chars, dc.max_ratio)
        log.info("training data: %s", stats)
        if not src:
            where = files[0] if files else f"{dc.corpus}:{dc.train_split}:{dc.src}-{dc.tgt}"
            raise SeqkdError(f"{where}: no usable training pairs ({stats})")
    if role == "val" and not src:  # training validates on it at the end of every epoch: refuse it before the first
        where = files[0] if files else f"{dc.corpus}:{dc.val_split}:{dc.src}-{dc.tgt}"
        raise SeqkdError(f"{where}: the validation set is empty (0 lines); training validates on it after "
                         "every epoch")
    return src, tgt


def _count_lines(path: str) -> int:
    """Lines of a plain or gzipped file, counted in 1 MiB blocks (a last line without newline counts)."""
    opener = gzip.open if path.endswith(".gz") else open
    n, last = 0, b"\n"
    try:
        with opener(path, "rb") as f:
            while block := f.read(1 << 20):
                n += block.count(b"\n")
                last = block[-1:]
    except FileNotFoundError:
        raise SeqkdError(f"{path}: file not found") from None
    except OSError as e:
        raise SeqkdError(f"{path}: cannot read ({e})") from None
    return n + (last != b"\n")


def stream_train_pairs(dc: DataConfig) -> Callable[[], Iterable[tuple[str, str]]]:
    """The cleaned training pairs as `load_pairs(dc, "train")` gives them, read from disk on each call
    (for corpora too large to hold in memory). The files are found and checked to be aligned now."""
    src_path, tgt_path = role_files(dc, "train")
    n_src, n_tgt = _count_lines(src_path), _count_lines(tgt_path)
    if n_src != n_tgt:
        raise misaligned(src_path, n_src, tgt_path, n_tgt)
    if n_src == 0:
        raise SeqkdError(f"{src_path}: no training pairs (the file is empty)")

    def pairs() -> Iterator[tuple[str, str]]:
        stats = CleanStats(0, 0, 0, 0, max_chars=dc.max_chars, max_ratio=dc.max_ratio)
        it = iter_parallel(src_path, tgt_path)
        if dc.max_train_pairs:
            it = islice(it, dc.max_train_pairs)
        for s, t in it:
            if keep_pair(s, t, stats):
                yield s, t
        log.info("training data: %s", stats)

    return pairs
