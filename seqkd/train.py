"""The one training loop: every model (teacher, baseline, Word-KD, Seq-KD, Seq-Inter fine-tuning,
pruned retraining) is trained here; methods differ only in data, loss weights and hooks.

A run folder holds the best model as a Hugging Face folder (config.json, model.safetensors,
tokenizer files), `metrics.jsonl`, `checkpoints/` for resuming, and `train_result.json`, written
last. Rerunning on the same folder resumes from the latest checkpoint (model, optimizer, schedule
step, data position, RNG) and ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file
from safetensors.torch import save_model as save_weights
from tqdm import tqdm

from seqkd.batching import collate, epoch_order, token_batches
from seqkd.fsutil import SeqkdError, append_jsonl, folder_lock, read_jsonl, write_json
from seqkd.losses import LossConfig, compute_loss
from seqkd.models import count_params, save_model, training_logits
from seqkd.precision import bf16_autocast
from seqkd.vocab import Vocab

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    max_tokens: int = 4096  # padded tokens per batch (rows x longest side)
    lr: float = 7e-4
    warmup_steps: int = 800
    schedule: str = "inverse_sqrt"  # inverse_sqrt | linear (to 0 at the planned last step) | constant
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    clip_norm: float = 1.0
    max_epochs: int = 10
    max_steps: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # training-time budget across resumes; 0 = no limit
    bf16: str = "off"  # off | on (autocast) | auto (on where the CPU has AVX-512 BF16 / AMX, or on CUDA)
    seed: int = 1
    threads: int = 0  # torch threads; 0 = torch's default
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    val_every: int = 0  # steps between validations; 0 = at the end of every epoch
    val_bleu: bool = True  # greedy BLEU on the validation set (CTranslate2), used for model selection
    val_max_sents: int = 0  # 0 = the whole validation set
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    log_every: int = 50
    ckpt_every: int = 500  # steps between resumable checkpoints (also at every validation)
    max_len: int = 256  # training pairs longer than this (tokens, either side) are skipped
    init_from: str | None = None  # start from this model folder (fine-tuning, e.g. Seq-Inter)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class TrainData:
    src: list[str]
    tgt: list[str]
    val_src: list[str]
    val_tgt: list[str]


TeacherFn = Callable[[list[int], dict], object]  # (example indices, batch) -> teacher outputs for losses


SCHEDULES = ("inverse_sqrt", "linear", "constant")


def lr_at(step: int, cfg: TrainConfig, total_steps: int = 0) -> float:
    """Learning rate for 1-based `step`: linear warmup over `warmup_steps` (none when 0), then

    - inverse_sqrt: lr * sqrt(warmup / step) (pre-training from scratch);
    - linear: straight down to 0 at `total_steps` (the stage's planned length: max_steps, else
      max_epochs x batches per epoch);
    - constant: lr.
    """
    w = cfg.warmup_steps
    if w > 0 and step <= w:
        return cfg.lr * step / w
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(1, w) / step)
    if cfg.schedule == "linear":
        if total_steps <= w:
            raise SeqkdError(f"train.schedule linear needs more planned steps ({total_steps}) than warmup ({w})")
        return cfg.lr * max(0.0, (total_steps - step) / (total_steps - w))
    return cfg.lr


# --- checkpoints --------------------------------------------------------------------------------
def _save_checkpoint(run: Path, model, opt: torch.optim.Optimizer, state: dict) -> None:
    ckdir = run / "checkpoints"
    name = f"step-{state['step']}"
    tmp = ckdir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, str(tmp / "model.safetensors"))
    tensors, meta = {}, []
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"{i}.{k}"] = v.detach().clone().reshape(-1) if v.dim() == 0 else v.contiguous()
            meta.append(k)
    tensors["rng"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    write_json(tmp / "state.json", state)
    (tmp).rename(ckdir / name)
    write_json(ckdir / "latest.json", {"dir": name, "step": state["step"]})
    for old in ckdir.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run: Path, model, opt: torch.optim.Optimizer) -> dict | None:
    latest = run / "checkpoints" / "latest.json"
    if not latest.exists():
        return None
    d = run / "checkpoints" / json.loads(latest.read_text())["dir"]
    try:
        load_model(model, str(d / "model.safetensors"))
        tensors = load_file(str(d / "optim.safetensors"))
        state = json.loads((d / "state.json").read_text())
    except Exception as e:
        raise SeqkdError(f"{d}: corrupt checkpoint ({type(e).__name__}: {e}); delete it to restart") from e
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, v in tensors.items():
        if key == "rng":
            continue
        i, k = key.split(".", 1)
        p = params[int(i)]
        opt.state[p][k] = v.reshape(()) if k == "step" else v
    torch.set_rng_state(tensors["rng"])
    return state


# --- evaluation during training -----------------------------------------------------------------
@torch.no_grad()
def validation_loss(model, src_ids, tgt_ids, pad_id: int, max_tokens: int, autocast: bool,
                    device: torch.device = torch.device("cpu")) -> float:
    """Mean per-token NLL of the references (no smoothing); exp() of it is the perplexity."""
    model.eval()
    total, ntok = 0.0, 0
    cfg = LossConfig(label_smoothing=0.0)
    for idx in token_batches([len(s) for s in src_ids], [len(t) for t in tgt_ids], max_tokens):
        b = _to(collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx], pad_id), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = training_logits(model, b, pad_id)
        _, logs = compute_loss(logits, b["labels"], cfg, pad_id)
        total += logs["nll"]
        ntok += int(b["labels"].ne(-100).sum())
    model.train()
    return total / max(1, ntok)


def _to(obj, device: torch.device):
    """Move a batch dict, a tensor or a tuple of tensors to `device`."""
    if isinstance(obj, dict):
        return {k: v.to(device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(t.to(device) for t in obj)
    return obj.to(device) if obj is not None else None


def _val_bleu(run: Path, model, vocab: Vocab, src: list[str], ref: list[str]) -> float:
    from seqkd.decode import DecodeConfig, Translator
    from seqkd.evaluate import bleu

    tmp = run / ".val_model"
    save_model(model, tmp)
    vocab.save_to(tmp)
    hyps = Translator(tmp, DecodeConfig(engine="ct2", beam=1)).translate(src, beam=1)
    return bleu([h[0].text for h in hyps], ref).score


# --- the loop -----------------------------------------------------------------------------------
def train(run_dir: str | Path, cfg: TrainConfig, model, vocab: Vocab, data: TrainData,
          teacher_fn: TeacherFn | None = None, after_step: Callable[[object], None] | None = None,
          config_text: str = "", progress: bool = True) -> dict:
    """Train `model` into `run_dir`; returns the result dict also written to train_result.json.

    teacher_fn supplies Word-KD targets per batch; after_step(model) runs after every optimizer
    step (pruning masks re-applied there).
    """
    run = Path(run_dir)
    done = run / "train_result.json"
    if done.exists():
        log.info("%s: already trained, skipping", run)
        return json.loads(done.read_text())
    with folder_lock(run, "training run"):
        return _train(run, cfg, model, vocab, data, teacher_fn, after_step, config_text, progress)


def _train(run: Path, cfg: TrainConfig, model, vocab: Vocab, data: TrainData, teacher_fn: TeacherFn | None,
           after_step: Callable[[object], None] | None, config_text: str, progress: bool) -> dict:
    done = run / "train_result.json"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device)
    autocast = bf16_autocast(cfg.bf16, device)
    if cfg.schedule not in SCHEDULES:
        raise SeqkdError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    pad_id = vocab.pad_id

    src_ids, tgt_ids = vocab.encode_src(data.src), vocab.encode_tgt(data.tgt)
    keep = [i for i in range(len(src_ids)) if len(src_ids[i]) <= cfg.max_len and len(tgt_ids[i]) <= cfg.max_len]
    if len(keep) < len(src_ids):
        log.info("skipped %d training pairs longer than %d tokens", len(src_ids) - len(keep), cfg.max_len)
    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    if not src_ids:
        raise SeqkdError("no training pairs left after length filtering")
    val_n = cfg.val_max_sents or len(data.val_src)
    val_src, val_tgt = data.val_src[:val_n], data.val_tgt[:val_n]
    val_src_ids, val_tgt_ids = vocab.encode_src(val_src), vocab.encode_tgt(val_tgt)
    batches = token_batches([len(s) for s in src_ids], [len(t) for t in tgt_ids], cfg.max_tokens)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=1e-9,
                            weight_decay=cfg.weight_decay)
    state = _load_checkpoint(run, model, opt)
    if state is None:
        torch.manual_seed(cfg.seed)
        state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best": None, "best_step": 0,
                 "bad_vals": 0, "tokens": 0, "stopped": ""}
        (run / "metrics.jsonl").unlink(missing_ok=True)
        write_json(run / "train_config.json", asdict(cfg))
        if config_text:
            (run / "seqkd.yaml").write_text(config_text)
    else:
        log.info("%s: resuming from step %d (epoch %d, batch %d)", run, state["step"], state["epoch"], state["batch"])
        if state["stopped"] in ("max_steps", "max_minutes"):  # budgets may have been raised since
            state["stopped"] = ""
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("step", 0) <= state["step"]]
        write_json_lines(run / "metrics.jsonl", rows)

    total_steps = min(cfg.max_steps or math.inf, cfg.max_epochs * len(batches))
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {run.name}", unit="step",
               disable=not progress, dynamic_ncols=True)
    model.train()
    t0 = time.time() - state["elapsed"]
    window = {"loss": 0.0, "nll": 0.0, "kd": 0.0, "tok": 0, "t": time.time()}

    def validate() -> bool:
        """Validate, keep the best model; True when early stopping triggers."""
        vloss = validation_loss(model, val_src_ids, val_tgt_ids, pad_id, cfg.max_tokens, autocast, device)
        row = {"type": "val", "step": state["step"], "epoch": state["epoch"], "val_nll": vloss,
               "val_ppl": math.exp(min(vloss, 50)), "elapsed": time.time() - t0}
        metric = -vloss
        if cfg.val_bleu:
            row["val_bleu"] = _val_bleu(run, model, vocab, val_src, val_tgt)
            metric = row["val_bleu"]
        append_jsonl(run / "metrics.jsonl", row)
        msg = (f"{run.name} step {state['step']} epoch {state['epoch']}: val ppl {row['val_ppl']:.2f}"
               + (f" bleu {row['val_bleu']:.2f}" if cfg.val_bleu else ""))
        if progress:
            bar.write(msg)
        else:
            log.info(msg)
        if state["best"] is None or metric > state["best"]:
            state.update(best=metric, best_step=state["step"], bad_vals=0)
            save_model(model, run, {"seqkd.yaml": config_text} if config_text else None)
            vocab.save_to(run)
        else:
            state["bad_vals"] += 1
        return bool(cfg.patience and state["bad_vals"] >= cfg.patience)

    def out_of_budget() -> str:
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            return "max_steps"
        if cfg.max_minutes and time.time() - t0 >= cfg.max_minutes * 60:
            return "max_minutes"
        return ""

    while state["epoch"] < cfg.max_epochs and not state["stopped"]:
        order = epoch_order(len(batches), cfg.seed, state["epoch"])
        while state["batch"] < len(order):
            if out_of_budget():
                state["stopped"] = out_of_budget()
                break
            idx = batches[order[state["batch"]]]
            b = _to(collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx], pad_id), device)
            teacher = _to(teacher_fn([keep[i] for i in idx], b), device) if teacher_fn else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = training_logits(model, b, pad_id)
            ntok = int(b["labels"].ne(-100).sum())
            loss, logs = compute_loss(logits, b["labels"], cfg.loss, pad_id, teacher)
            opt.zero_grad(set_to_none=True)
            (loss / ntok).backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            state["step"] += 1
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], cfg, total_steps)
            opt.step()
            if after_step:
                after_step(model)
            state["batch"] += 1
            state["tokens"] += ntok
            window["loss"] += loss.item()
            window["nll"] += logs["nll"]
            window["kd"] += logs.get("kd", 0.0)
            window["tok"] += ntok
            bar.update(1)
            if state["step"] % cfg.log_every == 0:
                dt = max(1e-9, time.time() - window["t"])
                row = {"type": "train", "step": state["step"], "epoch": state["epoch"],
                       "loss": window["loss"] / window["tok"], "nll": window["nll"] / window["tok"],
                       "lr": lr_at(state["step"], cfg, total_steps), "tgt_tokens_per_s": window["tok"] / dt,
                       "elapsed": time.time() - t0}
                if cfg.loss.word_kd_alpha > 0:
                    row["kd"] = window["kd"] / window["tok"]
                append_jsonl(run / "metrics.jsonl", row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tgt_tokens_per_s']:.0f}")
                window = {"loss": 0.0, "nll": 0.0, "kd": 0.0, "tok": 0, "t": time.time()}
            end_of_epoch = state["batch"] == len(order)
            if end_of_epoch:
                state["epoch"] += 1
                state["batch"] = 0
            stopped = out_of_budget()
            do_val = (cfg.val_every and state["step"] % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch)
            if do_val or stopped or (end_of_epoch and state["epoch"] >= cfg.max_epochs):
                if validate():
                    stopped = stopped or "early_stopping"
            if stopped:
                state["stopped"] = stopped
            if do_val or stopped or state["step"] % cfg.ckpt_every == 0 or end_of_epoch:
                state["elapsed"] = time.time() - t0
                _save_checkpoint(run, model, opt, state)
            if stopped or end_of_epoch:
                break
    bar.close()
    if state["best"] is None:  # e.g. resumed at the very end: make sure a model exists
        validate()
    result = {"steps": state["step"], "epochs": state["epoch"], "best_step": state["best_step"],
              "best_metric": state["best"], "metric": "val_bleu" if cfg.val_bleu else "-val_nll",
              "stopped": state["stopped"] or "max_epochs", "train_seconds": time.time() - t0,
              "target_tokens": state["tokens"], "bf16": autocast, "device": str(device),
              "params": count_params(model)}
    shutil.rmtree(run / ".val_model", ignore_errors=True)
    write_json(done, result)
    return result


def write_json_lines(path: Path, rows: list[dict]) -> None:
    from seqkd.fsutil import atomic_open

    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
