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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from seqkd.data import stream
from seqkd.data.batching import IGNORE
from seqkd.data.vocab import Vocab
from seqkd.models.marian import count_params, save_model, training_logits
from seqkd.training import checkpoint, dist, validation
from seqkd.training.dist import to_device
from seqkd.training.losses import LossConfig, compute_loss
from seqkd.training.precision import bf16_autocast, check_rounding, rounded
from seqkd.util import memory
from seqkd.util.fsutil import SeqkdError, append_jsonl, atomic_open, folder_lock, read_json, read_jsonl, write_json

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
    round_to: str = ""  # "float16": validate and save the weights rounded to float16 values (`precision.rounded`)
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
            return Trainer(*args, {"hit": False}).fit()
        with ctrl_c_checkpoints() as ctrl_c:
            result = Trainer(*args, ctrl_c).fit()
    if ctrl_c["hit"]:  # pressed after the last step: the run is complete; stop what called it
        raise KeyboardInterrupt
    return result


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint's state.json holds. The field names, in this order, are its keys
    (`to_dict` / `from_dict` convert at that boundary), so checkpoints of earlier versions resume."""

    step: int = 0  # optimizer steps taken; the schedule's 1-based step of the last one
    epoch: int = 0  # epochs finished
    batch: int = 0  # position in this epoch's batch order
    elapsed: float = 0.0  # training seconds, across resumes
    best: float | None = None  # the best validation metric (higher is better); None before the first validation
    best_step: int = 0  # the step of that best (the model in the run folder)
    bad_vals: int = 0  # validations in a row without a new best
    tokens: int = 0  # target tokens trained on, all ranks together
    stopped: str = ""  # "" (going on) | max_steps | max_minutes | early_stopping

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        """The state in `checkpoint.load`'s dict."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass
class _Window:
    """Sums over this rank's steps since the last train row (`ckpt_s`: seconds spent writing checkpoints)."""

    loss: float = 0.0  # training loss, summed over target tokens
    nll: float = 0.0  # its NLL part
    kd: float = 0.0  # its Word-KD part
    tok: int = 0  # target tokens
    t: float = field(default_factory=time.time)  # when the window began
    ckpt_s: float = 0.0


