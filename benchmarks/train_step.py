"""Question: which precision and attention make the fastest training step? Training-step time for a named size: fp32
vs bf16 autocast vs bf16 weights (fp32 master), with eager (seqkd's default) or SDPA attention (mode suffix "-sdpa"),
interleaved.

Each repetition times one step of every mode in turn (same batch shape, same thread count), so
machine load hits all modes alike; the median and min-max over repetitions are printed.

The committed figures are in docs/results/train-step/README.md (its "Reproduce" lists every command); the AVX-512
table came from:

    OUT=docs/results/train-step/avx512-epyc/train_step.jsonl
    python benchmarks/train_step.py --size student --set encoder_layers=2 --set decoder_layers=2 --steps 8 --json $OUT
    python benchmarks/train_step.py --size student-small --steps 8 --json $OUT
    python benchmarks/train_step.py --size medium --steps 4 --json $OUT

(the H200's: docs/results/multi30k-de-en-gpu/README.md; teacher shapes: docs/results/multi30k-de-en/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seqkd.models.marian import ModelConfig, build_model, training_logits
from seqkd.training.losses import LossConfig, compute_loss


class MasterWeights:
    """fp32 master copies of a bf16 model's trainable parameters; the optimizer steps these, and the
    bf16 weights are refreshed from them after every step (so small updates are not rounded away)."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.master = [torch.nn.Parameter(p.detach().float().clone()) for p in params]

    def grads_to_master(self) -> None:
        for m, p in zip(self.master, self.params):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        for m, p in zip(self.master, self.params):
            p.copy_(m)


class Mode:
    """One precision setup: its own model copy and optimizer (same initial weights for every mode)."""

    def __init__(self, name: str, cfg: ModelConfig, vocab: int, fused: bool, device: torch.device):
        self.name = name
        # PRECISION[-sdpa][-full]: "-sdpa" SDPA attention instead of eager; "-full" the full-vocabulary
        # logits, sliced after (the path before issue 9); "fp32-sdpa-full" is the old default step
        self.precision, *flags = name.split("-")
        self.full = "full" in flags
        if "sdpa" in flags:
            cfg = ModelConfig(cfg.size, {**cfg.overrides, "attn_implementation": "sdpa"})
        self.pad = vocab - 1
        self.device = device
        self.model = build_model(cfg, vocab, vocab - 1, 0, seed=1).train().to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.master = None
        if self.precision == "weights":
            self.model.to(torch.bfloat16)
            self.master = MasterWeights(params)
            params = self.master.master
        self.opt = torch.optim.AdamW(params, lr=1e-4, fused=fused or None)

    def step(self, x, d, y) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "autocast"):
            b = {"input_ids": x, "attention_mask": torch.ones_like(x), "decoder_input_ids": d}
            logits = self.model(**b).logits if self.full else training_logits(self.model, b, self.pad)
        loss, _ = compute_loss(logits, y, LossConfig(), self.pad)
        (loss / y.numel()).backward()
        if self.master:
            self.master.grads_to_master()
        params = self.master.master if self.master else self.model.parameters()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.master:
            self.master.master_to_model()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="student")
    p.add_argument("--vocab", type=int, default=8001)
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--src-len", type=int, default=26)
    p.add_argument("--tgt-len", type=int, default=25)
    p.add_argument("--steps", type=int, default=5, help="timed repetitions per mode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=INT", help="MarianConfig override")
    p.add_argument("--modes", default="fp32-sdpa-full,fp32,autocast-sdpa-full,autocast,weights,autocast-sdpa")
    p.add_argument("--fused", action="store_true", help="fused AdamW kernel")
    p.add_argument("--profile", default="", help="print the top ops of one step of this mode")
    p.add_argument("--json", default="", help="append the result as one JSON line to this file")
    p.add_argument("--device", default="cpu", help="cpu | cuda (steps are timed to the GPU's completion)")
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    V = a.vocab
    cfg = ModelConfig(a.size, {k: (int(v) if v.isdigit() else v) for k, v in (s.split("=") for s in a.set)})
    modes = [Mode(m, cfg, V, a.fused, dev) for m in a.modes.split(",")]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V - 1, (a.rows, a.src_len), generator=g)
    d = torch.randint(0, V - 1, (a.rows, a.tgt_len), generator=g)
    y = torch.randint(0, V - 1, (a.rows, a.tgt_len), generator=g)
    x, d, y = x.to(dev), d.to(dev), y.to(dev)
    times: dict[str, list[float]] = {m.name: [] for m in modes}
    for rep in range(a.steps + 1):  # the first repetition warms up
        for m in modes:
            sync()
            t = time.perf_counter()
            m.step(x, d, y)
            sync()
            if rep:
                times[m.name].append(time.perf_counter() - t)
    tok = a.rows * a.tgt_len
    base = statistics.median(times[modes[0].name])
    for name, ts in times.items():
        med = statistics.median(ts)
        row = {"size": a.size, "overrides": cfg.overrides, "mode": name, "fused_adamw": a.fused,
               "median_s": round(med, 4), "min_s": round(min(ts), 4), "max_s": round(max(ts), 4),
               "tgt_tok_per_s": round(tok / med), "speedup_vs_first": round(base / med, 3),
               "reps": len(ts), "threads": a.threads, "rows": a.rows, "tgt_len": a.tgt_len,
               "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        print(f"{a.size} {name:9s}: median {med:.3f} s/step (min {min(ts):.3f}, max {max(ts):.3f}), "
              f"{tok / med:.0f} target tok/s, {base / med:.2f}x {modes[0].name}")
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    if a.profile:
        m = next(m for m in modes if m.name == a.profile)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            m.step(x, d, y)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
