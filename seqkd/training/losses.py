"""Training losses with one signature: `(student_logits, labels, teacher) -> (loss, logs)`.

Shapes: logits (B, T, V) float; labels (B, T) long with `IGNORE` (`batching.IGNORE`) at padding; teacher either
None, full teacher logits (B, T, V), or a top-k pair (values (B, T, k) probabilities, indices
(B, T, k) long). Losses are sums over target tokens; the trainer divides by the token count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqkd.data.batching import IGNORE
from seqkd.models.marian import log_probs


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    word_kd_alpha: float = 0.0  # weight of the Word-KD term; 0 = plain (label-smoothed) NLL
    temperature: float = 1.0  # softens teacher and student distributions in the KD term


def smoothed_nll(lprobs: torch.Tensor, labels: torch.Tensor, eps: float,
                 pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed NLL summed over tokens, and plain NLL (for perplexity).

    lprobs (B, T, V), labels (B, T). The smoothing mass `eps` is spread uniformly over the V'
    classes that can be predicted (V minus `<pad>`): loss = (1 - eps) * nll + eps * mean_k(-log p_k).
    """
    mask = labels.ne(IGNORE)
    tgt = labels.masked_fill(~mask, 0)
    nll = -lprobs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if eps > 0:
        if lprobs.size(-1) == pad_id:  # pad column already dropped: every class is predictable
            smooth = -lprobs.sum(-1) / lprobs.size(-1)
        else:
            finite = torch.isfinite(lprobs[0, 0])
            smooth = -lprobs.masked_fill(~finite, 0.0).sum(-1) / finite.sum()  # (B, T)
        loss = (1 - eps) * nll + eps * smooth
    else:
        loss = nll
    return (loss * mask).sum(), (nll * mask).sum()


def word_kd(lprobs_t: torch.Tensor, labels: torch.Tensor, teacher, temperature: float,
            pad_id: int | None) -> torch.Tensor:
    """Cross-entropy from the teacher's per-word distribution to the student's, summed over tokens.

    lprobs_t: student log-probs at temperature T (B, T, V). `teacher` is full logits (B, T, V) or a
    top-k pair (probs (B, T, k) renormalised over the k entries, ids (B, T, k)).
    """
    mask = labels.ne(IGNORE)
    if isinstance(teacher, tuple):
        probs, ids = teacher
        ce = -(probs.float() * lprobs_t.gather(-1, ids)).sum(-1)
    else:
        q = log_probs(teacher / temperature, pad_id).exp()
        ce = -(q * lprobs_t.masked_fill(q.eq(0), 0.0)).sum(-1)
    return (ce * mask).sum()


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: LossConfig, pad_id: int | None,
                 teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """`(1 - a) * smoothed NLL + a * T^2 * Word-KD`, summed over target tokens; both terms logged apart."""
    a = cfg.word_kd_alpha
    lprobs = log_probs(logits, pad_id)
    loss, nll = smoothed_nll(lprobs, labels, cfg.label_smoothing, pad_id)
    logs = {"nll": nll.item(), "ce": loss.item()}
    if a > 0:
        if teacher is None:
            raise ValueError("word_kd_alpha > 0 needs teacher outputs")
        t = cfg.temperature
        lprobs_t = lprobs if t == 1.0 else log_probs(logits / t, pad_id)
        kd = word_kd(lprobs_t, labels, teacher, t, pad_id)
        logs["kd"] = kd.item()
        loss = (1 - a) * loss + a * (t * t) * kd
    return loss, logs
