"""The machine a stage ran on (CPU model, ISA, threads, GPU) and a quick measure of its speed."""

from __future__ import annotations

import os
import platform
import time
from functools import cache
from pathlib import Path

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@cache
def _cpu() -> tuple[str, tuple[str, ...]]:
    """(model name, the ISA extensions of ISA_FLAGS it has) from /proc/cpuinfo."""
    name, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == platform.processor():
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return name, tuple(f for f in ISA_FLAGS if f in flags)


def machine_info(threads: int = 0) -> dict:
    """CPU model, ISA, cores, threads in use, GPU, Python and library versions."""
    cpu, isa = _cpu()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {}
    for mod in ("torch", "transformers", "ctranslate2", "sacrebleu", "sentencepiece"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            versions[mod] = "?"
    return {"cpu": cpu, "isa": list(isa), "cores": os.cpu_count(), "threads": threads or torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "versions": versions}


def same_machine(a: dict, b: dict) -> bool:
    """Whether two machine records describe the same kind of machine (CPU model, GPU, threads)."""
    return all(a.get(k) == b.get(k) for k in ("cpu", "gpu", "threads"))


@cache
def machine_gflops(seconds: float = 1.0) -> float:
    """float32 matrix-multiply GFLOP/s on this machine's threads (512 x 512, the median of ~`seconds`)."""
    a = torch.randn(512, 512)
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 3:
        t = time.perf_counter()
        for _ in range(8):
            a @ a
        rates.append(8 * 2 * 512**3 / (time.perf_counter() - t) / 1e9)
    return sorted(rates)[len(rates) // 2]


if __name__ == "__main__":  # `python -m seqkd.reproduce.machine [THREADS]`: what time estimates scale by
    import sys

    n = int(sys.argv[1]) if sys.argv[1:] else 0
    if n:
        torch.set_num_threads(n)
    print({**machine_info(n), "gflops_fp32_matmul": round(machine_gflops(3.0), 1)})
