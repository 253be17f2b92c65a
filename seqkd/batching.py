"""Token-budget batching and padding for encoder-decoder training."""

from __future__ import annotations

import numpy as np
import torch

from seqkd.losses import IGNORE


def token_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int) -> list[list[int]]:
    """Group example indices into batches whose padded size (rows x longest side) <= max_tokens.

    Examples are sorted by (target, source) length so padding is small; the order is deterministic.
    """
    order = sorted(range(len(src_lens)), key=lambda i: (tgt_lens[i], src_lens[i], i))
    batches, cur, longest = [], [], 0
    for i in order:
        n = max(src_lens[i], tgt_lens[i])
        if cur and (len(cur) + 1) * max(longest, n) > max_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


def epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The batch order for one epoch: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_batches).tolist()


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    """(B, max_len) long tensor, right-padded with `value`."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(src: list[list[int]], tgt: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Model inputs for teacher forcing.

    src: ids ending with eos; tgt: ids ending with eos. Returns input_ids / attention_mask (B, S),
    decoder_input_ids (B, T) = [pad(start)] + tgt[:-1], labels (B, T) with IGNORE at padding.
    """
    input_ids = pad(src, pad_id)
    labels = pad(tgt, IGNORE)
    dec = pad([[pad_id] + t[:-1] for t in tgt], pad_id)
    return {"input_ids": input_ids, "attention_mask": input_ids.ne(pad_id).long(),
            "decoder_input_ids": dec, "labels": labels}
