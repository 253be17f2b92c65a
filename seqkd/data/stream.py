"""The training data stream: token data on disk, token-budget batches, and each rank's rows.

Every process sees the same global batches in the same order (a permutation per epoch that depends
only on the seed and the epoch); under torchrun, rank r of N takes rows r, r + N, ... of each
global batch, so the global batch in tokens is the same for any N.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqkd.data import tokdata
from seqkd.data.batching import batch_bounds, collate, epoch_order
from seqkd.data.vocab import Vocab
from seqkd.util.fsutil import SeqkdError

log = logging.getLogger(__name__)


@dataclass
class Stream:
    data: tokdata.TokenData
    order: np.ndarray  # (kept examples,) example indices sorted for batching
    bounds: np.ndarray  # (batches + 1,) global batch b = order[bounds[b]:bounds[b + 1]]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def epoch(self, seed: int, epoch: int) -> list[int]:
        return epoch_order(len(self), seed, epoch)

    def rows(self, batch: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """Example indices of global batch `batch` that rank `rank` of `world` trains on (may be empty)."""
        idx = self.order[self.bounds[batch]: self.bounds[batch + 1]]
        return idx[rank::world]

    def collate(self, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        return collate([self.data.src(i).tolist() for i in rows], [self.data.tgt(i).tolist() for i in rows], pad_id)


def prepare(folder: Path, pairs, vocab: Vocab, max_tokens: int, max_len: int, build: bool = True) -> Stream:
    """Encode the pairs into `folder` (when `build`; other ranks open what rank 0 built) and batch them.

    Pairs longer than `max_len` tokens on either side are left out of the batches (not of the data,
    so example indices stay those of the text pairs).
    """
    data = tokdata.build(folder, pairs, vocab) if build else tokdata.TokenData(folder)
    s_len, t_len = data.lens["src"], data.lens["tgt"]
    keep = (s_len <= max_len) & (t_len <= max_len)
    n_skip = int(len(keep) - keep.sum())
    if n_skip:
        log.info("skipped %d training pairs longer than %d tokens", n_skip, max_len)
    if not keep.any():
        raise SeqkdError("no training pairs left after length filtering")
    order, bounds = batch_bounds(s_len, t_len, max_tokens, keep)
    return Stream(data, order, bounds)
