"""Training precision: float32, or bfloat16 autocast where the hardware runs bf16 natively.

Measured on the 2-core AVX-512 BF16 / AMX development CPU (benchmarks/train_step.py,
docs/RESULTS.md): autocast with eager attention is 2-2.5x faster than float32 per training step;
keeping the weights themselves in bf16 (with fp32 master weights) was no faster than autocast.
Under autocast the loss's log-softmax still runs in float32 (`models.marian.log_probs`).
On a CPU without native bf16 (AVX2 only) autocast is emulated and far slower: a 2+2 d256 training
step measured 55.3 s under autocast against 2.42 s in float32 (23x, 2 cores, docs/RESULTS.md), so
the presets ask for `auto`, and `on` on such a CPU logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from seqkd.util.fsutil import SeqkdError

log = logging.getLogger(__name__)

MODES = ("off", "on", "auto")
ROUNDINGS = ("", "float16")  # TrainConfig.round_to: "" keeps the saved weights as trained


def bf16_supported() -> bool:
    """True when this CPU has native bf16 (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_autocast(mode: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: `on`, or `auto` on CUDA / a bf16-capable CPU."""
    if mode not in MODES:
        raise SeqkdError(f"train.bf16 must be one of {', '.join(MODES)}, got {mode!r}")
    native = device.type == "cuda" or bf16_supported()
    if mode == "on" and not native:
        log.warning("train.bf16=on on a CPU without AVX-512 BF16 / AMX: autocast is emulated there and "
                    "about 20x slower than float32 (measured); use train.bf16=auto")
    return mode == "on" or (mode == "auto" and native)


def check_rounding(to: str) -> None:
    if to not in ROUNDINGS:
        raise SeqkdError(f"train.round_to must be one of {', '.join(repr(r) for r in ROUNDINGS)}, got {to!r}")


@contextmanager
def rounded(model: torch.nn.Module, to: str) -> Iterator[None]:
    """Inside the block, `model`'s trainable floating-point weights hold the nearest `to` values (still stored in
    their own dtype, float32); after it, exactly the weights they held before. `to` = "": no change.

    Training validates and saves its model inside this block (`TrainConfig.round_to`), so the saved model, its
    validation BLEU and every stage that reads it see the same rounded weights, while the optimiser goes on from
    the unrounded ones. Rounding to float16 values lets the run archive keep a student in half the bytes,
    bit-exactly (`reproduce.compact`); it moved validation BLEU by 0.00 (teacher, 40.78) and +0.01 (2+2 d168
    baseline, 39.38) on Multi30k (`benchmarks/round_fp16.py`, docs/results/multi30k-de-en). The constant position
    tables are left as they are.
    """
    check_rounding(to)
    if not to:
        yield
        return
    dtype = getattr(torch, to)
    kept = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    with torch.no_grad():
        for p, _ in kept:
            p.copy_(p.to(dtype).to(p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in kept:
                p.copy_(v)
