"""Training losses with one signature: `(student_logits, labels, teacher) -> (loss, logs)`.

Shapes: logits (B, T, V) float; labels (B, T) long with `ignore` (-100) at padding; teacher either
None, full teacher logits (B, T, V), or a top-k pair (values (B, T, k) probabilities, indices
(B, T, k) long). Losses are sums over target tokens; the trainer divides by the token count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    word_kd_alpha: float = 0.0  # weight of the Word-KD term; 0 = plain (label-smoothed) NLL
    temperature: float = 1.0  # softens teacher and student distributions in the KD term


def _log_probs(logits: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """log_softmax over the vocabulary in float32, without `<pad>` (never a target, never predicted).

    logits (B, T, V - 1) from `models.training_logits` (pad column never computed) are used as they
    are; logits (B, T, V) -> (B, T, V - 1) when `<pad>` is the last id (seqkd's and Marian's layout:
    dropping the column is a free view, so the pad row of the tied embedding gets no gradient and
    stays zero); other layouts get the pad logit set to -inf instead.
    """
    if pad_id is not None and pad_id == logits.size(-1):  # already without the pad column (training_logits)
        return F.log_softmax(logits.float(), dim=-1)
    if pad_id is not None and pad_id == logits.size(-1) - 1:
        return F.log_softmax(logits[..., :-1].float(), dim=-1)
    logits = logits.float()
    if pad_id is not None:
        logits = logits.clone()
        logits[..., pad_id] = float("-inf")
    return F.log_softmax(logits, dim=-1)


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
        q = _log_probs(teacher / temperature, pad_id).exp()
        ce = -(q * lprobs_t.masked_fill(q.eq(0), 0.0)).sum(-1)
    return (ce * mask).sum()


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: LossConfig, pad_id: int | None,
                 teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """`(1 - a) * smoothed NLL + a * T^2 * Word-KD`, summed over target tokens; both terms logged apart."""
    a = cfg.word_kd_alpha
    lprobs = _log_probs(logits, pad_id)
    loss, nll = smoothed_nll(lprobs, labels, cfg.label_smoothing, pad_id)
    logs = {"nll": nll.item(), "ce": loss.item()}
    if a > 0:
        if teacher is None:
            raise ValueError("word_kd_alpha > 0 needs teacher outputs")
        t = cfg.temperature
        lprobs_t = lprobs if t == 1.0 else _log_probs(logits / t, pad_id)
        kd = word_kd(lprobs_t, labels, teacher, t, pad_id)
        logs["kd"] = kd.item()
        loss = (1 - a) * loss + a * (t * t) * kd
    return loss, logs
