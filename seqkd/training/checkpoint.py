"""Resumable training checkpoints: checkpoints/step-N/{model,optim}.safetensors + state.json.

The optimizer is saved from torch's own `state_dict()`: its tensors in safetensors (never pickle),
its param_groups in state.json; loading goes through `Optimizer.load_state_dict`, which puts the
state on each parameter's device (a CPU checkpoint resumes on a GPU and back). The RNG states of
every rank are saved; a resume with another number of ranks restores rank 0's and reseeds the rest.
Written into a temporary folder renamed into place, then `latest.json` points at it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file
from safetensors.torch import save_model as save_weights

from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, finish_folder, is_no_space, no_space, read_json, write_json


def save(run: Path, model, opt: torch.optim.Optimizer, state: dict, rng: list[torch.Tensor]) -> None:
    """rng: [cpu, cuda] generator states per rank, flattened (dist.gather_rng)."""
    ckdir = run / "checkpoints"
    name = f"step-{state['step']}"
    tmp = ckdir / f".{name}.tmp"
    try:
        _save(ckdir, name, tmp, model, opt, state, rng)
    except Exception as e:
        if is_no_space(e):
            shutil.rmtree(tmp, ignore_errors=True)
            raise no_space(tmp) from None
        raise
    for old in [*ckdir.glob("step-*"), *ckdir.glob(".step-*.tmp")]:  # older ones, and any a kill left
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _save(ckdir: Path, name: str, tmp: Path, model, opt: torch.optim.Optimizer, state: dict,
          rng: list[torch.Tensor]) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, str(tmp / "model.safetensors"))
    faults.point("checkpoint_write")
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": (v.detach().reshape(1) if v.dim() == 0 else v.contiguous()).cpu()
               for i, st in sd["state"].items() for k, v in st.items()}
    for r in range(len(rng) // 2):
        tensors["rng" if r == 0 else f"rng.{r}"] = rng[2 * r]
        if rng[2 * r + 1].numel():
            tensors[f"cuda_rng.{r}"] = rng[2 * r + 1]
    save_file(tensors, str(tmp / "optim.safetensors"))
    write_json(tmp / "state.json", {**state, "world_size": len(rng) // 2, "param_groups": sd["param_groups"]})
    finish_folder(tmp)
    shutil.rmtree(ckdir / name, ignore_errors=True)  # renamed there by a run killed before latest.json
    tmp.rename(ckdir / name)
    faults.point("checkpoint_rename")
    write_json(ckdir / "latest.json", {"dir": name, "step": state["step"]})


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict] | None, opt) -> dict:
    """A state_dict from the saved tensors: "opt.<i>.<key>" (or the first format's "<i>.<key>")."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith(("rng", "cuda_rng")):
            continue
        i, k = key.removeprefix("opt.").split(".", 1)
        state.setdefault(int(i), {})[k] = v.reshape(()) if k == "step" else v
    return {"state": state, "param_groups": groups or opt.state_dict()["param_groups"]}


def _check_shapes(d: Path, model) -> None:
    """SeqkdError naming the checkpoint when its weights were saved by a model of another shape."""
    own = model.state_dict()
    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            theirs = tuple(f.get_slice(key).get_shape())
            if key in own and theirs != tuple(own[key].shape):
                raise SeqkdError(f"{d}: checkpoint of another model size or vocabulary ({key} is {list(theirs)} "
                                 f"there, {list(own[key].shape)} here); use another --out or delete it")


def load(run: Path, model, opt: torch.optim.Optimizer, rank: int, world: int, seed: int,
         device: torch.device) -> dict | None:
    """Restore model, optimizer and this rank's RNG from the latest checkpoint; its state dict, or None."""
    latest = run / "checkpoints" / "latest.json"
    if not latest.exists() or faults.resume_disabled():
        return None
    d = run / "checkpoints" / read_json(latest, ["dir"], "delete the checkpoints folder to restart")["dir"]
    try:
        _check_shapes(d, model)
        load_model(model, str(d / "model.safetensors"), device=str(device))
        tensors = load_file(str(d / "optim.safetensors"))
        state = json.loads((d / "state.json").read_text())
        opt.load_state_dict(_optimizer_state(tensors, state.pop("param_groups", None), opt))
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, SafetensorError) as e:  # damaged or foreign
        raise SeqkdError(f"{d}: corrupt checkpoint ({type(e).__name__}: {e}); delete it to restart") from e
    saved_world = state.pop("world_size", 1)
    key = "rng" if rank == 0 else f"rng.{rank}"
    if saved_world == world and key in tensors:
        torch.set_rng_state(tensors[key])
        if device.type == "cuda" and f"cuda_rng.{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"cuda_rng.{rank}"], device)
    elif rank == 0:
        torch.set_rng_state(tensors["rng"])
    else:  # another number of ranks than saved: a fresh stream per (seed, step, rank)
        torch.manual_seed(seed * 1_000_003 + state["step"] * 101 + rank)
    return state
