"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from seqkd.data.batching import IGNORE
from seqkd.training.losses import LossConfig, compute_loss

# vocabulary of 3 words + <pad> (id 3, last); logits for words [1, 2, 3] -> log-softmax:
# logsumexp = 3 + log(1 + e^-1 + e^-2) = 3.407606; lprobs = [-2.407606, -1.407606, -0.407606]
LOGITS = [1.0, 2.0, 3.0, 50.0]  # the pad logit is ignored whatever its value


def _logits(rows):
    return torch.tensor([rows], dtype=torch.float32)  # (B=1, T, V=4)


def test_label_smoothed_nll_hand_computed():
    logits = _logits([LOGITS])
    labels = torch.tensor([[0]])
    loss, logs = compute_loss(logits, labels, LossConfig(label_smoothing=0.1), pad_id=3)
    # nll = 2.407606; smoothing term = mean(2.407606, 1.407606, 0.407606) = 1.407606
    # loss = 0.9 * 2.407606 + 0.1 * 1.407606 = 2.307606
    assert loss.item() == pytest.approx(2.307606, abs=1e-5)
    assert logs["nll"] == pytest.approx(2.407606, abs=1e-5)


def test_padding_positions_ignored_and_no_smoothing_is_nll():
    logits = _logits([LOGITS, LOGITS, [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([[2, 1, IGNORE]])
    loss, logs = compute_loss(logits, labels, LossConfig(label_smoothing=0.0), pad_id=3)
    assert loss.item() == pytest.approx(0.407606 + 1.407606, abs=1e-5)
    assert logs["nll"] == pytest.approx(loss.item(), abs=1e-6)


def test_pad_not_last_masked_the_same():
    # same distribution with <pad> at id 0 instead of last
    logits = torch.tensor([[[50.0, 1.0, 2.0, 3.0]]])
    loss, _ = compute_loss(logits, torch.tensor([[1]]), LossConfig(label_smoothing=0.1), pad_id=0)
    assert loss.item() == pytest.approx(2.307606, abs=1e-5)


def test_gradient_never_reaches_pad_logit():
    logits = _logits([LOGITS]).requires_grad_()
    loss, _ = compute_loss(logits, torch.tensor([[0]]), LossConfig(label_smoothing=0.1), pad_id=3)
    loss.backward()
    assert logits.grad[0, 0, 3].item() == 0.0
    assert math.isfinite(logits.grad.sum().item())
