"""Token-budget batching and padding for encoder-decoder training."""

from __future__ import annotations

import numpy as np
import torch

IGNORE = -100  # the label at padding positions: no loss there


def batch_bounds(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int,
                 keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token-budget batches as arrays: batch b is `order[bounds[b]:bounds[b + 1]]`.

    src_lens, tgt_lens: (N,) lengths; keep: optional (N,) bool mask of usable examples.
    Examples are sorted by (target, source) length, then index, so padding is small and the order is
    deterministic; a batch's padded size (rows x longest side) stays <= max_tokens. Memory is a few
    bytes per example (no Python object per example).
    """
    src_lens, tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
    n = len(src_lens)
    idx = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)
    if keep is not None and not keep.all():
        idx, src_lens, tgt_lens = idx[keep], src_lens[keep], tgt_lens[keep]
    pos = np.lexsort((idx, src_lens, tgt_lens))  # sorted by (target, source, index): deterministic
    order = idx[pos]
    longest_side = np.maximum(src_lens, tgt_lens)[pos]
    del pos
    bounds, rows, longest = [0], 0, 0
    for start in range(0, len(order), 100_000):  # plain ints in chunks: fast, and memory stays flat
        for j, size in enumerate(longest_side[start: start + 100_000].tolist(), start):
            if rows and (rows + 1) * max(longest, size) > max_tokens:
                bounds.append(j)
                rows, longest = 0, 0
            rows += 1
            longest = max(longest, size)
    if rows:
        bounds.append(len(order))
    return order, np.asarray(bounds, dtype=np.int64)


def token_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int) -> list[list[int]]:
    """`batch_bounds` as lists of example indices (for small inputs: validation, decoding, caches)."""
    order, bounds = batch_bounds(np.asarray(src_lens), np.asarray(tgt_lens), max_tokens)
    return [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


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
