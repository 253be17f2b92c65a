"""`seqkd reproduce`: the paper's grid, declared in `graph`, run stage by stage by `grid` (each stage once, in
its own folder: `runner`), kept in a run archive (`archive`), reported by `report`."""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from seqkd.compress.prune import SCHEMES
from seqkd.config import apply_overrides, from_dict, load_yaml
from seqkd.data.load import DataConfig, load_pairs
from seqkd.data.vocab import VocabConfig
from seqkd.models.marian import SIZES, ModelConfig, check_size
from seqkd.reproduce import graph
from seqkd.reproduce.graph import GraphInput, prune_name, stable_hash
from seqkd.reproduce.grid import Grid, GridOptions, TimeLimitReached
from seqkd.reproduce.report import Z1_RATIO, write_report
from seqkd.reproduce.runner import Runner, StopAfter
from seqkd.reproduce.stages import Stages
from seqkd.training.dist import resolve_device
from seqkd.training.precision import bf16_autocast
from seqkd.training.trainer import TrainConfig, TrainData
from seqkd.util.fsutil import SeqkdError, folder_lock, write_json

log = logging.getLogger(__name__)


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
    int8_min_ratio: float = Z1_RATIO  # int8 candidates: pruned models >= this many x fewer non-zeros than the teacher
    eval_beam: int = 5
    eval_max_sents: int = 0
    latency_sents: int = 100  # per system: the first N test sentences translated one at a time (p50 / p95 ms)
    speed_repeats: int = 3
    tune_decoding: bool = True  # S1 with each model's fastest CTranslate2 settings, chosen on validation
    tune_max_bleu_drop: float = 0.2  # a setting that changes the output (int8) may cost this much val BLEU
    tune_max_sents: int = 0  # validation sentences the tuning decodes (0: eval_max_sents, or all)
    bootstrap_samples: int = 1000
    threads: int = 0
    jobs: int = 1  # stages run side by side (`--jobs`), each with threads / jobs threads; changes no result
    # `--time-limit` estimates where this machine has no clock of a stage yet: minutes per stage name or kind
    # (`graph.KEEP`'s kinds) on the machine described by `estimate_machine`, scaled by `estimate_gflops` over
    # this machine's measured speed (`estimate.machine_gflops`)
    estimates: dict = field(default_factory=dict)
    estimate_machine: str = ""
    estimate_gflops: float = 0.0


def runs_fp32_control(cfg: ReproduceConfig) -> bool:
    """Whether the grid trains `baseline-fp32`: only where the students train in bf16. On a CPU without
    native bf16, `bf16: auto` already trains them in float32 and the control would repeat the baseline."""
    return cfg.fp32_control and bf16_autocast(cfg.student_train.bf16, resolve_device(cfg.student_train.device))




def check_config(cfg: ReproduceConfig) -> None:
    """Errors a preset can hold that would otherwise surface hours into the grid."""
    check_names(cfg)
    if not cfg.seeds:
        raise SeqkdError("seeds: give at least one seed")
    if not 0.0 <= cfg.min_student_fraction < 1.0:
        raise SeqkdError(f"min_student_fraction must be in [0, 1), got {cfg.min_student_fraction}")
    if cfg.speed_repeats < 1:
        raise SeqkdError(f"speed_repeats must be >= 1, got {cfg.speed_repeats}")
    names = [prune_name(sp, c["scheme"]) for c in cfg.prune for sp in c["schedule"]]
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




_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_names(cfg: ReproduceConfig) -> None:
    """Every name a config puts into a stage folder's name (prune schemes, fast sizes, the small suffix) is a
    known value without path separators, and every prune entry is {scheme, schedule of fractions in [0, 1)}:
    checked before any work, not hours into the grid."""
    if cfg.small_suffix and not _NAME.match(cfg.small_suffix.lstrip("-")):
        raise SeqkdError(f"small_suffix {cfg.small_suffix!r}: letters, digits and _ . + - only")
    for size in cfg.fast_sizes:
        check_size(size)
    if not isinstance(cfg.prune, list):
        raise SeqkdError(f"prune: a list of {{scheme, schedule}} entries, got {cfg.prune!r}")
    for i, c in enumerate(cfg.prune):
        if not isinstance(c, dict) or set(c) != {"scheme", "schedule"}:
            raise SeqkdError(f"prune[{i}]: give exactly scheme and schedule, got {c!r}")
        if c["scheme"] not in SCHEMES:
            raise SeqkdError(f"prune[{i}].scheme {c['scheme']!r}: unknown; known: {', '.join(SCHEMES)}")
        sched = c["schedule"]
        if not isinstance(sched, list) or not sched or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in sched):
            raise SeqkdError(f"prune[{i}].schedule {sched!r}: a list of sparsities in [0, 1)")


