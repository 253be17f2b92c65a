"""The one training loop: every model (teacher, baseline, Word-KD, Seq-KD, Seq-Inter fine-tuning,
pruned retraining) is trained here; methods differ only in data, loss weights and hooks.

A run folder holds the best model as a Hugging Face folder (config.json, model.safetensors,
tokenizer files), `metrics.jsonl`, `checkpoints/` for resuming, and `train_result.json`, written
last. Rerunning on the same folder resumes from the latest checkpoint (model, optimizer, schedule
step, data position, RNG) and ends where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from seqkd import checkpoint, dist, stream, validation
from seqkd.fsutil import SeqkdError, append_jsonl, folder_lock, read_json, read_jsonl, write_json
from seqkd.losses import LossConfig, compute_loss
from seqkd.models import count_params, save_model, training_logits
from seqkd.precision import bf16_autocast
from seqkd.validation import to_device
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
    device: str = "auto"  # auto (cuda when available) | cpu | cuda (an error without CUDA)
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
    """Training pairs, in memory (src, tgt) or streamed from disk (`pairs`: called for each pass),
    and the validation set (in memory)."""

    src: list[str] | None
    tgt: list[str] | None
    val_src: list[str]
    val_tgt: list[str]
    pairs: Callable[[], Iterable[tuple[str, str]]] | None = None

    def stream(self) -> Callable[[], Iterable[tuple[str, str]]]:
        if self.pairs is not None:
            return self.pairs
        if self.src is None or self.tgt is None or len(self.src) != len(self.tgt):
            raise SeqkdError("training data: source and target must both be given, with equal line counts")
        return lambda: zip(self.src, self.tgt)


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


# --- the loop -----------------------------------------------------------------------------------
class _Forward(torch.nn.Module):
    """`training_logits` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, **batch) -> torch.Tensor:
        return training_logits(self.model, batch, self.pad_id)


@contextlib.contextmanager
def ctrl_c_checkpoints() -> Iterator[dict]:
    """Catch the first Ctrl-C (SIGINT) as a request: the loop finishes its step, saves a checkpoint and
    stops (KeyboardInterrupt, exit 130); a second Ctrl-C stops at once. Yields {"hit": bool}."""
    hit = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return
    old = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        hit["hit"] = True
        signal.signal(signal.SIGINT, old)

    signal.signal(signal.SIGINT, handler)
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, old)


def _on_main(d: dist.Dist, fn):
    """Run `fn` on rank 0 only; a SeqkdError there is raised on every rank (none is left waiting)."""
    err, out = None, None
    if d.main:
        try:
            out = fn()
        except SeqkdError as e:
            err = str(e)
    err = dist.broadcast(d, err)
    if err:
        raise SeqkdError(err)
    return out


def patience_step(best: float | None, bad: int, metric: float, patience: int) -> tuple[bool, int, bool]:
    """Early stopping at one validation: a new best is strictly greater than `best` (None: none yet).
    Returns (a new best?, the validations in a row without one, stop now? -- `patience` 0 never stops)."""
    improved = best is None or metric > best
    bad = 0 if improved else bad + 1
    return improved, bad, bool(patience and bad >= patience)


@contextlib.contextmanager
def run_lock(run: str | Path, d: dist.Dist) -> Iterator[None]:
    """Hold the training folder's lock (`fsutil.folder_lock`); under torchrun rank 0 takes it and a refusal is
    raised on every rank."""
    if d.world == 1:
        with folder_lock(run, "training run"):
            yield
        return
    lock = folder_lock(run, "training run")
    _on_main(d, lock.__enter__)
    try:
        yield
    finally:
        if d.main:
            lock.__exit__(None, None, None)


def train(run_dir: str | Path, cfg: TrainConfig, model, vocab: Vocab, data: TrainData,
          teacher_fn: TeacherFn | None = None, after_step: Callable[[object], None] | None = None,
          config_text: str = "", progress: bool = True, locked: bool = False) -> dict:
    """Train `model` into `run_dir`; returns the result dict also written to train_result.json.

    teacher_fn supplies Word-KD targets per batch (example indices, batch); after_step(model) runs
    after every optimizer step (pruning masks re-applied there). Under torchrun every rank calls
    this with the same arguments; rank 0 writes the folder. `locked`: the caller already holds
    `run_lock(run_dir, ...)` (e.g. since before it wrote the vocabulary there).
    """
    run = Path(run_dir)
    done = run / "train_result.json"
    if done.exists():
        log.info("%s: already trained, skipping", run)
        return read_json(done, fix="delete it to retrain")
    d = dist.setup(cfg.device)
    args = (run, cfg, model, vocab, data, teacher_fn, after_step, config_text, progress, d)
    with contextlib.nullcontext() if locked else run_lock(run, d):
        if d.world > 1:  # under torchrun, Ctrl-C reaches every rank at its own step: they resume from a checkpoint
            return _train(*args, {"hit": False})
        with ctrl_c_checkpoints() as ctrl_c:
            result = _train(*args, ctrl_c)
    if ctrl_c["hit"]:  # pressed after the last step: the run is complete; stop what called it
        raise KeyboardInterrupt
    return result


