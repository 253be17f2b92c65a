"""Magnitude pruning (See et al. 2016): class-blind, class-uniform, class-distribution; masks that
keep pruned weights at exactly zero through retraining; sparsity accounting.

A "class" is one weight matrix. Biases, layer norms and the fixed sinusoidal position tables are
never pruned; the (tied) embedding / output projection matrix is optional.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqkd.data.vocab import Vocab
from seqkd.models.marian import count_params, is_embedding, load_model, save_model
from seqkd.training.trainer import train
from seqkd.util.fsutil import SeqkdError, read_json, write_json

SCHEMES = ("class-blind", "class-uniform", "class-distribution")


@dataclass
class PruneConfig:
    sparsity: float = 0.8  # fraction of the prunable weights set to zero
    scheme: str = "class-blind"
    include_embeddings: bool = True  # the shared embedding / output projection counts as prunable
    rounds: int = 1  # gradual pruning: reach the sparsity in this many prune + retrain rounds (cubic schedule)
    schedule: tuple[float, ...] = ()  # explicit sparsity per round (overrides rounds), ending at `sparsity`


def prunable(model: torch.nn.Module, include_embeddings: bool = True) -> dict[str, torch.nn.Parameter]:
    """Weight matrices that may be pruned, tied weights once: {name: parameter (out, in)}."""
    out, seen = {}, set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad or p.dim() != 2:
            continue
        seen.add(id(p))
        if is_embedding(name) and not include_embeddings:
            continue
        out[name] = p
    return out


def _keep_mask_from_order(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Bool mask (same shape as scores) that drops exactly the n_prune lowest scores (ties by position)."""
    flat = scores.reshape(-1)
    mask = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        order = torch.argsort(flat, stable=True)
        mask[order[:n_prune]] = False
    return mask.view_as(scores)


def compute_masks(model: torch.nn.Module, cfg: PruneConfig) -> dict[str, torch.Tensor]:
    """{name: bool keep-mask} with exactly round(sparsity * prunable weights) zeros in total.

    class-blind: one global threshold on |w|; class-uniform: the same fraction in every matrix
    (rounded per matrix); class-distribution: per-matrix threshold lambda * std(W), lambda chosen
    globally to hit the target (a global threshold on |w| / std(W)).
    """
    if cfg.scheme not in SCHEMES:
        raise SeqkdError(f"unknown pruning scheme {cfg.scheme!r}; known: {', '.join(SCHEMES)}")
    if not 0.0 <= cfg.sparsity < 1.0:
        raise SeqkdError(f"sparsity must be in [0, 1), got {cfg.sparsity}")
    params = prunable(model, cfg.include_embeddings)
    with torch.no_grad():
        if cfg.scheme == "class-uniform":
            return {n: _keep_mask_from_order(p.abs(), round(cfg.sparsity * p.numel())) for n, p in params.items()}
        if cfg.scheme == "class-blind":
            scores = {n: p.abs() for n, p in params.items()}
        else:
            scores = {n: p.abs() / p.float().std().clamp(min=1e-12) for n, p in params.items()}
        names = list(scores)
        flat = torch.cat([scores[n].reshape(-1) for n in names])
        keep = _keep_mask_from_order(flat, round(cfg.sparsity * flat.numel()))
        masks, start = {}, 0
        for n in names:
            k = scores[n].numel()
            masks[n] = keep[start: start + k].view_as(scores[n])
            start += k
    return masks


def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place (called after every optimizer step while retraining)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m)


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    save_file({n: m.to(torch.uint8).contiguous() for n, m in masks.items()}, str(tmp))
    tmp.replace(path)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """The masks saved by `save_masks`; SeqkdError for a missing, unreadable or corrupt file
    (OSError, SafetensorError); any other exception is a bug and propagates."""
    try:
        return {n: m.bool() for n, m in load_file(str(path)).items()}
    except (OSError, SafetensorError) as e:
        raise SeqkdError(f"{path}: cannot read pruning masks ({type(e).__name__}: {e})") from e