class Trainer:
    """One training run of `model` into the folder `run` (see `train`); `fit` runs it. One method per job:
    `step`, `log_window`, `validate`, `save_checkpoint`, the stop rule (`stop_rule`) and the budget (`budget`).

    Under torchrun every rank builds one with the same arguments; rank 0 writes the folder, and every decision to
    stop (budget, early stopping) is rank 0's, broadcast, so that all ranks stop at the same step.
    """

    def __init__(self, run: Path, cfg: TrainConfig, model: torch.nn.Module, vocab: Vocab, data: TrainData,
                 teacher_fn: TeacherFn | None, after_step: Callable[[object], None] | None, config_text: str,
                 progress: bool, d: dist.Dist, ctrl_c: dict[str, bool]):
        self.run, self.cfg, self.model, self.vocab, self.d = run, cfg, model, vocab, d
        self.teacher_fn, self.after_step, self.config_text = teacher_fn, after_step, config_text
        self.progress, self.ctrl_c = progress, ctrl_c
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device: torch.device = d.device
        model.to(self.device)
        self.autocast: bool = bf16_autocast(cfg.bf16, self.device)
        if cfg.schedule not in SCHEDULES:
            raise SeqkdError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
        check_rounding(cfg.round_to)
        self.pad_id: int = vocab.pad_id
        run.mkdir(parents=True, exist_ok=True)
        self.st: stream.Stream = self._open_data(data)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=1e-9,
                                     weight_decay=cfg.weight_decay)
        self.state: TrainState = self._restore()
        self.first_step: int = self.state.step
        if d.main:
            write_json(run / "train_config.json", asdict(cfg))  # the budget in force (pipeline.extends reads it)
        self.net: torch.nn.Module | None = self._wrap_ddp()
        self.total_steps: float = min(cfg.max_steps or math.inf, cfg.max_epochs * len(self.st))
        self.bar = tqdm(total=self.total_steps, initial=self.state.step, desc=f"train {run.name}", unit="step",
                        disable=not progress or not d.main, dynamic_ncols=True)
        model.train()
        self.t0: float = time.time() - self.state.elapsed  # training time counts across resumes
        self.window = _Window()

    # --- setting up -----------------------------------------------------------------------------------------
    def _open_data(self, data: TrainData) -> stream.Stream:
        """The training pairs' token data (rank 0 builds run/tokens, the others open it) and batches; the
        validation set (`val_max_sents` of it), as text and encoded."""
        cfg, vocab, tokens = self.cfg, self.vocab, self.run / "tokens"
        _on_main(self.d, lambda: stream.prepare(tokens, data.stream(), vocab, cfg.max_tokens, cfg.max_len))
        st = stream.prepare(tokens, None, vocab, cfg.max_tokens, cfg.max_len, build=False)
        val_n = cfg.val_max_sents or len(data.val_src)
        self.val_src, self.val_tgt = data.val_src[:val_n], data.val_tgt[:val_n]
        self.val_src_ids, self.val_tgt_ids = vocab.encode_src(self.val_src), vocab.encode_tgt(self.val_tgt)
        return st

    def _restore(self) -> TrainState:
        """The latest checkpoint's state (model, optimizer and RNG restored from it; metrics.jsonl cut back to its
        step), or a fresh state (RNG seeded, the metrics of an earlier start removed)."""
        run, cfg, d = self.run, self.cfg, self.d
        saved = checkpoint.load(run, self.model, self.opt, d.rank, d.world, cfg.seed, self.device)
        if saved is None:
            torch.manual_seed(cfg.seed if d.main else cfg.seed * 1_000_003 + d.rank)
            if d.main:
                (run / "metrics.jsonl").unlink(missing_ok=True)
                if self.config_text:
                    (run / "seqkd.yaml").write_text(self.config_text)
            return TrainState()
        state = TrainState.from_dict(saved)
        log.info("%s: resuming from step %d (epoch %d, batch %d)", run, state.step, state.epoch, state.batch)
        # budgets may have been raised since: the loop re-checks max_steps / max_minutes / max_epochs, and a
        # patience the bad validations no longer reach lets it go on
        if state.stopped in ("max_steps", "max_minutes") or (
                state.stopped == "early_stopping" and not (cfg.patience and state.bad_vals >= cfg.patience)):
            state.stopped = ""
        if d.main:
            rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("step", 0) <= state.step]
            write_json_lines(run / "metrics.jsonl", rows)
        return state

    def _wrap_ddp(self) -> torch.nn.Module | None:
        """Under torchrun, the forward pass wrapped in DistributedDataParallel (which starts every rank from rank
        0's weights); None in one process."""
        if self.d.world == 1:
            return None
        from torch.nn.parallel import DistributedDataParallel

        dev = self.device
        return DistributedDataParallel(_Forward(self.model, self.pad_id),
                                       device_ids=[dev] if dev.type == "cuda" else None)

    # --- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train epoch by epoch until `max_epochs` or a stop; the result dict, also written to train_result.json."""
        while self.state.epoch < self.cfg.max_epochs and not self.state.stopped:
            self._epoch()
        return self._finish()

    def _epoch(self) -> None:
        """Train on the current epoch's batches from `state.batch` until the epoch ends or training stops."""
        state, cfg = self.state, self.cfg
        order = self.st.epoch(cfg.seed, state.epoch)
        while state.batch < len(order):
            over = self.budget()
            if over:
                state.stopped = over
                return
            self.step(order[state.batch])
            state.batch += 1
            self.bar.update(1)
            if state.step % cfg.log_every == 0:
                self.log_window()
            end_of_epoch = state.batch == len(order)
            if end_of_epoch:
                state.epoch += 1
                state.batch = 0
            if self._after_step(end_of_epoch) or end_of_epoch:
                return

    def _after_step(self, end_of_epoch: bool) -> bool:
        """Validation, the stop rule, a checkpoint when one is due, and a pending Ctrl-C (a checkpoint, then
        KeyboardInterrupt), after a step; True when training stops."""
        state, cfg = self.state, self.cfg
        do_val = bool((cfg.val_every and state.step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch))
        stopped = self.stop_rule(do_val, end_of_epoch)
        if do_val or stopped or state.step % cfg.ckpt_every == 0 or end_of_epoch or self.ctrl_c["hit"]:
            self.save_checkpoint()
        if self.ctrl_c["hit"]:
            self.bar.close()
            log.warning("%s: interrupted at step %d; checkpoint saved, rerun the same command to resume",
                        self.run, state.step)
            raise KeyboardInterrupt
        return bool(stopped)

    def step(self, batch: int) -> None:
        """One optimizer step on this rank's rows of global batch `batch` (gradients summed over ranks).

        The batch holds input_ids / attention_mask (B, S) and decoder_input_ids / labels (B, T); the student's
        logits are (B, T, V - 1) (`training_logits`: no `<pad>` column); `teacher_fn` gives full teacher logits
        (B, T, V) or a top-k pair (probs (B, T, k), ids (B, T, k)), or there is no teacher.
        """
        cfg, st, d, dev = self.cfg, self.st, self.d, self.device
        rows, weight = st.rows(batch, d.rank, d.world), 1
        if len(rows) == 0:  # fewer rows than ranks: a zero-weight pass keeps the collectives in step
            rows, weight = st.rows(batch)[:1], 0
        b = to_device(st.collate(rows, self.pad_id), dev)
        teacher = to_device(self.teacher_fn(rows.tolist(), b), dev) if self.teacher_fn else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self._forward(b)
        ntok = int(b["labels"].ne(IGNORE).sum()) * weight
        loss, logs = compute_loss(logits, b["labels"], cfg.loss, self.pad_id, teacher)
        global_ntok = self._backward(loss, ntok, weight)
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
        self.state.step += 1
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.state.step, cfg, self.total_steps)
        self.opt.step()
        if self.after_step:
            self.after_step(self.model)
        self.state.tokens += global_ntok
        w = self.window
        w.loss += loss.item() * weight
        w.nll += logs["nll"] * weight
        w.kd += logs.get("kd", 0.0) * weight
        w.tok += ntok

    def _forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, T, V - 1) of batch `b`: input_ids / attention_mask (B, S), decoder_input_ids (B, T)."""
        if self.net is None:
            return training_logits(self.model, b, self.pad_id)
        return self.net(**{k: v for k, v in b.items() if k != "labels"})

    def _backward(self, loss: torch.Tensor, ntok: int, weight: int) -> int:
        """Gradients of `loss` (a scalar: the sum over this rank's `ntok` target tokens) divided by the global
        batch's target tokens, which it returns."""
        self.opt.zero_grad(set_to_none=True)
        if self.d.world == 1:
            (loss / ntok).backward()
            return ntok
        # DDP averages over ranks: scale so the result is the sum over all tokens / all tokens
        global_ntok = int(dist.all_sum(self.d, [ntok])[0])
        (loss * (weight * self.d.world) / global_ntok).backward()
        return global_ntok

    def log_window(self) -> None:
        """A train row in metrics.jsonl: the window's loss per target token over all ranks; then a new window."""
        d, w, state = self.d, self.window, self.state
        loss, nll, kd, tok = dist.all_sum(d, [w.loss, w.nll, w.kd, w.tok])
        dt = max(1e-9, time.time() - w.t)
        row = {"type": "train", "step": state.step, "epoch": state.epoch, "loss": loss / tok,
               "nll": nll / tok, "lr": lr_at(state.step, self.cfg, self.total_steps), "tgt_tokens_per_s": tok / dt,
               "elapsed": time.time() - self.t0, "ckpt_s": round(w.ckpt_s, 3)}
        if self.cfg.loss.word_kd_alpha > 0:
            row["kd"] = kd / tok
        row["rss_mb"] = round(memory.release_memory(), 1)  # trimmed every window: the heap stays small
        if d.main:
            append_jsonl(self.run / "metrics.jsonl", row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tgt_tokens_per_s']:.0f}")
        self.window = _Window()

    # --- validation, stopping, checkpoints ------------------------------------------------------------------
    def validate(self) -> bool:
        """Validate on rank 0 and keep the best model in the run folder; True (on every rank) when early stopping
        triggers."""
        state, stop = self.state, False
        if self.d.main:
            with rounded(self.model, self.cfg.round_to):  # the weights validated are the weights saved
                metric = self._val_metric()
                improved, state.bad_vals, stop = patience_step(state.best, state.bad_vals, metric, self.cfg.patience)
                if improved:
                    state.best, state.best_step = metric, state.step
                    save_model(self.model, self.run, {"seqkd.yaml": self.config_text} if self.config_text else None)
                    self.vocab.save_to(self.run)
        shared = dist.broadcast(self.d, {"best": state.best, "best_step": state.best_step,
                                         "bad_vals": state.bad_vals, "stop": stop})
        state.best, state.best_step, state.bad_vals = shared["best"], shared["best_step"], shared["bad_vals"]
        return shared["stop"]

    def _val_metric(self) -> float:
        """The current weights on the validation set (rank 0): a val row in metrics.jsonl, a line in the log, and
        the metric model selection maximises (val_bleu, else -val_nll)."""
        cfg, state, run = self.cfg, self.state, self.run
        vloss = validation.validation_loss(self.model, self.val_src_ids, self.val_tgt_ids, self.pad_id,
                                           cfg.max_tokens, self.autocast, self.device)
        row = {"type": "val", "step": state.step, "epoch": state.epoch, "val_nll": vloss,
               "val_ppl": math.exp(min(vloss, 50)), "elapsed": time.time() - self.t0}
        metric = -vloss
        if cfg.val_bleu:
            row["val_bleu"] = validation.val_bleu(run, self.model, self.vocab, self.val_src, self.val_tgt)
            metric = row["val_bleu"]
        row["rss_mb"] = round(memory.release_memory(), 1)  # after trimming the heap
        append_jsonl(run / "metrics.jsonl", row)
        msg = (f"{run.name} step {state.step} epoch {state.epoch}: val ppl {row['val_ppl']:.2f}"
               + (f" bleu {row['val_bleu']:.2f}" if cfg.val_bleu else ""))
        if self.progress:
            self.bar.write(msg)
        else:
            log.info(msg)
        return metric

    def stop_rule(self, do_val: bool, end_of_epoch: bool) -> str:
        """After a step: the budget, and a validation when due (`do_val`), when stopping, or after the last epoch;
        the reason to stop (recorded in the state), or "" to go on."""
        stopped = self.budget()
        if do_val or stopped or (end_of_epoch and self.state.epoch >= self.cfg.max_epochs):
            if self.validate():
                stopped = stopped or "early_stopping"
        if stopped:
            self.state.stopped = stopped
        return stopped

    def out_of_budget(self) -> str:
        """This rank's verdict: "max_steps" or "max_minutes" when that budget is spent, else ""."""
        if self.cfg.max_steps and self.state.step >= self.cfg.max_steps:
            return "max_steps"
        if self.cfg.max_minutes and time.time() - self.t0 >= self.cfg.max_minutes * 60:
            return "max_minutes"
        return ""

    def budget(self) -> str:
        """`out_of_budget`, on every rank; the clock is rank 0's, so that all ranks stop at the same step."""
        if self.d.world > 1 and self.cfg.max_minutes:
            return dist.broadcast(self.d, self.out_of_budget())
        return self.out_of_budget()

    def save_checkpoint(self) -> None:
        """A resumable checkpoint (rank 0 writes every rank's RNG); its time goes into the next train row."""
        self.state.elapsed = time.time() - self.t0
        rng = dist.gather_rng(self.d)
        if self.d.main:
            t = time.time()
            checkpoint.save(self.run, self.model, self.opt, self.state.to_dict(), rng)
            self.window.ckpt_s += time.time() - t

    def _finish(self) -> dict:
        """After the last step: make sure a model exists, clean up, write train_result.json (last) and return it."""
        state, d, run = self.state, self.d, self.run
        self.bar.close()
        if state.best is None:  # e.g. resumed at the very end: make sure a model exists
            self.validate()
        log.info("%s: %d steps in this run (steps %d to %d)", run, state.step - self.first_step, self.first_step,
                 state.step)
        result = {"steps": state.step, "epochs": state.epoch, "best_step": state.best_step,
                  "best_metric": state.best, "metric": "val_bleu" if self.cfg.val_bleu else "-val_nll",
                  "stopped": state.stopped or "max_epochs", "train_seconds": time.time() - self.t0,
                  "target_tokens": state.tokens, "bf16": self.autocast, "device": str(self.device),
                  "world_size": d.world, "params": count_params(self.model)}
        if d.main:
            validation.cleanup(run)
            shutil.rmtree(run / "tokens", ignore_errors=True)
            write_json(run / "train_result.json", result)
        dist.barrier(d)
        return result


def write_json_lines(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