def _train(run: Path, cfg: TrainConfig, model, vocab: Vocab, data: TrainData, teacher_fn: TeacherFn | None,
           after_step: Callable[[object], None] | None, config_text: str, progress: bool, d: dist.Dist,
           ctrl_c: dict) -> dict:
    done = run / "train_result.json"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = d.device
    model.to(device)
    autocast = bf16_autocast(cfg.bf16, device)
    if cfg.schedule not in SCHEDULES:
        raise SeqkdError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    pad_id = vocab.pad_id
    run.mkdir(parents=True, exist_ok=True)
    _on_main(d, lambda: stream.prepare(run / "tokens", data.stream(), vocab, cfg.max_tokens, cfg.max_len))
    st = stream.prepare(run / "tokens", None, vocab, cfg.max_tokens, cfg.max_len, build=False)
    val_n = cfg.val_max_sents or len(data.val_src)
    val_src, val_tgt = data.val_src[:val_n], data.val_tgt[:val_n]
    val_src_ids, val_tgt_ids = vocab.encode_src(val_src), vocab.encode_tgt(val_tgt)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=1e-9,
                            weight_decay=cfg.weight_decay)
    state = checkpoint.load(run, model, opt, d.rank, d.world, cfg.seed, device)
    if state is None:
        torch.manual_seed(cfg.seed if d.main else cfg.seed * 1_000_003 + d.rank)
        state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best": None, "best_step": 0,
                 "bad_vals": 0, "tokens": 0, "stopped": ""}
        if d.main:
            (run / "metrics.jsonl").unlink(missing_ok=True)
            if config_text:
                (run / "seqkd.yaml").write_text(config_text)
    else:
        log.info("%s: resuming from step %d (epoch %d, batch %d)", run, state["step"], state["epoch"], state["batch"])
        # budgets may have been raised since: the loop re-checks max_steps / max_minutes / max_epochs, and a
        # patience the bad validations no longer reach lets it go on
        if state["stopped"] in ("max_steps", "max_minutes") or (
                state["stopped"] == "early_stopping" and not (cfg.patience and state["bad_vals"] >= cfg.patience)):
            state["stopped"] = ""
        if d.main:
            rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("step", 0) <= state["step"]]
            write_json_lines(run / "metrics.jsonl", rows)
    first_step = state["step"]
    if d.main:
        write_json(run / "train_config.json", asdict(cfg))  # the budget in force (pipeline.extends reads it)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(_Forward(model, pad_id), device_ids=[device] if device.type == "cuda" else None)

        def forward(b):
            return net(**{k: v for k, v in b.items() if k != "labels"})
    else:
        def forward(b):
            return training_logits(model, b, pad_id)

    total_steps = min(cfg.max_steps or math.inf, cfg.max_epochs * len(st))
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {run.name}", unit="step",
               disable=not progress or not d.main, dynamic_ncols=True)
    model.train()
    t0 = time.time() - state["elapsed"]
    def new_window() -> dict:
        """Sums over the steps since the last train row (`ckpt_s`: seconds spent writing checkpoints)."""
        return {"loss": 0.0, "nll": 0.0, "kd": 0.0, "tok": 0, "t": time.time(), "ckpt_s": 0.0}

    window = new_window()

    def validate() -> bool:
        """Validate on rank 0, keep the best model; True (on every rank) when early stopping triggers."""
        stop = False
        if d.main:
            vloss = validation.validation_loss(model, val_src_ids, val_tgt_ids, pad_id, cfg.max_tokens, autocast,
                                               device)
            row = {"type": "val", "step": state["step"], "epoch": state["epoch"], "val_nll": vloss,
                   "val_ppl": math.exp(min(vloss, 50)), "elapsed": time.time() - t0}
            metric = -vloss
            if cfg.val_bleu:
                row["val_bleu"] = validation.val_bleu(run, model, vocab, val_src, val_tgt)
                metric = row["val_bleu"]
            row["rss_mb"] = round(validation.release_memory(), 1)  # after trimming the heap
            append_jsonl(run / "metrics.jsonl", row)
            msg = (f"{run.name} step {state['step']} epoch {state['epoch']}: val ppl {row['val_ppl']:.2f}"
                   + (f" bleu {row['val_bleu']:.2f}" if cfg.val_bleu else ""))
            if progress:
                bar.write(msg)
            else:
                log.info(msg)
            improved, state["bad_vals"], stop = patience_step(state["best"], state["bad_vals"], metric, cfg.patience)
            if improved:
                state.update(best=metric, best_step=state["step"])
                save_model(model, run, {"seqkd.yaml": config_text} if config_text else None)
                vocab.save_to(run)
        shared = dist.broadcast(d, {k: state[k] for k in ("best", "best_step", "bad_vals")} | {"stop": stop})
        state.update({k: shared[k] for k in ("best", "best_step", "bad_vals")})
        return shared["stop"]

    def out_of_budget() -> str:
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            return "max_steps"
        if cfg.max_minutes and time.time() - t0 >= cfg.max_minutes * 60:
            return "max_minutes"
        return ""

    def budget() -> str:  # the clock is rank 0's, so that all ranks stop at the same step
        return dist.broadcast(d, out_of_budget()) if d.world > 1 and cfg.max_minutes else out_of_budget()

    def step(batch: int) -> None:
        """One optimizer step on this rank's rows of global batch `batch` (gradients summed over ranks)."""
        rows, weight = st.rows(batch, d.rank, d.world), 1
        if len(rows) == 0:  # fewer rows than ranks: a zero-weight pass keeps the collectives in step
            rows, weight = st.rows(batch)[:1], 0
        b = to_device(st.collate(rows, pad_id), device)
        teacher = to_device(teacher_fn(rows.tolist(), b), device) if teacher_fn else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = forward(b)
        ntok = int(b["labels"].ne(-100).sum()) * weight
        loss, logs = compute_loss(logits, b["labels"], cfg.loss, pad_id, teacher)
        opt.zero_grad(set_to_none=True)
        if d.world == 1:
            global_ntok = ntok
            (loss / ntok).backward()
        else:  # DDP averages over ranks: scale so the result is the sum over all tokens / all tokens
            global_ntok = int(dist.all_sum(d, [ntok])[0])
            (loss * (weight * d.world) / global_ntok).backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        state["step"] += 1
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"], cfg, total_steps)
        opt.step()
        if after_step:
            after_step(model)
        state["tokens"] += global_ntok
        window["loss"] += loss.item() * weight
        window["nll"] += logs["nll"] * weight
        window["kd"] += logs.get("kd", 0.0) * weight
        window["tok"] += ntok

    def log_window() -> None:
        nonlocal window
        loss, nll, kd, tok = dist.all_sum(d, [window["loss"], window["nll"], window["kd"], window["tok"]])
        dt = max(1e-9, time.time() - window["t"])
        row = {"type": "train", "step": state["step"], "epoch": state["epoch"], "loss": loss / tok,
               "nll": nll / tok, "lr": lr_at(state["step"], cfg, total_steps), "tgt_tokens_per_s": tok / dt,
               "elapsed": time.time() - t0, "ckpt_s": round(window["ckpt_s"], 3)}
        if cfg.loss.word_kd_alpha > 0:
            row["kd"] = kd / tok
        row["rss_mb"] = round(validation.release_memory(), 1)  # trimmed every window: the heap stays small
        if d.main:
            append_jsonl(run / "metrics.jsonl", row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tgt_tokens_per_s']:.0f}")
        window = new_window()

    while state["epoch"] < cfg.max_epochs and not state["stopped"]:
        order = st.epoch(cfg.seed, state["epoch"])
        while state["batch"] < len(order):
            over = budget()
            if over:
                state["stopped"] = over
                break
            step(order[state["batch"]])
            state["batch"] += 1
            bar.update(1)
            if state["step"] % cfg.log_every == 0:
                log_window()
            end_of_epoch = state["batch"] == len(order)
            if end_of_epoch:
                state["epoch"] += 1
                state["batch"] = 0
            stopped = budget()
            do_val = (cfg.val_every and state["step"] % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch)
            if do_val or stopped or (end_of_epoch and state["epoch"] >= cfg.max_epochs):
                if validate():
                    stopped = stopped or "early_stopping"
            if stopped:
                state["stopped"] = stopped
            if do_val or stopped or state["step"] % cfg.ckpt_every == 0 or end_of_epoch or ctrl_c["hit"]:
                state["elapsed"] = time.time() - t0
                rng = dist.gather_rng(d)
                if d.main:
                    t_ckpt = time.time()
                    checkpoint.save(run, model, opt, state, rng)
                    window["ckpt_s"] += time.time() - t_ckpt  # reported in the next train row
            if ctrl_c["hit"]:
                bar.close()
                log.warning("%s: interrupted at step %d; checkpoint saved, rerun the same command to resume",
                            run, state["step"])
                raise KeyboardInterrupt
            if stopped or end_of_epoch:
                break
    bar.close()
    if state["best"] is None:  # e.g. resumed at the very end: make sure a model exists
        validate()
    log.info("%s: %d steps in this run (steps %d to %d)", run, state["step"] - first_step, first_step,
             state["step"])
    result = {"steps": state["step"], "epochs": state["epoch"], "best_step": state["best_step"],
              "best_metric": state["best"], "metric": "val_bleu" if cfg.val_bleu else "-val_nll",
              "stopped": state["stopped"] or "max_epochs", "train_seconds": time.time() - t0,
              "target_tokens": state["tokens"], "bf16": autocast, "device": str(device), "world_size": d.world,
              "params": count_params(model)}
    if d.main:
        validation.cleanup(run)
        shutil.rmtree(run / "tokens", ignore_errors=True)
        write_json(done, result)
    dist.barrier(d)
    return result


def write_json_lines(path: Path, rows: list[dict]) -> None:
    from seqkd.fsutil import atomic_open

    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