def sparsity_report(model: torch.nn.Module, masks: dict[str, torch.Tensor] | None = None) -> dict:
    """Non-zero counts over all parameters and over non-embedding parameters, and the masks' sparsity."""
    counts = count_params(model)
    nonemb_nonzero = 0
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if not is_embedding(name):
            nonemb_nonzero += int(torch.count_nonzero(p))
    rep = {"params_total": counts["total"], "params_nonzero": counts["nonzero"],
           "non_embedding_total": counts["non_embedding"], "non_embedding_nonzero": nonemb_nonzero}
    if masks:
        pruned = sum(int((~m).sum()) for m in masks.values())
        rep["mask_sparsity"] = pruned / max(1, sum(m.numel() for m in masks.values()))
        rep["pruned_weights"] = pruned
    return rep


def schedule(sparsity: float, rounds: int, explicit: tuple[float, ...] = ()) -> list[float]:
    """Sparsity after each gradual-pruning round, ending at `sparsity`.

    `explicit` gives the rounds' targets directly (increasing, the last one equal to `sparsity`);
    otherwise the cubic schedule of Zhu & Gupta (2017) over `rounds` rounds.
    """
    if explicit:
        targets = [float(t) for t in explicit]
        if any(b < a for a, b in zip(targets, targets[1:])) or abs(targets[-1] - sparsity) > 1e-9:
            raise SeqkdError(f"pruning schedule {targets} must increase and end at the sparsity {sparsity}")
        return targets
    rounds = max(1, rounds)
    return [sparsity * (1 - (1 - r / rounds) ** 3) for r in range(1, rounds + 1)]


def prune_and_retrain(model_dir: str | Path, out: str | Path, cfg: PruneConfig, train_cfg, data,
                      progress: bool = True, finetune=None) -> dict:
    """Prune `model_dir` to cfg.sparsity (in rounds), retraining with masks after each round.

    The last round's model is written to `out` (earlier rounds to out/round-k, each a complete
    model with its own prune_result.json); masks are saved before retraining, so a killed round
    resumes with the same masks. `finetune` = (TrainConfig, TrainData) adds a masked fine-tuning
    pass after each retraining (the paper's Seq-KD retraining, then Seq-Inter fine-tuning); the
    retrained model before it is kept in ROUND/retrain. With train_cfg.max_epochs == 0 and
    max_steps == 0 the model is pruned and saved without retraining.
    """
    out = Path(out)
    if (out / "prune_result.json").exists():
        return read_json(out / "prune_result.json", fix="delete it to prune again")
    vocab = Vocab(model_dir)
    prev = Path(model_dir)
    targets = schedule(cfg.sparsity, cfg.rounds, cfg.schedule)
    retrain = train_cfg.max_epochs > 0 or train_cfg.max_steps > 0
    for r, target in enumerate(targets, start=1):
        rdir = out if r == len(targets) else out / f"round-{r}"
        if (rdir / "prune_result.json").exists():
            prev = rdir
            continue
        rdir.mkdir(parents=True, exist_ok=True)
        model = load_model(prev)
        if (rdir / "masks.safetensors").exists():
            masks = load_masks(rdir / "masks.safetensors")
        else:
            masks = compute_masks(model, replace(cfg, sparsity=target))
            save_masks(masks, rdir / "masks.safetensors")
        apply_masks(model, masks)

        def keep(m, masks=masks):
            apply_masks(m, masks)

        if retrain:
            tdir = rdir / "retrain" if finetune else rdir
            train(tdir, replace(train_cfg, init_from=os.path.relpath(prev, tdir)), model, vocab, data, after_step=keep,
                  progress=progress)
            if finetune:
                ft_cfg, ft_data = finetune
                train(rdir, replace(ft_cfg, init_from=os.path.relpath(tdir, rdir)), load_model(tdir), vocab, ft_data,
                      after_step=keep, progress=progress)
            model = load_model(rdir)
        else:
            save_model(model, rdir)
            vocab.save_to(rdir)
        report = {"scheme": cfg.scheme, "target_sparsity": target, "round": r, "schedule": targets,
                  "include_embeddings": cfg.include_embeddings, "parent": os.path.relpath(model_dir, rdir),
                  **sparsity_report(model, masks)}
        write_json(rdir / "prune_result.json", report)
        prev = rdir
    return read_json(out / "prune_result.json")
