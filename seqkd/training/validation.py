"""Validation during training: reference perplexity and greedy BLEU (CTranslate2) on the dev set."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from seqkd.data.batching import IGNORE, collate, token_batches
from seqkd.data.vocab import Vocab
from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.evaluate import bleu
from seqkd.models.marian import save_model, training_logits
from seqkd.training.dist import to_device
from seqkd.training.losses import LossConfig, compute_loss

log = logging.getLogger(__name__)


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
        ntok += int(b["labels"].ne(IGNORE).sum())
    model.train()
    return total / max(1, ntok)


def val_bleu(run: Path, model, vocab: Vocab, src: list[str], ref: list[str]) -> float:
    """Greedy BLEU of the current weights (saved to run/.val_model and decoded by CTranslate2; on a GPU
    that CTranslate2 cannot use, by HF generate on that GPU)."""
    tmp = run / ".val_model"
    save_model(model, tmp)
    vocab.save_to(tmp)
    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    engine = "ct2" if device == "cpu" or _ct2_cuda_ok() else "hf"
    try:
        hyps = Translator(tmp, DecodeConfig(engine=engine, beam=1, device=device)).translate(src, beam=1)
    except RuntimeError as e:  # CTranslate2's wheel needs CUDA 12's cuBLAS: a CUDA 13 machine lacks it
        if engine != "ct2" or device != "cuda":
            raise
        _CT2_CUDA["ok"] = False
        log.warning("CTranslate2 cannot decode on CUDA here (%s); validation decodes greedily with HF "
                    "generate on the GPU instead", str(e).splitlines()[0][:200])
        hyps = Translator(tmp, DecodeConfig(engine="hf", beam=1, device=device)).translate(src, beam=1)
    return bleu([h[0].text for h in hyps], ref).score


_CT2_CUDA: dict[str, bool] = {}


def _ct2_cuda_ok() -> bool:
    """False once CTranslate2 has failed on CUDA in this process (or sees no GPU); True until then."""
    if "ok" not in _CT2_CUDA:
        import ctypes

        import ctranslate2

        try:  # the wheel loads cuBLAS 12 at its first GEMM; a machine with CUDA 13 alone has none
            ctypes.CDLL("libcublas.so.12")
            _CT2_CUDA["ok"] = ctranslate2.get_cuda_device_count() > 0
        except OSError:
            _CT2_CUDA["ok"] = False
        if not _CT2_CUDA["ok"]:
            log.warning("CTranslate2 cannot decode on CUDA here (no GPU or no libcublas.so.12); validation "
                        "decodes greedily with HF generate on the GPU")
    return _CT2_CUDA["ok"]


def cleanup(run: Path) -> None:
    shutil.rmtree(run / ".val_model", ignore_errors=True)