def reproduce(cfg: ReproduceConfig, out: str | Path, progress: bool = True, stop_after: str = "",
              plan: bool = False, opts: GridOptions | None = None) -> dict:
    """Run (or resume) the whole grid into `out`; returns results.json's content.

    `stop_after`: end after this stage (e.g. "teacher") without a report, returning {}. A second `reproduce`
    on the same folder while this one runs is refused (folder lock). `plan`: run and write nothing, take no
    lock (a running grid can be asked), and return {"plan": [(stage, status, seconds so far), ...]}.
    `opts`: the run archive, time limit and jobs; at the time limit it returns {"time_limit": {remaining,
    seconds, unknown}}.
    """
    out, opts = Path(out), opts or GridOptions()
    check_config(cfg)
    if plan:
        return _reproduce(cfg, out, False, "", opts, plan=True)
    created = not out.exists()
    try:
        with folder_lock(out, "seqkd reproduce"):
            return _reproduce(cfg, out, progress, stop_after, opts)
    except BaseException:
        if created and out.exists() and {p.name for p in out.iterdir()} <= {".lock"}:
            shutil.rmtree(out)  # failed before any stage began (bad data, a bad --tgt): leave nothing behind
        raise


def grid_for(cfg: ReproduceConfig, train_src, train_tgt, val, test) -> list[graph.Stage]:
    """The grid's stage declarations for `cfg` and this data (its content is its identity, never its path)."""
    data_id = {"pairs": len(train_src), "sha": stable_hash([train_src, train_tgt, *val])}
    test_id = {"beam": cfg.eval_beam, "n": len(test[0]), "test_sha": stable_hash(list(test)),
               **({"latency": cfg.latency_sents} if cfg.latency_sents else {})}
    return graph.build(cfg, GraphInput(data_id, test_id, runs_fp32_control(cfg)))


def _reproduce(cfg: ReproduceConfig, out: Path, progress: bool, stop_after: str, opts: GridOptions,
               plan: bool = False) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    train_src, train_tgt = load_pairs(cfg.data, "train")
    val = load_pairs(cfg.data, "val")
    test_src, test_ref = load_pairs(cfg.data, "test")
    if cfg.eval_max_sents:
        test_src, test_ref = test_src[: cfg.eval_max_sents], test_ref[: cfg.eval_max_sents]
    stages = grid_for(cfg, train_src, train_tgt, val, (test_src, test_ref))
    r = Runner(out, progress, stop_after, plan)
    S = Stages(cfg, r, TrainData(train_src, train_tgt, *val), progress, (test_src, test_ref))
    g = Grid(stages, cfg, r, S, opts)
    if plan:
        return {"plan": g.plan()}
    write_json(out / "config.json", asdict(cfg))
    if cfg.fp32_control and not runs_fp32_control(cfg):
        log.info("baseline-fp32 skipped: the students already train in float32 here (train.bf16=%s)",
                 cfg.student_train.bf16)
    try:
        g.run()
    except StopAfter as e:
        log.info("stopped after stage %s (--stop-after)", e)
        return {}
    except TimeLimitReached as e:
        return {"time_limit": {"remaining": e.remaining, "seconds": e.seconds, "unknown": e.unknown}}
    if stop_after:
        log.warning("--stop-after %s: no stage of that name in this grid; it ran to the end", stop_after)

    return write_report(out, cfg, r, stages, time.time() - t0, test_ref)


def load_preset(name: str):
    """A preset by name (seqkd/reproduce/presets/NAME.yaml) or a path to a YAML file the user copied and edited."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else Path(__file__).parent / "presets" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in (Path(__file__).parent / "presets").glob("*.yaml"))
        raise SeqkdError(f"unknown preset {name!r} (known: {known}; or give a .yaml path)")
    return from_dict(ReproduceConfig, apply_overrides(load_yaml(path), []))
