"""Validation during training: reference perplexity and greedy BLEU (CTranslate2) on the dev set."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from seqkd.batching import collate, token_batches
from seqkd.losses import LossConfig, compute_loss
from seqkd.models import save_model, training_logits
from seqkd.vocab import Vocab


@torch.no_grad()
def validation_loss(model, src_ids, tgt_ids, pad_id: int, max_tokens: int, autocast: bool,
                    device: torch.device = torch.device("cpu")) -> float:
    """Mean per-token NLL of the references (no smoothing); exp() of it is the perplexity."""
    model.eval()
    total, ntok = 0.0, 0
    cfg = LossConfig(label_smoothing=0.0)
    for idx in token_batches([len(s) for s in src_ids], [len(t) for t in tgt_ids], max_tokens):
        b = to_device(collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx], pad_id), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = training_logits(model, b, pad_id)
        _, logs = compute_loss(logits, b["labels"], cfg, pad_id)
        total += logs["nll"]
        ntok += int(b["labels"].ne(-100).sum())
    model.train()
    return total / max(1, ntok)


def val_bleu(run: Path, model, vocab: Vocab, src: list[str], ref: list[str]) -> float:
    """Greedy BLEU of the current weights (saved to run/.val_model and decoded by CTranslate2)."""
    from seqkd.decode import DecodeConfig, Translator
    from seqkd.evaluate import bleu

    tmp = run / ".val_model"
    save_model(model, tmp)
    vocab.save_to(tmp)
    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    hyps = Translator(tmp, DecodeConfig(engine="ct2", beam=1, device=device)).translate(src, beam=1)
    return bleu([h[0].text for h in hyps], ref).score


def cleanup(run: Path) -> None:
    shutil.rmtree(run / ".val_model", ignore_errors=True)


def release_memory() -> float:
    """Hand freed heap memory back to the OS and return the resident set size in MiB (0 if unknown).

    Training on batches of varying shapes fragments glibc's main heap, which otherwise only grows: the
    grid's process reached 8.6 GB of heap for a 33.5M-parameter teacher. glibc's malloc_trim returns
    the free pages; elsewhere (another libc) this only reports the RSS."""
    import ctypes
    import os

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def to_device(obj, device: torch.device):
    """Move a batch dict, a tensor or a tuple of tensors to `device`."""
    if isinstance(obj, dict):
        return {k: v.to(device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(t.to(device) for t in obj)
    return obj.to(device) if obj is not None else None
