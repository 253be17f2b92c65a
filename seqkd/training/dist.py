"""torch.distributed for `seqkd train` under torchrun: process group, device, and the few
collectives the loop needs. One process without torchrun is world size 1 and uses none of them.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the backend is NCCL on
CUDA and gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from seqkd.util.fsutil import SeqkdError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on the process that writes checkpoints, logs and models."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when available, else CPU; cuda: CUDA or a clear error (never a silent CPU fallback)."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise SeqkdError(f"train.device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SeqkdError(f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str) -> Dist:
    """The process group from torchrun's environment (or world size 1), and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not tdist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # validation runs on rank 0 while the others wait: allow it time
        tdist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return Dist(rank=rank, world=world, local_rank=local, device=dev)


def barrier(d: Dist) -> None:
    if d.world > 1:
        tdist.barrier()


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    tdist.all_reduce(t)
    return t.tolist()


def broadcast(d: Dist, obj):
    """Rank 0's `obj` on every rank (a picklable Python value made by seqkd itself)."""
    if d.world == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0, device=d.device if d.device.type == "cuda" else None)
    return box[0]


def gather_rng(d: Dist) -> list[torch.Tensor]:
    """Every rank's torch CPU (and CUDA) generator state, on rank 0: [(cpu, cuda or empty)] flattened."""
    mine = [torch.get_rng_state(), torch.cuda.get_rng_state(d.device) if d.device.type == "cuda"
            else torch.zeros(0, dtype=torch.uint8)]
    if d.world == 1:
        return mine
    out = [None] * d.world
    tdist.all_gather_object(out, [t.tolist() for t in mine])
    return [torch.tensor(x, dtype=torch.uint8) for pair in out for x in pair]


def shutdown(d: Dist) -> None:
    if d.world > 1 and tdist.is_initialized():
        tdist.destroy_process_group()


def to_device(obj, device: torch.device):
    """Move a batch dict, a tensor or a tuple of tensors to `device`."""
    if isinstance(obj, dict):
        return {k: v.to(device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(t.to(device) for t in obj)
    return obj.to(device) if obj is not None else None
