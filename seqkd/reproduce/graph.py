"""The `reproduce` grid, declared once: every stage's name, kind, inputs, identity and body.

Order (the declaration order is a topological order that puts each claim's first evidence early),
identity (`stage_hashes`), `--plan`, the archive (what a stage kind keeps: `KEEP`), restoring, the time
limit and the parallel scheduler all read these declarations; nothing parses a stage name back.

Choices made from finished stages are stages too (`kind="choice"`: `best`, `fast`, `int8_pick`): their
body writes `pick.json` naming the chosen stage, their identity is their candidates' identities, so
every identity in the grid is known before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace

from seqkd.models.marian import ModelConfig
from seqkd.training.trainer import TrainConfig

# Table 1's student rows, in the paper's order; the second student size gets `ReproduceConfig.small_suffix`.
STUDENTS = ("baseline", "word_kd", "seq_kd", "baseline+seq_inter", "word_kd+seq_inter", "seq_kd+seq_inter",
            "seq_kd+word_kd", "seq_kd+seq_inter+word_kd")

# What the run archive keeps of each stage kind beyond its small records (JSON, curves, evaluation):
#   "always": its payload (vocabulary, distilled data: small, and costly to remake);
#   "model": its weights while a stage still to run needs them, and for good when a user needs them
#            (the teacher, the chosen best / fast / int8 models);
#   "never": nothing heavy; rebuilt from the teacher when a stage still to run needs it (top-k caches, shortlist);
#   "record": it has nothing heavy (choices, evaluations, the speed measurement).
# Kinds whose folder stands for another stage's model: a choice's pick, an export's source.
STANDS_FOR = ("choice", "export")

KEEP = {"vocab": "always", "distill": "always", "train": "model", "prune": "model", "export": "model",
        "topk": "never", "shortlist": "never", "choice": "record", "eval": "record", "speed": "record"}


def stable_hash(obj) -> str:
    """The one identity hash: sha256 of the canonical JSON of `obj`, 16 hex digits."""
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


@dataclass(frozen=True)
class Stage:
    """One stage of the grid.

    - `body`: the `stages.Stages` method that runs it and that method's arguments (plain values, so that a
      worker process can run the stage); with arguments the method makes the body, without it is the body;
    - `train`: the config of its one training run, whose identity is `params["t"]` (a larger budget then
      extends the stage instead of discarding it);
    - `group`: where the translation system it produces sits in the report (one of `GROUPS`; empty: it
      produces none); each system gets an evaluation stage; `scheme`: a pruned system's scheme;
    - `reads`: the inputs whose payload it reads, where it needs only the others' records (a choice made on
      validation BLEU); None: all of them;
    - `solo`: it runs alone with all the grid's threads, also under `--jobs N` (the teacher and its data, which
      every later stage waits for; the speed measurements, which a stage beside them would slow); every other
      stage gets threads / jobs under `--jobs N`. Which a stage gets is
      fixed by its declaration, never by what else happens to be running, so its result does not depend on the
      schedule.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict
    body: tuple[str, tuple] = ("", ())
    train: TrainConfig | None = None
    group: str = ""
    scheme: str = ""
    reads: tuple[str, ...] | None = None  # the inputs whose payload (weights, data) it reads; None: all of them
    solo: bool = False

    @property
    def system(self) -> bool:
        return bool(self.group)

    def fn(self, stages):
        """The callable `fn(folder)` that runs this stage, from a `Stages` object."""
        method, args = self.body
        return getattr(stages, method)(*args) if args else getattr(stages, method)


# The report's groups of systems, in its order.
GROUPS = ("teacher", "student", "seed", "fast", "pruned", "int8")


def eval_name(system: str) -> str:
    return f"eval_{system}"


def prune_name(sparsity: float, scheme: str, default_scheme: str = "class-blind") -> str:
    name = f"pruned_{round(sparsity * 100)}"
    return name if scheme == default_scheme or sparsity == 0 else f"{name}_{scheme}"


@dataclass
class GraphInput:
    """What the graph needs besides the preset: the data's identity and the test set's."""

    data_id: dict
    test_id: dict
    fp32_control: bool = False


