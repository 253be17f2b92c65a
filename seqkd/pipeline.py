"""`seqkd reproduce`: the paper's grid as cached stages.

Each stage is a folder in the run directory with `stage_hash.txt` (its identity plus its inputs'
identities) written when it starts, `clock.json` (wall time so far, summed over invocations) and
`stage.json` written last. A rerun skips stages whose
`stage.json` matches; a changed setting changes the hash of that stage and of everything after it;
a stage killed half-way resumes inside its folder (training checkpoints, distillation shards); a
training stage whose only change is a larger budget (patience, max_epochs) trains on from its last
checkpoint (`extends`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from seqkd import faults
from seqkd.data import DataConfig, load_pairs
from seqkd.dist import resolve_device
from seqkd.fsutil import SeqkdError, folder_lock, read_json, write_json, write_text
from seqkd.models import ModelConfig
from seqkd.precision import bf16_autocast
from seqkd.train import TrainConfig, TrainData
from seqkd.vocab import VocabConfig

log = logging.getLogger(__name__)
_FIX = "delete it (or its stage folder) and rerun"

# Table 1's student rows, in the paper's order; the second student size gets `ReproduceConfig.small_suffix`.
STUDENTS = ("baseline", "word_kd", "seq_kd", "baseline+seq_inter", "word_kd+seq_inter", "seq_kd+seq_inter",
            "seq_kd+word_kd", "seq_kd+seq_inter+word_kd")


@dataclass
class ReproduceConfig:
    """A preset: the grid's data, sizes, training budgets and distillation settings.

    Every training stage stops on validation BLEU (`patience`) inside its budget (`max_epochs` /
    `max_steps`); the schedule a stage names is the one that runs (train.lr_at).
    """

    preset: str = "custom"
    note: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig("student"))
    student: ModelConfig = field(default_factory=lambda: ModelConfig("student-small"))
    student_small: ModelConfig | None = None  # the second student size (paper: 2x300 beside 2x500); None = skip
    small_suffix: str = "-small"
    seeds: tuple[int, ...] = (1,)  # baseline and seq_kd of the main size are trained with each seed
    fp32_control: bool = False  # also train the main baseline in float32 (`baseline-fp32`): does bf16 cost BLEU?
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    finetune_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=0,
                                                                            schedule="constant", max_epochs=1))
    prune_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, warmup_steps=0,
                                                                         schedule="constant", max_epochs=1))
    seq_kd_beam: int = 5
    seq_inter_k: int = 35
    seq_inter_fraction: float = 1.0
    seq_inter_metric: str = "bleu"
    word_kd_alpha: float = 0.5
    word_kd_topk: int = 8
    # pruning chains: each {scheme, schedule}; every round retrains on Seq-KD data, then
    # fine-tunes on Seq-Inter data (masks kept); sparsity 0 is the control with the same retraining
    prune: list = field(default_factory=lambda: [
        {"scheme": "class-blind", "schedule": [0.0]},
        {"scheme": "class-blind", "schedule": [0.5, 0.8, 0.9]},
        {"scheme": "class-distribution", "schedule": [0.5, 0.8]}])
    # fast students (deep encoder, shallow decoder): each named size trained with Seq-KD, then
    # fine-tuned on Seq-Inter data; `fast` is the fastest student within `fast_max_drop` BLEU of the
    # teacher's beam on validation (greedy BLEU and sentences/s both measured on validation)
    fast_sizes: tuple[str, ...] = ()
    fast_overrides: dict = field(default_factory=dict)  # applied to every fast size (e.g. dropout)
    # the fast students' recipe (None: student_train), for shapes the students' recipe does not train (the deep
    # post-norm encoders 4-1 / 6-1 did not from scratch; grown with `fast_stack_from` they do: RESULTS section 6)
    fast_train: TrainConfig | None = None
    # shallow-to-deep: every other fast size starts from this fast size's trained Seq-KD model, its layers
    # repeated (`shrink.stack`), then trains on the fast recipe (a deep post-norm encoder under one decoder
    # layer does not train from scratch here; grown from a 2+1 model it does: docs/RESULTS.md, section 6)
    fast_stack_from: str = ""
    fast_max_drop: float = 1.0
    shortlist_per_piece: int = 50  # the lexical shortlist (vmap) the fast student is also timed with
    shortlist_frequent: int = 100
    # a student trained from scratch that ends under this fraction of the teacher's validation BLEU
    # has failed to train (a diverged or collapsed run): the stage fails loudly instead of being kept
    min_student_fraction: float = 0.0
    int8_min_ratio: float = 13.0  # int8 candidates: pruned models >= this many x fewer non-zeros than the teacher
    eval_beam: int = 5
    eval_max_sents: int = 0
    latency_sents: int = 100  # per system: the first N test sentences translated one at a time (p50 / p95 ms)
    speed_repeats: int = 3
    tune_decoding: bool = True  # S1 with each model's fastest CTranslate2 settings, chosen on validation
    tune_max_bleu_drop: float = 0.2  # a setting that changes the output (int8) may cost this much val BLEU
    bootstrap_samples: int = 1000
    threads: int = 0


def _h(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Fields that change how fast or how verbosely a stage runs, never what it produces.
COSMETIC = frozenset({"threads", "log_every", "ckpt_every", "device", "progress", "data_dir"})


def identity(obj) -> dict:
    """What of a config dataclass changes a stage's result: fields that differ from their defaults,
    minus cosmetic ones (threads, log_every, checkpoint interval, device, paths).

    Dropping defaults keeps finished stages valid when a later version adds a field whose default
    keeps the old behaviour; a changed value of any field that matters changes the identity.
    """
    out = {}
    for f in fields(obj):
        if f.name in COSMETIC:
            continue
        v = getattr(obj, f.name)
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if is_dataclass(v):
            sub = identity(v)
            if sub:
                out[f.name] = sub
        elif v != default and not (isinstance(v, (tuple, list)) and list(v) == list(default or [])):
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def runs_fp32_control(cfg: ReproduceConfig) -> bool:
    """Whether the grid trains `baseline-fp32`: only where the students train in bf16. On a CPU without
    native bf16, `bf16: auto` already trains them in float32 and the control would repeat the baseline."""
    return cfg.fp32_control and bf16_autocast(cfg.student_train.bf16, resolve_device(cfg.student_train.device))


class StageClock:
    """A stage's wall time summed over invocations: a background tick adds the time since the last one
    to `path` every `every` seconds, so a killed run loses at most that much. Gaps longer than three
    ticks (the process was stopped, e.g. SIGSTOP) count as three ticks, not as work."""

    def __init__(self, path: Path, every: float = 15.0):
        self.path, self.every = path, every
        self.total = read_json(path, ["seconds"], _FIX)["seconds"] if path.exists() else 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        now = time.monotonic()
        self.total += min(now - self.last, 3 * self.every)
        self.last = now
        write_json(self.path, {"seconds": self.total})

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.tick()

    def __enter__(self) -> StageClock:
        self.last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.tick()


class StopAfter(Exception):
    """Raised after the stage named by --stop-after."""


# What `reproduce --plan` says of a stage.
DONE, PARTIAL, CHANGED, NEW, UNKNOWN = "done", "partial", "changed", "to run", "not yet known"
EXTENDS = "extends"  # its training goes on from its last checkpoint under a larger budget


def extends(d: Path, was_hash: Callable[[TrainConfig], str], train: TrainConfig) -> bool:
    """Whether stage folder `d` holds this stage's training under a smaller budget, so that going on from
    its last checkpoint with `train` ends where a fresh run with `train` would.

    `d/stage_hash.txt` must equal `was_hash(train with the recorded patience and max_epochs)` (the
    recorded ones are in `d/train_config.json`); nothing else may differ. Raising `patience` (or
    making it 0, never) only moves the stop. Raising `max_epochs` also needs per-epoch validation
    (`val_every: 0`; else the old last epoch validated off the grid) and a schedule that does not
    depend on the planned length (not `linear`).
    """
    if not all((d / f).exists() for f in ("stage_hash.txt", "train_config.json", "checkpoints/latest.json")):
        return False
    old = read_json(d / "train_config.json", ["patience", "max_epochs"], _FIX)
    p, e = old["patience"], old["max_epochs"]
    if (p, e) == (train.patience, train.max_epochs) or train.max_epochs < e:
        return False
    if train.patience and not (p and train.patience >= p):
        return False
    if train.max_epochs != e and (train.schedule == "linear" or train.val_every):
        return False
    return was_hash(replace(train, patience=p, max_epochs=e)) == (d / "stage_hash.txt").read_text()


class Runner:
    """Runs named stages once; `hashes` chains each stage's identity into its dependants.

    `plan`: run nothing and write nothing; `rows` gets each stage's (name, status, seconds so far), where
    status is DONE (reused as it is), PARTIAL (resumes in its folder), EXTENDS (its training, finished
    or not, goes on from its last checkpoint under a larger patience / max_epochs: `extends`), CHANGED
    (its folder holds another identity's work, which a run would discard), NEW, or UNKNOWN (its identity
    depends on a choice made from stages not yet done, such as the best student).
    """

    def __init__(self, out: Path, progress: bool = True, stop_after: str = "", plan: bool = False):
        self.out, self.progress, self.stop_after, self.plan = out, progress, stop_after, plan
        self.stopped = False
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.ran: list[str] = []
        self.rows: list[tuple[str, str, float]] = []
        self.unknown: set[str] = set()

    def status(self, name: str, h: str, was_hash: Callable[[TrainConfig], str] | None = None,
               train: TrainConfig | None = None) -> tuple[str, float]:
        """(status, clock seconds so far) of stage `name` under identity `h`, from its folder alone
        (`train`, `was_hash`: the stage's one training config and its identity under another config)."""
        d = self.out / name
        if (d / "stage.json").exists():
            m = read_json(d / "stage.json", ["hash", "seconds"], _FIX)
            if m["hash"] == h:
                return DONE, m["seconds"]
        if not d.exists():
            return NEW, 0.0
        seconds = read_json(d / "clock.json", ["seconds"], _FIX)["seconds"] if (d / "clock.json").exists() else 0.0
        same = (d / "stage_hash.txt").exists() and (d / "stage_hash.txt").read_text() == h
        if not same and train is not None and was_hash is not None and extends(d, was_hash, train):
            return EXTENDS, seconds
        return (PARTIAL if same else CHANGED), seconds

    def done(self, names: list[str]) -> bool:
        """Whether every stage of `names` is finished under its current identity (always, outside a plan)."""
        status = {n: s for n, s, _ in self.rows}
        return not self.plan or all(status.get(n) == DONE for n in names)

    def placeholder(self, name: str) -> str:
        """A stand-in for a choice a plan cannot make yet; stages that depend on it plan as UNKNOWN."""
        self.hashes[name] = ""
        self.unknown.add(name)
        return name

    def stage(self, name: str, inputs: list[str], params, fn: Callable[[Path], None],
              train: TrainConfig | None = None) -> Path:
        """Run `fn(folder)` unless done under this identity. `train`: the config of the stage's one training
        run, whose identity is `params["t"]`; given, a larger budget extends the stage instead of discarding it."""
        self.stopped = name == self.stop_after
        ins = [self.hashes[i] for i in inputs]
        h = _h({"params": params, "inputs": ins})
        if train is not None and params.get("t") != identity(train):
            raise ValueError(f"stage {name}: params['t'] is not the identity of its training config")
        d = self.out / name
        if self.plan and self.unknown.intersection(inputs):
            self.hashes[name] = h
            self.unknown.add(name)
            self.rows.append((name, UNKNOWN, 0.0))
            return d
        def was_hash(tc: TrainConfig) -> str:
            return _h({"params": {**params, "t": identity(tc)}, "inputs": ins})

        status, seconds = self.status(name, h, was_hash, train)  # the one decision a plan reports and a run acts on
        if self.plan:
            self.hashes[name] = h
            self.rows.append((name, status, seconds))
            return d
        if status == DONE:
            self.hashes[name], self.seconds[name] = h, seconds
            return d
        if status == CHANGED:
            log.info("stage %s: settings changed, recomputing", name)
            shutil.rmtree(d)
        if status == EXTENDS:  # in this order: a kill between the steps finds the stage extendable or partial
            log.info("stage %s: a larger budget (patience %d, max_epochs %d), going on from its last checkpoint",
                     name, train.patience, train.max_epochs)
            (d / "train_result.json").unlink(missing_ok=True)
            (d / "stage.json").unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        write_text(d / "stage_hash.txt", h)
        log.info("stage %s: running", name)
        with StageClock(d / "clock.json") as clock:
            fn(d)
        self.seconds[name] = clock.total
        write_json(d / "stage.json", {"hash": h, "seconds": self.seconds[name]})
        faults.point("stage_done")
        self.hashes[name] = h
        self.ran.append(name)
        return d


def reproduce(cfg: ReproduceConfig, out: str | Path, progress: bool = True, stop_after: str = "",
              plan: bool = False) -> dict:
    """Run (or resume) the whole grid into `out`; returns results.json's content.

    `stop_after`: end after this stage (e.g. "teacher") without a report. A second `reproduce` on
    the same folder while this one runs is refused (folder lock). `plan`: run and write nothing, take
    no lock (a running grid can be asked), and return {"plan": [(stage, status, seconds so far), ...]}:
    which finished stages a run with this configuration would reuse and which it would recompute.
    """
    out = Path(out)
    if plan:
        return _reproduce(cfg, out, False, "", plan=True)
    with folder_lock(out, "seqkd reproduce"):
        return _reproduce(cfg, out, progress, stop_after)


def check_config(cfg: ReproduceConfig) -> None:
    """Errors a preset can hold that would otherwise surface hours into the grid."""
    from seqkd import stages

    if not cfg.seeds:
        raise SeqkdError("seeds: give at least one seed")
    if not 0.0 <= cfg.min_student_fraction < 1.0:
        raise SeqkdError(f"min_student_fraction must be in [0, 1), got {cfg.min_student_fraction}")
    if cfg.speed_repeats < 1:
        raise SeqkdError(f"speed_repeats must be >= 1, got {cfg.speed_repeats}")
    names = [stages.prune_name(sp, c["scheme"]) for c in cfg.prune for sp in c["schedule"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SeqkdError(f"prune: two chains produce the same stage {', '.join(dup)}; every (sparsity, scheme) "
                         "may appear once")
    if cfg.finetune_train.loss.temperature != cfg.student_train.loss.temperature:
        raise SeqkdError(f"finetune_train.loss.temperature {cfg.finetune_train.loss.temperature} differs from "
                         f"student_train.loss.temperature {cfg.student_train.loss.temperature}: the Word-KD top-k "
                         "caches are built once, at the students' temperature")
    if cfg.fast_stack_from:
        sizes = list(cfg.fast_sizes)
        if cfg.fast_stack_from not in sizes or sizes.index(cfg.fast_stack_from) != 0:
            raise SeqkdError(f"fast_stack_from {cfg.fast_stack_from!r} must be the first of fast_sizes {sizes}: "
                             "the other fast sizes grow from its trained model")
        from seqkd.models import SIZES, check_size

        width = ("d_model", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads")
        for size in sizes:
            check_size(size)
        base = {**SIZES[sizes[0]], **cfg.fast_overrides}
        for size in sizes[1:]:
            dims = {**SIZES[size], **cfg.fast_overrides}
            if [dims[k] for k in width] != [base[k] for k in width] or any(
                    dims[k] < base[k] for k in ("encoder_layers", "decoder_layers")):
                raise SeqkdError(f"fast size {size} cannot grow from {sizes[0]}: it needs the same width "
                                 f"({', '.join(width)}) and at least as many layers")
    for tc, name in ((cfg.prune_train, "prune_train"),):
        if tc.max_epochs == 0 and tc.max_steps == 0:
            raise SeqkdError(f"{name}: the grid retrains every pruning round; give max_epochs or max_steps")


def _reproduce(cfg: ReproduceConfig, out: Path, progress: bool, stop_after: str, plan: bool = False) -> dict:
    import torch

    from seqkd import stages

    check_config(cfg)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    if not plan:
        write_json(out / "config.json", asdict(cfg))
    train_src, train_tgt = load_pairs(cfg.data, "train")
    val = load_pairs(cfg.data, "val")
    test_src, test_ref = load_pairs(cfg.data, "test")
    if cfg.eval_max_sents:
        test_src, test_ref = test_src[: cfg.eval_max_sents], test_ref[: cfg.eval_max_sents]
    refs = TrainData(train_src, train_tgt, *val)
    r = Runner(out, progress, stop_after, plan)
    # the data's identity is its content (after cleaning), never the path it was read from
    data_id = {"pairs": len(train_src), "sha": _h([train_src, train_tgt, *val])}
    S = stages.Stages(cfg, r, refs, progress)

    def run_stage(name, inputs, params, fn, train: TrainConfig | None = None) -> None:
        r.stage(name, inputs, params, fn, train)
        if r.stopped:
            raise StopAfter(name)

    try:
        run_stage("vocab", [], {"vocab": identity(cfg.vocab), **data_id}, S.vocab)
        run_stage("teacher", ["vocab"], {"m": identity(cfg.teacher), "t": identity(cfg.teacher_train)}, S.teacher,
                  cfg.teacher_train)
        run_stage("data_seq_kd", ["teacher"], {"beam": cfg.seq_kd_beam}, S.seq_kd_data)
        run_stage("data_seq_inter", ["teacher"], {"k": cfg.seq_inter_k, "f": cfg.seq_inter_fraction,
                                                  "m": cfg.seq_inter_metric}, S.seq_inter_data)
        temp = cfg.student_train.loss.temperature  # check_config: the fine-tuning uses the same
        k = {"k": cfg.word_kd_topk, **({"T": temp} if temp != 1.0 else {})}  # T = 1: the identity of old runs
        ft = {"t": identity(cfg.finetune_train)}
        kd = {"a": cfg.word_kd_alpha, "k": cfg.word_kd_topk}  # only in the identity of stages that use Word-KD
        sizes = [("", cfg.student)] + ([(cfg.small_suffix, cfg.student_small)] if cfg.student_small else [])
        fp32_control = runs_fp32_control(cfg)
        if cfg.fp32_control and not fp32_control:
            log.info("baseline-fp32 skipped: the students already train in float32 here (train.bf16=%s)",
                     cfg.student_train.bf16)

        # The order puts each claim's first evidence early, since a many-hour grid can lose its folder before it
        # ends: the fast students (S1), the main size's rows at seed 1 (Q1, Q2's best student), the pruning chains
        # (Z1); then the teacher's fine-tuning, the other seeds (Q1's spread), the float32 control, the second
        # size, and the choices and measurements that need every model. The order changes no stage's identity.
        fast = []
        for size in cfg.fast_sizes:
            model = ModelConfig(size, dict(cfg.fast_overrides))
            ftc = cfg.fast_train or cfg.student_train
            st = {"m": identity(model), "t": identity(ftc), "seed": cfg.seeds[0]}
            parent = f"fast_{cfg.fast_stack_from}_seq_kd"
            if cfg.fast_stack_from and size != cfg.fast_stack_from:
                run_stage(f"fast_{size}_seq_kd", ["vocab", "data_seq_kd", parent], {**st, "stack_from": parent},
                          S.stacked_student(model, parent, "data_seq_kd", ftc), ftc)
            else:
                run_stage(f"fast_{size}_seq_kd", ["vocab", "data_seq_kd"], st,
                          S.student(model, cfg.seeds[0], "data_seq_kd", train_cfg=ftc), ftc)
            run_stage(f"fast_{size}", [f"fast_{size}_seq_kd", "data_seq_inter"], {"t": identity(cfg.finetune_train)},
                      S.finetune(f"fast_{size}_seq_kd"), cfg.finetune_train)
            fast.append(f"fast_{size}")
        if fast:
            run_stage("shortlist", ["vocab", "data_seq_kd"], {"per_piece": cfg.shortlist_per_piece,
                                                             "frequent": cfg.shortlist_frequent}, S.shortlist)

        def pair(suffix: str, model: ModelConfig, seeds: tuple[int, ...]) -> None:
            """baseline and seq_kd of one student size, with each of `seeds` (the first seed's have no tag)."""
            sd = {"m": identity(model), "t": identity(cfg.student_train)}
            for seed in seeds:
                tag = suffix + ("" if seed == cfg.seeds[0] else f"-seed{seed}")
                run_stage(f"baseline{tag}", ["vocab"], {**sd, "seed": seed}, S.student(model, seed, "refs"),
                          cfg.student_train)
                run_stage(f"seq_kd{tag}", ["vocab", "data_seq_kd"], {**sd, "seed": seed},
                          S.student(model, seed, "data_seq_kd"), cfg.student_train)

        def kd_rows(suffix: str, model: ModelConfig) -> None:
            """The rest of one size's Table 1 rows: Word-KD from scratch, then the four Seq-Inter fine-tunings."""
            wk = {"m": identity(model), "t": identity(cfg.student_train), **kd, "seed": cfg.seeds[0]}
            run_stage(f"word_kd{suffix}", ["vocab", "data_topk"], wk, S.student(model, cfg.seeds[0], "refs", True),
                      cfg.student_train)
            run_stage(f"seq_kd+word_kd{suffix}", ["vocab", "data_seq_kd", "data_topk_seq_kd"], wk,
                      S.student(model, cfg.seeds[0], "data_seq_kd", True), cfg.student_train)
            for base, word in (("baseline", False), ("word_kd", True), ("seq_kd", False), ("seq_kd", True)):
                name = f"{base}+seq_inter" + ("+word_kd" if word and base == "seq_kd" else "") + suffix
                deps = [base + suffix, "data_seq_inter"] + (["data_topk_seq_inter"] if word else [])
                run_stage(name, deps, {**ft, **(kd if word else {})}, S.finetune(base + suffix, word),
                          cfg.finetune_train)

        pair("", cfg.student, cfg.seeds[:1])
        run_stage("data_topk", ["teacher"], k, S.topk("refs"))
        run_stage("data_topk_seq_kd", ["teacher", "data_seq_kd"], k, S.topk("data_seq_kd"))
        run_stage("data_topk_seq_inter", ["teacher", "data_seq_inter"], k, S.topk("data_seq_inter"))
        kd_rows("", cfg.student)
        best = S.best_student(list(STUDENTS)) if r.done(list(STUDENTS)) else r.placeholder("(best student)")
        if best not in r.unknown:
            log.info("best student by validation BLEU: %s", best)
        pruned = []
        for chain in cfg.prune:
            prev = best
            for sp in chain["schedule"]:
                name = stages.prune_name(sp, chain["scheme"])
                run_stage(name, [prev, "data_seq_kd", "data_seq_inter"],
                          {"sparsity": sp, "scheme": chain["scheme"], "from": prev, "t": identity(cfg.prune_train),
                           "ft": identity(cfg.finetune_train)}, S.prune(prev, sp, chain["scheme"]))
                pruned.append(name)
                prev = name
        run_stage("teacher+seq_inter", ["teacher", "data_seq_inter"], {"t": identity(cfg.finetune_train)},
                  S.finetune("teacher"), cfg.finetune_train)
        pair("", cfg.student, cfg.seeds[1:])
        if fp32_control:
            fp32 = replace(cfg.student_train, bf16="off")
            run_stage("baseline-fp32", ["vocab"], {"m": identity(cfg.student), "seed": cfg.seeds[0],
                                                   "t": identity(fp32)},
                      S.student(cfg.student, cfg.seeds[0], "refs", bf16="off"), fp32)
        for suffix, model in sizes[1:]:
            pair(suffix, model, cfg.seeds[:1])
            kd_rows(suffix, model)
        students = [s + suffix for suffix, _ in sizes for s in STUDENTS]
        if fast:
            run_stage("fast", ["teacher", *fast, *students], {"max_drop": cfg.fast_max_drop, "beam": cfg.eval_beam,
                                                              "repeats": cfg.speed_repeats,
                                                              "n": cfg.eval_max_sents},
                      S.fast_pick(fast + students))
        pick = S.int8_pick(pruned, best) if r.done(["teacher", best, *pruned]) else r.placeholder("(int8 pick)")
        run_stage("best_int8", [pick], {"from": pick}, S.export(pick))
        seed_runs = [f"{s}-seed{x}" for s in ("baseline", "seq_kd") for x in cfg.seeds[1:]]
        seed_runs += ["baseline-fp32"] if fp32_control else []
        systems = ["teacher", "teacher+seq_inter", *students, *seed_runs, *fast, *(["fast"] if fast else []),
                   *pruned, "best_int8"]
        test_id = {"beam": cfg.eval_beam, "n": len(test_src), "test_sha": _h([test_src, test_ref]),
                   **({"latency": cfg.latency_sents} if cfg.latency_sents else {})}
        run_stage("eval", systems, test_id,
                  S.evaluate(systems, test_src, test_ref))
        run_stage("speed", ["eval", *(["shortlist"] if fast else [])],
                  {"repeats": cfg.speed_repeats, "best": best, "fast": bool(fast),
                   **({"tune": cfg.tune_max_bleu_drop} if cfg.tune_decoding else {})},
                  S.speed(best, test_src, test_ref, with_fast=bool(fast)))
    except StopAfter as e:
        log.info("stopped after stage %s (--stop-after)", e)
        return {}
    if plan:
        return {"plan": r.rows}
    if stop_after:
        log.warning("--stop-after %s: no stage of that name in this grid; it ran to the end", stop_after)
    from seqkd.report import write_report

    return write_report(out, cfg, r, systems, best, time.time() - t0, test_ref)
