"""What each `seqkd reproduce` stage does, composed from the library's own functions."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import yaml

from seqkd.corpus import read_parallel
from seqkd.fsutil import write_json
from seqkd.train import TrainData, train

log = logging.getLogger(__name__)


def prune_name(p: dict, default_scheme: str) -> str:
    scheme = p.get("scheme", default_scheme)
    name = f"pruned_{round(p['sparsity'] * 100)}"
    return name if scheme == default_scheme else f"{name}_{scheme}"


class Stages:
    """Stage bodies: each takes its folder and fills it (resumably: the library functions resume)."""

    def __init__(self, cfg, runner, refs: TrainData, progress: bool):
        self.cfg, self.r, self.refs, self.progress = cfg, runner, refs, progress

    def _dir(self, name: str) -> Path:
        return self.r.out / name

    @property
    def vocab_obj(self):
        from seqkd.vocab import Vocab

        return Vocab(self._dir("vocab"))

    def _data(self, folder: str) -> TrainData:
        src, tgt = read_parallel(self._dir(folder) / "train.src", self._dir(folder) / "train.tgt")
        return TrainData(src, tgt, self.refs.val_src, self.refs.val_tgt)

    def _train(self, d: Path, model_cfg, train_cfg, data: TrainData, init_from: str | None = None,
               teacher_fn=None) -> None:
        from seqkd.models import build_model, load_model

        v = self.vocab_obj
        if init_from:
            model = load_model(self._dir(init_from))
            train_cfg = replace(train_cfg, init_from=str(self._dir(init_from)))
        else:
            model = build_model(model_cfg, v.size, v.pad_id, v.eos_id, seed=train_cfg.seed)
        from seqkd.config import to_dict

        text = yaml.safe_dump({"model": to_dict(model_cfg) if model_cfg else None, "train": to_dict(train_cfg),
                               "preset": self.cfg.preset}, sort_keys=False)
        train(d, train_cfg, model, v, data, teacher_fn=teacher_fn, progress=self.progress, config_text=text)

    # --- stages -------------------------------------------------------------------------------
    def vocab(self, d: Path) -> None:
        from seqkd.vocab import train_vocab

        train_vocab(self.refs.src, self.refs.tgt, self.cfg.vocab, d / "files")
        for f in (d / "files").iterdir():
            f.replace(d / f.name)
        (d / "files").rmdir()

    def teacher(self, d: Path) -> None:
        self._train(d, self.cfg.teacher, self.cfg.teacher_train, self.refs)

    def baseline(self, d: Path) -> None:
        self._train(d, self.cfg.student, self.cfg.student_train, self.refs)

    def seq_kd_data(self, d: Path) -> None:
        from seqkd.distill import DistillConfig, distill

        distill(self._dir("teacher"), self.refs.src, self.refs.tgt, d, DistillConfig(beam=self.cfg.seq_kd_beam),
                progress=self.progress)

    def seq_kd(self, d: Path) -> None:
        self._train(d, self.cfg.student, self.cfg.student_train, self._data("data_seq_kd"))

    def seq_inter_data(self, d: Path) -> None:
        from seqkd.distill import DistillConfig, distill

        dc = DistillConfig(mode="seq_inter", beam=self.cfg.seq_inter_k, fraction=self.cfg.seq_inter_fraction,
                           metric=self.cfg.seq_inter_metric, max_tokens=2048)
        distill(self._dir("teacher"), self.refs.src, self.refs.tgt, d, dc, progress=self.progress)

    def _topk(self, d: Path, data: TrainData) -> None:
        from seqkd.kd import build_topk_cache

        build_topk_cache(self._dir("teacher"), data.src, data.tgt, d, k=self.cfg.word_kd_topk, progress=self.progress)

    def topk_refs(self, d: Path) -> None:
        self._topk(d, self.refs)

    def topk_seq_inter(self, d: Path) -> None:
        self._topk(d, self._data("data_seq_inter"))

    def word_kd(self, d: Path) -> None:
        from seqkd.kd import offline_teacher

        fn = offline_teacher(self._dir("data_topk"), self.vocab_obj, self.refs.src, self.refs.tgt)
        tc = replace(self.cfg.student_train, loss=replace(self.cfg.student_train.loss,
                                                          word_kd_alpha=self.cfg.word_kd_alpha))
        self._train(d, self.cfg.student, tc, self.refs, teacher_fn=fn)

    def finetune(self, init: str, word_kd: bool = False):
        """Seq-Inter fine-tuning of `init` (optionally with the mixed Word-KD loss)."""

        def run(d: Path) -> None:
            from seqkd.kd import offline_teacher

            data = self._data("data_seq_inter")
            tc, fn = self.cfg.finetune_train, None
            if word_kd:
                fn = offline_teacher(self._dir("data_topk_seq_inter"), self.vocab_obj, data.src, data.tgt)
                tc = replace(tc, loss=replace(tc.loss, word_kd_alpha=self.cfg.word_kd_alpha))
            self._train(d, None, tc, data, init_from=init, teacher_fn=fn)

        return run

    def best_student(self) -> str:
        """The student with the best validation BLEU (greedy): never chosen on the test set."""
        scores = {s: json.loads((self._dir(s) / "train_result.json").read_text())["best_metric"]
                  for s in ("baseline", "word_kd", "seq_kd", "baseline+seq_inter", "seq_kd+seq_inter",
                            "seq_kd+seq_inter+word_kd")}
        return max(scores, key=lambda s: (scores[s], s))

    def prune(self, best: str, p: dict):
        def run(d: Path) -> None:
            from seqkd.prune import PruneConfig, prune_and_retrain

            pc = PruneConfig(sparsity=p["sparsity"], scheme=p.get("scheme", self.cfg.prune_scheme),
                             include_embeddings=p.get("include_embeddings", True), rounds=p.get("rounds", 1),
                             schedule=tuple(p.get("schedule", ())))
            data = self._data("data_seq_kd") if "seq_kd" in best else self.refs
            prune_and_retrain(self._dir(best), d, pc, self.cfg.prune_train, data, progress=self.progress)

        return run

    def export(self, best: str):
        def run(d: Path) -> None:
            from seqkd.prune import export_ct2

            export_ct2(self._dir(best), d / "ct2-int8", "int8")
            write_json(d / "source.json", {"model": best})

        return run

    def evaluate(self, systems: list[str], src: list[str], ref: list[str]):
        """Quality and speed of every system, one after the other in one process, same engine and threads."""

        def run(d: Path) -> None:
            from seqkd.decode import DecodeConfig, write_lines
            from seqkd.evaluate import evaluate
            from seqkd.models import count_params, load_model

            for name in systems:
                if (d / f"{name}.json").exists():
                    continue
                model_dir = self._dir(name)
                cfg = DecodeConfig(engine="ct2", beam=self.cfg.eval_beam, threads=self.cfg.threads)
                size = None
                if name == "best_int8":
                    model_dir = self._dir(json.loads((self._dir(name) / "source.json").read_text())["model"])
                    cfg = replace(cfg, compute_type="int8")
                    size = (self._dir(name) / "ct2-int8" / "model.bin").stat().st_size / 2**20
                res, greedy, beam = evaluate(str(model_dir), src, ref, cfg, progress=self.progress)
                params = count_params(load_model(model_dir))
                row = {"name": name, **res.as_dict(), "params_total": params["total"],
                       "params_nonzero": params["nonzero"],
                       "sent_per_s_greedy": res.n / res.seconds_greedy, "sent_per_s_beam": res.n / res.seconds_beam,
                       "engine": f"ct2-{cfg.compute_type}",
                       "size_mb": size if size is not None
                       else (model_dir / "model.safetensors").stat().st_size / 2**20}
                write_lines(d / f"{name}.greedy.txt", greedy)
                write_lines(d / f"{name}.beam.txt", beam)
                write_json(d / f"{name}.json", row)
                log.info("%s: BLEU greedy %.2f beam %.2f", name, res.bleu_greedy, res.bleu_beam)

        return run