def build(cfg, gi: GraphInput) -> list[Stage]:
    """Every stage of the grid for preset `cfg` (a `pipeline.ReproduceConfig`), in the order they run: the
    stages that carry the claims first (a grid runs in pieces): the teacher and its data, the main size's
    rows and seeds (Q1, Q2), the fast students (S1) and the pruning chains (Z1), then the second size."""
    g: list[Stage] = []
    g += _data_stages(cfg, gi)
    g.append(Stage("teacher+seq_inter", "train", ("teacher", "data_seq_inter"), {"t": identity(cfg.finetune_train)},
                   ("finetune", ("teacher",)), cfg.finetune_train, group="teacher"))
    sizes = [("", cfg.student)] + ([(cfg.small_suffix, cfg.student_small)] if cfg.student_small else [])
    g += _pair(cfg, "", cfg.student, cfg.seeds[:1])
    g += _topk_stages(cfg)
    g += _kd_rows(cfg, "", cfg.student)
    g.append(Stage("best", "choice", tuple(STUDENTS), {}, ("best_student", (list(STUDENTS),)), reads=()))
    g += _pair(cfg, "", cfg.student, cfg.seeds[1:])
    if gi.fp32_control:
        fp32 = replace(cfg.student_train, bf16="off")
        g.append(Stage("baseline-fp32", "train", ("vocab",),
                       {"m": identity(cfg.student), "seed": cfg.seeds[0], "t": identity(fp32)},
                       ("student", (cfg.student, cfg.seeds[0], "refs", False, "off")), fp32, group="seed"))
    fast = _fast_stages(cfg, g)
    if fast:  # chosen as soon as its candidates are there: the others' weights then leave the archive
        g.append(Stage("fast", "choice", ("teacher", *fast, "best"),
                       {"max_drop": cfg.fast_max_drop, "beam": cfg.eval_beam, "repeats": cfg.speed_repeats,
                        "n": cfg.eval_max_sents}, ("fast_pick", ([*fast, "best"],)), solo=True))
    pruned = _prune_stages(cfg, g)
    g.append(Stage("int8_pick", "choice", ("teacher", "best", *pruned), {"min_ratio": cfg.int8_min_ratio},
                   ("int8_pick", (pruned,)), reads=("teacher",)))
    g.append(Stage("best_int8", "export", ("int8_pick",), {}, ("export", ("int8_pick",)), group="int8"))
    for suffix, model in sizes[1:]:
        g += _pair(cfg, suffix, model, cfg.seeds[:1])
        g += _kd_rows(cfg, suffix, model)
    g = _with_evaluations(g, gi)
    g.append(Stage("speed", "speed", ("teacher", "best", *(["fast", "shortlist"] if fast else [])),
                   {"repeats": cfg.speed_repeats, "fast": bool(fast), **gi.test_id,
                    **({"tune": cfg.tune_max_bleu_drop} if cfg.tune_decoding else {}),
                    **({"tune_n": cfg.tune_max_sents} if cfg.tune_decoding and cfg.tune_max_sents else {})},
                   ("speed", (bool(fast),)), solo=True))
    return g


def _data_stages(cfg, gi: GraphInput) -> list[Stage]:
    return [
        Stage("vocab", "vocab", (), {"vocab": identity(cfg.vocab), **gi.data_id}, ("vocab", ())),
        Stage("teacher", "train", ("vocab",), {"m": identity(cfg.teacher), "t": identity(cfg.teacher_train)},
              ("teacher", ()), cfg.teacher_train, group="teacher", solo=True),
        Stage("data_seq_kd", "distill", ("teacher",), {"beam": cfg.seq_kd_beam}, ("seq_kd_data", ()), solo=True),
        Stage("data_seq_inter", "distill", ("teacher",),
              {"k": cfg.seq_inter_k, "f": cfg.seq_inter_fraction, "m": cfg.seq_inter_metric},
              ("seq_inter_data", ()), solo=True),
    ]


def _fast_stages(cfg, g: list[Stage]) -> list[str]:
    """The deep-encoder / shallow-decoder students (Seq-KD, then Seq-Inter fine-tuning) and the shortlist;
    appended to `g`; returns the fine-tuned ones' names."""
    fast = []
    ftc = cfg.fast_train or cfg.student_train
    for size in cfg.fast_sizes:
        model = ModelConfig(size, dict(cfg.fast_overrides))
        st = {"m": identity(model), "t": identity(ftc), "seed": cfg.seeds[0]}
        parent = f"fast_{cfg.fast_stack_from}_seq_kd"
        if cfg.fast_stack_from and size != cfg.fast_stack_from:
            g.append(Stage(f"fast_{size}_seq_kd", "train", ("vocab", "data_seq_kd", parent),
                           {**st, "stack_from": parent}, ("stacked_student", (model, parent, "data_seq_kd", ftc)),
                           ftc))
        else:
            g.append(Stage(f"fast_{size}_seq_kd", "train", ("vocab", "data_seq_kd"), st,
                           ("student", (model, cfg.seeds[0], "data_seq_kd", False, None, ftc)), ftc))
        g.append(Stage(f"fast_{size}", "train", (f"fast_{size}_seq_kd", "data_seq_inter"),
                       {"t": identity(cfg.finetune_train)}, ("finetune", (f"fast_{size}_seq_kd",)),
                       cfg.finetune_train, group="fast"))
        fast.append(f"fast_{size}")
    if fast:
        g.append(Stage("shortlist", "shortlist", ("vocab", "data_seq_kd"),
                       {"per_piece": cfg.shortlist_per_piece, "frequent": cfg.shortlist_frequent}, ("shortlist", ())))
    return fast


