"""Training-step time, fp32 vs bf16 autocast, for a named size (interleaved runs, median).

    python benchmarks/train_step.py --size student --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqkd.losses import LossConfig, compute_loss
from seqkd.models import ModelConfig, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="student")
    p.add_argument("--vocab", type=int, default=8001)
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--src-len", type=int, default=26)
    p.add_argument("--tgt-len", type=int, default=25)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=INT", help="MarianConfig override")
    p.add_argument("--modes", default="bf16,fp32", help="which of bf16,fp32 to time")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    V = a.vocab
    overrides = {k: int(v) for k, v in (s.split("=") for s in a.set)}
    model = build_model(ModelConfig(a.size, overrides), V, V - 1, 0)
    modes = [m == "bf16" for m in a.modes.split(",")]
    x = torch.randint(0, V - 1, (a.rows, a.src_len))
    d = torch.randint(0, V - 1, (a.rows, a.tgt_len))
    y = torch.randint(0, V - 1, (a.rows, a.tgt_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(a.steps + 2 * len(modes)):
        bf16 = modes[i % len(modes)]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x, attention_mask=torch.ones_like(x), decoder_input_ids=d).logits
        loss, _ = compute_loss(logits, y, LossConfig(), V - 1)
        (loss / y.numel()).backward()
        opt.step()
        opt.zero_grad()
        if i >= 2 * len(modes):
            times[bf16].append(time.perf_counter() - t)
    tok = a.rows * a.tgt_len
    for bf16, ts in times.items():
        if not ts:
            continue
        med = statistics.median(ts)
        print(f"{a.size} {'bf16' if bf16 else 'fp32'}: median {med:.3f} s/step, {tok / med:.0f} target tok/s "
              f"({len(ts)} steps, {a.threads} threads)")


if __name__ == "__main__":
    main()
