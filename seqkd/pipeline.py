"""`seqkd reproduce`: the paper's grid as cached stages.

Each stage is a folder in the run directory with `stage_hash.txt` (its config plus its inputs'
hashes) written when it starts and `stage.json` written last. A rerun skips stages whose
`stage.json` matches; a changed setting changes the hash of that stage and of everything after it;
a stage killed half-way resumes inside its folder (training checkpoints, distillation shards).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seqkd.data import DataConfig, load_pairs
from seqkd.fsutil import write_json
from seqkd.models import ModelConfig
from seqkd.train import TrainConfig, TrainData
from seqkd.vocab import VocabConfig

log = logging.getLogger(__name__)

STUDENTS = ("baseline", "word_kd", "seq_kd", "baseline+seq_inter", "seq_kd+seq_inter", "seq_kd+seq_inter+word_kd")


@dataclass
class ReproduceConfig:
    """A preset: the grid's data, sizes, training budgets and distillation settings."""

    preset: str = "custom"
    note: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig("student"))
    student: ModelConfig = field(default_factory=lambda: ModelConfig("student-small"))
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    finetune_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=1, max_epochs=1))
    prune_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, warmup_steps=1, max_epochs=1))
    seq_kd_beam: int = 5
    seq_inter_k: int = 35
    seq_inter_fraction: float = 1.0
    seq_inter_metric: str = "bleu"
    word_kd_alpha: float = 0.5
    word_kd_topk: int = 8
    prune: list = field(default_factory=lambda: [{"sparsity": 0.5}, {"sparsity": 0.8}, {"sparsity": 0.9}])
    prune_scheme: str = "class-blind"
    eval_beam: int = 5
    eval_max_sents: int = 0
    bootstrap_samples: int = 1000
    threads: int = 0


def _h(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runner:
    """Runs named stages once; `hashes` chains each stage's identity into its dependants."""

    def __init__(self, out: Path, progress: bool = True):
        self.out, self.progress = out, progress
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.ran: list[str] = []

    def stage(self, name: str, inputs: list[str], params, fn: Callable[[Path], None]) -> Path:
        h = _h({"params": params, "inputs": [self.hashes[i] for i in inputs]})
        d = self.out / name
        marker = d / "stage.json"
        if marker.exists():
            m = json.loads(marker.read_text())
            if m["hash"] == h:
                self.hashes[name], self.seconds[name] = h, m["seconds"]
                return d
        if d.exists() and (not (d / "stage_hash.txt").exists() or (d / "stage_hash.txt").read_text() != h):
            log.info("stage %s: settings changed, recomputing", name)
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stage_hash.txt").write_text(h)
        log.info("stage %s: running", name)
        t = time.time()
        fn(d)
        self.seconds[name] = time.time() - t
        write_json(marker, {"hash": h, "seconds": self.seconds[name]})
        self.hashes[name] = h
        self.ran.append(name)
        return d


def reproduce(cfg: ReproduceConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the whole grid into `out`; returns results.json's content."""
    import torch

    from seqkd import stages

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    write_json(out / "config.json", asdict(cfg))
    train_src, train_tgt = load_pairs(cfg.data, "train")
    val = load_pairs(cfg.data, "val")
    test_src, test_ref = load_pairs(cfg.data, "test")
    if cfg.eval_max_sents:
        test_src, test_ref = test_src[: cfg.eval_max_sents], test_ref[: cfg.eval_max_sents]
    refs = TrainData(train_src, train_tgt, *val)
    r = Runner(out, progress)
    data_id = {"data": asdict(cfg.data), "pairs": len(train_src), "sha": _h([train_src, train_tgt, *val])}
    S = stages.Stages(cfg, r, refs, progress)

    r.stage("vocab", [], {"vocab": asdict(cfg.vocab), **data_id}, S.vocab)
    r.stage("teacher", ["vocab"], {"m": asdict(cfg.teacher), "t": asdict(cfg.teacher_train)}, S.teacher)
    st = {"m": asdict(cfg.student), "t": asdict(cfg.student_train)}
    r.stage("baseline", ["vocab"], st, S.baseline)
    r.stage("data_seq_kd", ["teacher"], {"beam": cfg.seq_kd_beam}, S.seq_kd_data)
    r.stage("seq_kd", ["vocab", "data_seq_kd"], st, S.seq_kd)
    r.stage("data_topk", ["teacher"], {"k": cfg.word_kd_topk}, S.topk_refs)
    r.stage("word_kd", ["vocab", "data_topk"], {**st, "a": cfg.word_kd_alpha}, S.word_kd)
    r.stage("data_seq_inter", ["teacher"], {"k": cfg.seq_inter_k, "f": cfg.seq_inter_fraction,
                                            "m": cfg.seq_inter_metric}, S.seq_inter_data)
    ft = {"t": asdict(cfg.finetune_train)}
    r.stage("baseline+seq_inter", ["baseline", "data_seq_inter"], ft, S.finetune("baseline"))
    r.stage("seq_kd+seq_inter", ["seq_kd", "data_seq_inter"], ft, S.finetune("seq_kd"))
    r.stage("data_topk_seq_inter", ["teacher", "data_seq_inter"], {"k": cfg.word_kd_topk}, S.topk_seq_inter)
    r.stage("seq_kd+seq_inter+word_kd", ["seq_kd", "data_seq_inter", "data_topk_seq_inter"],
            {**ft, "a": cfg.word_kd_alpha}, S.finetune("seq_kd", word_kd=True))
    r.stage("teacher+seq_inter", ["teacher", "data_seq_inter"], ft, S.finetune("teacher"))

    best = S.best_student()
    log.info("best student by validation BLEU: %s", best)
    pruned = []
    for p in cfg.prune:
        name = stages.prune_name(p, cfg.prune_scheme)
        r.stage(name, [best, "data_seq_kd"], {"p": p, "scheme": cfg.prune_scheme, "best": best,
                                              "t": asdict(cfg.prune_train)}, S.prune(best, p))
        pruned.append(name)
    r.stage("best_int8", [best], {"best": best}, S.export(best))

    systems = ["teacher", *STUDENTS, "teacher+seq_inter", *pruned, "best_int8"]
    r.stage("eval", systems, {"beam": cfg.eval_beam, "n": len(test_src), "threads": cfg.threads},
            S.evaluate(systems, test_src, test_ref))
    from seqkd.report import write_report

    return write_report(out, cfg, r, systems, best, time.time() - t0, test_ref)