def _pair(cfg, suffix: str, model: ModelConfig, seeds: tuple[int, ...]) -> list[Stage]:
    """baseline and seq_kd of one student size, with each of `seeds` (the first seed's have no tag)."""
    sd = {"m": identity(model), "t": identity(cfg.student_train)}
    out = []
    for seed in seeds:
        tag = suffix + ("" if seed == cfg.seeds[0] else f"-seed{seed}")
        group = "student" if seed == cfg.seeds[0] else "seed"
        out.append(Stage(f"baseline{tag}", "train", ("vocab",), {**sd, "seed": seed},
                         ("student", (model, seed, "refs")), cfg.student_train, group=group))
        out.append(Stage(f"seq_kd{tag}", "train", ("vocab", "data_seq_kd"), {**sd, "seed": seed},
                         ("student", (model, seed, "data_seq_kd")), cfg.student_train, group=group))
    return out


def _topk_stages(cfg) -> list[Stage]:
    temp = cfg.student_train.loss.temperature  # check_config: the fine-tuning uses the same
    k = {"k": cfg.word_kd_topk, **({"T": temp} if temp != 1.0 else {})}  # T = 1: the identity of old runs
    return [Stage("data_topk", "topk", ("teacher",), k, ("topk", ("refs",))),
            Stage("data_topk_seq_kd", "topk", ("teacher", "data_seq_kd"), k, ("topk", ("data_seq_kd",))),
            Stage("data_topk_seq_inter", "topk", ("teacher", "data_seq_inter"), k, ("topk", ("data_seq_inter",)))]


def _kd_rows(cfg, suffix: str, model: ModelConfig) -> list[Stage]:
    """The rest of one size's Table 1 rows: Word-KD from scratch, then the four Seq-Inter fine-tunings."""
    kd = {"a": cfg.word_kd_alpha, "k": cfg.word_kd_topk}  # only in the identity of stages that use Word-KD
    wk = {"m": identity(model), "t": identity(cfg.student_train), **kd, "seed": cfg.seeds[0]}
    out = [Stage(f"word_kd{suffix}", "train", ("vocab", "data_topk"), wk,
                 ("student", (model, cfg.seeds[0], "refs", True)), cfg.student_train, group="student"),
           Stage(f"seq_kd+word_kd{suffix}", "train", ("vocab", "data_seq_kd", "data_topk_seq_kd"), wk,
                 ("student", (model, cfg.seeds[0], "data_seq_kd", True)), cfg.student_train, group="student")]
    for base, word in (("baseline", False), ("word_kd", True), ("seq_kd", False), ("seq_kd", True)):
        name = f"{base}+seq_inter" + ("+word_kd" if word and base == "seq_kd" else "") + suffix
        deps = (base + suffix, "data_seq_inter") + (("data_topk_seq_inter",) if word else ())
        out.append(Stage(name, "train", deps, {"t": identity(cfg.finetune_train), **(kd if word else {})},
                         ("finetune", (base + suffix, word)), cfg.finetune_train, group="student"))
    return out


def _prune_stages(cfg, g: list[Stage]) -> list[str]:
    """The pruning chains from the best student (the `best` choice); appended to `g`; returns their names."""
    pruned = []
    for chain in cfg.prune:
        prev = "best"
        for sp in chain["schedule"]:
            name = prune_name(sp, chain["scheme"])
            g.append(Stage(name, "prune", (prev, "data_seq_kd", "data_seq_inter"),
                           {"sparsity": sp, "scheme": chain["scheme"], "from": prev, "t": identity(cfg.prune_train),
                            "ft": identity(cfg.finetune_train)}, ("prune", (prev, sp, chain["scheme"])),
                           group="pruned", scheme=chain["scheme"]))
            pruned.append(name)
            prev = name
    return pruned


def _with_evaluations(g: list[Stage], gi: GraphInput) -> list[Stage]:
    """`g` with each system's evaluation stage (test BLEU greedy / beam, chrF, PPL, p(t = y_hat), speed, latency)
    right after the system: its weights are then needed no longer than that, and leave the archive early."""
    out = []
    for s in g:
        out.append(s)
        if s.system:
            out.append(Stage(eval_name(s.name), "eval", (s.name,), gi.test_id, ("evaluate", (s.name,))))
    return out


def stage_hashes(graph: list[Stage]) -> dict[str, str]:
    """Every stage's identity: its params and its inputs' identities, hashed."""
    h: dict[str, str] = {}
    for s in graph:
        h[s.name] = stable_hash({"params": s.params, "inputs": [h[i] for i in s.inputs]})
    return h


def systems(graph: list[Stage]) -> list[Stage]:
    """The stages that produce a translation system, in the report's order (`GROUPS`, then the grid's)."""
    return sorted((s for s in graph if s.system), key=lambda s: GROUPS.index(s.group))
