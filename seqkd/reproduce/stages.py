"""What each `seqkd reproduce` stage does, composed from the library's own functions."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from seqkd.compress.prune import PruneConfig, prune_and_retrain
from seqkd.config import to_dict
from seqkd.data.corpus import read_parallel
from seqkd.data.tokdata import hash_pairs
from seqkd.data.vocab import Vocab, train_vocab
from seqkd.distill.config import DistillConfig
from seqkd.distill.workers import distill
from seqkd.inference.bench import latency
from seqkd.inference.decode import DecodeConfig, Translator, write_lines
from seqkd.inference.decode_tune import ENGINE_FACTORS, sweep
from seqkd.inference.evaluate import bleu, evaluate
from seqkd.inference.export import export_ct2
from seqkd.inference.shortlist import ShortlistConfig, build_vmap, vmap_stats, write_vmap
from seqkd.inference.timing import time_interleaved
from seqkd.models.marian import SIZES, count_params, load_model
from seqkd.models.shrink import stack
from seqkd.training.kd import build_topk_cache, offline_teacher
from seqkd.training.run import train_run
from seqkd.training.trainer import TrainData
from seqkd.util.fsutil import SeqkdError, read_json, write_json

log = logging.getLogger(__name__)
_FIX = "delete its stage folder and rerun"


def val_bleu(run_dir: Path) -> float:
    """A trained stage's best validation BLEU (greedy), from its train_result.json."""
    return read_json(run_dir / "train_result.json", ["best_metric"], _FIX)["best_metric"]


def small_enough(teacher_total: int, nonzero: int, min_ratio: float) -> bool:
    """Whether a pruned model with `nonzero` non-zero weights has at least `min_ratio` x fewer than the teacher's
    `teacher_total`: an int8 candidate (`int8_pick`, and the grid's `live`)."""
    return teacher_total / max(1, nonzero) >= min_ratio


def choose_fast(rows: dict[str, dict], teacher_val_beam: float, max_drop: float) -> tuple[str, bool]:
    """(the fastest candidate whose validation greedy BLEU is within `max_drop` of the teacher's
    validation beam BLEU, True); when none is, (the one with the best validation BLEU, False)."""
    ok = [n for n, r in rows.items() if r["val_bleu_greedy"] >= teacher_val_beam - max_drop]
    if ok:
        return max(ok, key=lambda n: (rows[n]["val_sent_per_s_greedy"], n)), True
    return max(rows, key=lambda n: (rows[n]["val_bleu_greedy"], n)), False


class Stages:
    """Stage bodies: each takes its folder and fills it (resumably: the library functions resume)."""

    def __init__(self, cfg, runner, refs: TrainData, progress: bool, test: tuple[list[str], list[str]] = ((), ())):
        self.cfg, self.r, self.refs, self.progress, self.test = cfg, runner, refs, progress, test

    def _dir(self, name: str) -> Path:
        return self.r.out / name

    def resolve(self, name: str) -> str:
        """The stage whose model `name` stands for: a choice stage's pick (`pick.json`), an export's source
        (`source.json`), else `name` itself."""
        for f in ("pick.json", "source.json"):
            if (self._dir(name) / f).exists():
                return self.resolve(read_json(self._dir(name) / f, ["model"], _FIX)["model"])
        return name

    def _model(self, name: str) -> Path:
        return self._dir(self.resolve(name))

    @property
    def vocab_obj(self):
        return Vocab(self._dir("vocab"))

    def _data(self, folder: str) -> TrainData:
        """Training pairs: the references ("refs") or a distillation folder's train.src/train.tgt."""
        if folder == "refs":
            return self.refs
        src, tgt = read_parallel(self._dir(folder) / "train.src", self._dir(folder) / "train.tgt")
        return TrainData(src, tgt, self.refs.val_src, self.refs.val_tgt)

    def _threads(self, train_cfg):
        """`train_cfg` with the grid's threads (`--threads`) where the recipe leaves them at 0 (torch's default)."""
        if train_cfg.threads == 0 and self.cfg.threads:
            return replace(train_cfg, threads=self.cfg.threads)
        return train_cfg

    def _train(self, d: Path, model_cfg, train_cfg, data: TrainData, init_from: str | Path | None = None,
               teacher_fn=None) -> None:
        """Train into `d`: from `init_from` (a stage name, or a model folder) or a fresh `model_cfg` model."""
        train_cfg, init_dir = self._threads(train_cfg), None
        if init_from:
            init_dir = init_from if isinstance(init_from, Path) else self._dir(init_from)
            train_cfg = replace(train_cfg, init_from=os.path.relpath(init_dir, d))  # no machine path in records
        text = yaml.safe_dump({"model": to_dict(model_cfg) if model_cfg else None, "train": to_dict(train_cfg),
                               "preset": self.cfg.preset}, sort_keys=False)
        train_run(d, train_cfg, model_cfg, data, vocab=self.vocab_obj, init_from=init_dir,
                  teacher=lambda v: teacher_fn, config_text=text, progress=self.progress)

    def _word_kd(self, train_cfg, cache: str, data: TrainData):
        """(train config with the mixed loss, offline teacher from the top-k cache `cache`)."""
        fn = offline_teacher(self._dir(cache), self.vocab_obj, hash_pairs(data.stream()),
                             temperature=train_cfg.loss.temperature, k=self.cfg.word_kd_topk)
        return replace(train_cfg, loss=replace(train_cfg.loss, word_kd_alpha=self.cfg.word_kd_alpha)), fn

    # --- data stages ---------------------------------------------------------------------------
    def vocab(self, d: Path) -> None:
        train_vocab(self.refs.src, self.refs.tgt, self.cfg.vocab, d / "files")
        for f in (d / "files").iterdir():
            f.replace(d / f.name)
        (d / "files").rmdir()

    def teacher(self, d: Path) -> None:
        self._train(d, self.cfg.teacher, self.cfg.teacher_train, self.refs)

    def seq_kd_data(self, d: Path) -> None:
        distill(self._dir("teacher"), self.refs.src, self.refs.tgt, d,
                DistillConfig(beam=self.cfg.seq_kd_beam), progress=self.progress)

    def seq_inter_data(self, d: Path) -> None:
        dc = DistillConfig(mode="seq_inter", beam=self.cfg.seq_inter_k, fraction=self.cfg.seq_inter_fraction,
                           metric=self.cfg.seq_inter_metric, max_tokens=2048)
        distill(self._dir("teacher"), self.refs.src, self.refs.tgt, d, dc, progress=self.progress)

    def topk(self, folder: str):
        """Word-KD cache: the teacher's top-k next-word distribution over `folder`'s pairs."""

        def run(d: Path) -> None:
            data = self._data(folder)
            build_topk_cache(self._dir("teacher"), data.src, data.tgt, d, k=self.cfg.word_kd_topk,
                             temperature=self.cfg.student_train.loss.temperature, progress=self.progress)

        return run

    # --- training stages -----------------------------------------------------------------------
    def student(self, model_cfg, seed: int, folder: str, word_kd: bool = False, bf16: str | None = None,
                train_cfg=None):
        """A student trained from scratch on `folder`'s pairs ("refs" or "data_seq_kd"), optionally
        with Word-KD from the matching top-k cache (`bf16` overrides the training precision;
        `train_cfg` the recipe, default `student_train`)."""

        def run(d: Path) -> None:
            data = self._data(folder)
            base = train_cfg or self.cfg.student_train
            tc, fn = replace(base, seed=seed, bf16=bf16 or base.bf16), None
            if word_kd:
                tc, fn = self._word_kd(tc, "data_topk" if folder == "refs" else f"data_topk_{folder[5:]}", data)
            self._train(d, model_cfg, tc, data, teacher_fn=fn)
            self.check_learned(d)

        return run

    def stacked_student(self, model_cfg, parent: str, folder: str, train_cfg):
        """A deeper student grown from stage `parent` (its layers repeated up to `model_cfg`'s depth,
        `shrink.stack`), then trained on `folder`'s pairs with `train_cfg` (shallow-to-deep training)."""

        def run(d: Path) -> None:
            dims = {**SIZES[model_cfg.size], **model_cfg.overrides}
            init = d / "stacked_init"  # deterministic: rebuilt the same after a kill; training resumes
            stack(self._dir(parent), init, dims["encoder_layers"], dims["decoder_layers"])
            self._train(d, model_cfg, train_cfg, self._data(folder), init_from=init)
            shutil.rmtree(init, ignore_errors=True)
            self.check_learned(d)

        return run

    def check_learned(self, d: Path) -> None:
        """Fail a from-scratch student whose best validation BLEU is under `min_student_fraction` of the
        teacher's: a collapsed run (e.g. an unstable recipe) must stop the grid, not be cached as done.
        Rerunning repeats the check; a changed recipe changes the stage's identity and retrains it."""
        frac = self.cfg.min_student_fraction
        if frac <= 0:
            return
        got, teacher = val_bleu(d), val_bleu(self._dir("teacher"))
        if got < frac * teacher:
            raise SeqkdError(f"{d.name}: best validation BLEU {got:.2f} is under {frac:.0%} of the teacher's "
                             f"{teacher:.2f}; the training failed (see {d / 'metrics.jsonl'}), fix its recipe "
                             "(student_train / fast_train) and rerun")

    def finetune(self, init: str, word_kd: bool = False):
        """Seq-Inter fine-tuning of stage `init` (optionally with the mixed Word-KD loss)."""

        def run(d: Path) -> None:
            data = self._data("data_seq_inter")
            tc, fn = self.cfg.finetune_train, None
            if word_kd:
                tc, fn = self._word_kd(tc, "data_topk_seq_inter", data)
            self._train(d, None, tc, data, init_from=init, teacher_fn=fn)

        return run

    def best_student(self, names: list[str]):
        """`best`: the student with the best validation BLEU (greedy), never chosen on the test set."""

        def run(d: Path) -> None:
            scores = {s: val_bleu(self._dir(s)) for s in names}
            best = max(scores, key=lambda s: (scores[s], s))
            write_json(d / "pick.json", {"model": best, "val_bleu_greedy": scores})
            log.info("best student by validation BLEU: %s", best)

        return run

    def prune(self, parent: str, sparsity: float, scheme: str):
        """One pruning round from stage `parent`: prune to `sparsity`, retrain on the Seq-KD data and
        fine-tune on the Seq-Inter data, masks kept (sparsity 0: the same retraining, no pruning)."""

        def run(d: Path) -> None:
            pc = PruneConfig(sparsity=sparsity, scheme=scheme, schedule=(sparsity,))
            tc = self._threads(self.cfg.prune_train)
            ft = replace(self.cfg.finetune_train, threads=tc.threads)
            prune_and_retrain(self._model(parent), d, pc, tc, self._data("data_seq_kd"), progress=self.progress,
                              finetune=(ft, self._data("data_seq_inter")))

        return run

    def int8_pick(self, pruned: list[str]):
        """`int8_pick`: the int8 model's source, chosen on validation BLEU: the best pruned model with at least
        `int8_min_ratio` x fewer non-zeros than the teacher, else the best student."""

        def run(d: Path) -> None:
            teacher = count_params(load_model(self._dir("teacher")))["total"]
            ok = [p for p in pruned if small_enough(teacher, read_json(self._dir(p) / "prune_result.json",
                                                                       ["params_nonzero"], _FIX)["params_nonzero"],
                                                    self.cfg.int8_min_ratio)]
            pick = max(ok, key=lambda p: (val_bleu(self._dir(p)), p)) if ok else self.resolve("best")
            write_json(d / "pick.json", {"model": pick, "candidates": ok})

        return run

    def fast_pick(self, candidates: list[str]):
        """`fast`: the fastest candidate whose validation greedy BLEU is within `fast_max_drop` of the
        teacher's validation beam BLEU (speed: greedy sentences/s on the validation source, median of
        `speed_repeats`, one process, same threads). Never chosen on test."""

        def run(d: Path) -> None:
            n = self.cfg.eval_max_sents or len(self.refs.val_src)
            src, ref = self.refs.val_src[:n], self.refs.val_tgt[:n]
            names = list(dict.fromkeys(self.resolve(c) for c in candidates))
            cfg = DecodeConfig(engine="ct2", threads=self.cfg.threads)
            teacher = Translator(self._dir("teacher"), cfg)
            t_beam = bleu([h[0].text for h in teacher.translate(src, beam=self.cfg.eval_beam)], ref).score
            trs = [Translator(self._dir(name), cfg) for name in names]
            timings = time_interleaved([(tr, 1) for tr in trs], src, self.cfg.speed_repeats)
            rows = {name: {"val_bleu_greedy": val_bleu(self._dir(name)), "val_sent_per_s_greedy": t.sent_per_s}
                    for name, t in zip(names, timings)}
            pick, ok = choose_fast(rows, t_beam, self.cfg.fast_max_drop)
            write_json(d / "pick.json", {"model": pick, "within_budget": ok, "teacher_val_bleu_beam": t_beam,
                                           "max_drop": self.cfg.fast_max_drop, "candidates": rows})
            log.info("fast student: %s (%.1f val sent/s)", pick, rows[pick]["val_sent_per_s_greedy"])

        return run

    def shortlist(self, d: Path) -> None:
        """The lexical shortlist (CTranslate2 vmap) from the Seq-KD corpus: what the students learnt to say."""
        data = self._data("data_seq_kd")
        vmap = build_vmap(data.src, data.tgt, self.vocab_obj,
                          ShortlistConfig(self.cfg.shortlist_per_piece, self.cfg.shortlist_frequent))
        write_json(d / "vmap.json", vmap_stats(vmap))
        write_vmap(vmap, d / "vmap.txt")

    def export(self, source: str):
        """The int8 CTranslate2 export of stage `source`'s model (a choice stage: its pick)."""

        def run(d: Path) -> None:
            export_ct2(self._model(source), d / "ct2-int8", "int8")
            write_json(d / "source.json", {"model": self.resolve(source)})

        return run

    # --- measurement ---------------------------------------------------------------------------
    def evaluate(self, name: str):
        """Quality and speed of system `name` on the test set (the same engine and threads for every
        system): row.json, and its greedy and beam outputs."""

        def run(d: Path) -> None:
            src, ref = self.test
            model_dir = self._model(name)
            cfg = DecodeConfig(engine="ct2", beam=self.cfg.eval_beam, threads=self.cfg.threads)
            int8 = self._dir(name) / "ct2-int8"
            if int8.exists():
                cfg = replace(cfg, compute_type="int8")
            tr = Translator(model_dir, cfg)  # one load: evaluated, then timed one sentence at a time
            res, greedy, beam = evaluate(str(model_dir), src, ref, cfg, progress=self.progress, translator=tr)
            params = count_params(load_model(model_dir))
            size = (int8 / "model.bin" if int8.exists() else model_dir / "model.safetensors").stat().st_size
            row = {"name": name, **res.as_dict(), "params_total": params["total"],
                   "params_nonzero": params["nonzero"], "val_bleu_greedy": val_bleu(model_dir),
                   "sent_per_s_greedy": res.n / res.seconds_greedy, "sent_per_s_beam": res.n / res.seconds_beam,
                   "engine": f"ct2-{cfg.compute_type}", "size_mb": size / 2**20}
            if self.cfg.latency_sents:  # one sentence at a time, as an interactive user sees it
                for search, beam_size in (("greedy", 1), ("beam", self.cfg.eval_beam)):
                    lat = latency(tr, src[: self.cfg.latency_sents], beam_size)
                    row |= {f"p50_ms_{search}": lat["p50_ms"], f"p95_ms_{search}": lat["p95_ms"]}
            write_lines(d / "greedy.txt", greedy)
            write_lines(d / "beam.txt", beam)
            write_json(d / "row.json", row)
            log.info("%s: BLEU greedy %.2f beam %.2f", name, res.bleu_greedy, res.bleu_beam)

        return run

    def _tune(self, runs: dict[str, tuple[str, int, str | None]], cfgs: dict) -> dict[str, dict]:
        """Each measured system's fastest decoding settings (thread layout, batching, scores, int8), chosen
        on the validation set so that S1 compares best against best (`decode_tune.sweep`)."""
        src, ref = self.refs.val_src, self.refs.val_tgt
        n = self.cfg.tune_max_sents or self.cfg.eval_max_sents or len(src)
        return {k: sweep(str(self._model(m)), beam, src[:n], ref[:n], self.cfg.threads, None,
                         max(1, self.cfg.speed_repeats), self.cfg.tune_max_bleu_drop, ENGINE_FACTORS, cfgs[k])
                for k, (m, beam, _) in runs.items()}

    def speed(self, with_fast: bool = False):
        """S1, measured as the paper compares: teacher beam vs best student greedy (and the `fast`
        student's greedy, also with the shortlist), same engine and threads, interleaved repetitions,
        median and range; the BLEU of every measured output beside it."""

        def run(d: Path) -> None:
            src, ref = self.test
            best = self.resolve("best")
            runs = {"teacher_beam": ("teacher", self.cfg.eval_beam, None), "student_greedy": (best, 1, None)}
            if with_fast:
                fast = self.resolve("fast")
                runs["fast_greedy"] = (fast, 1, None)
                if (self._dir("shortlist") / "vmap.txt").exists():
                    runs["fast_greedy_vmap"] = (fast, 1, str(self._dir("shortlist") / "vmap.txt"))
            cfgs = {k: DecodeConfig(engine="ct2", threads=self.cfg.threads, vmap=v) for k, (_, _, v) in runs.items()}
            tuning = self._tune(runs, cfgs) if self.cfg.tune_decoding else {}
            cfgs = {k: replace(c, **tuning[k]["best"]) if k in tuning else c for k, c in cfgs.items()}
            systems = [(Translator(self._dir(m), cfgs[k]), beam) for k, (m, beam, _) in runs.items()]
            timings = dict(zip(runs, time_interleaved(systems, src, self.cfg.speed_repeats)))
            out = {"n": len(src), "threads": self.cfg.threads, "engine": "ct2", "student": best,
                   "fast": runs.get("fast_greedy", (None,))[0], "tuned_on": "validation" if tuning else None}
            for k, t in timings.items():
                out[k] = {"sent_per_s_median": t.sent_per_s, "sent_per_s_min": t.sent_per_s_min,
                          "sent_per_s_max": t.sent_per_s_max, "seconds": t.seconds, "bleu": bleu(t.texts(), ref).score,
                          "settings": {f: getattr(cfgs[k], f) for f, _ in ENGINE_FACTORS}}
                if k in tuning:
                    best = dict(tuning[k]["best"])
                    if best.get("vmap"):
                        best["vmap"] = os.path.relpath(best["vmap"], d)  # no machine path in a record
                    out[k]["tuning"] = {**tuning[k], "best": best}
            tb, sg = out["teacher_beam"], out["student_greedy"]
            out["speedup_median"] = sg["sent_per_s_median"] / tb["sent_per_s_median"]
            out["speedup_range"] = [sg["sent_per_s_min"] / tb["sent_per_s_max"],
                                    sg["sent_per_s_max"] / tb["sent_per_s_min"]]
            for key in ("fast_greedy", "fast_greedy_vmap"):
                if key in out:
                    fg = out[key]
                    out[f"{key}_speedup_median"] = fg["sent_per_s_median"] / tb["sent_per_s_median"]
                    out[f"{key}_speedup_range"] = [fg["sent_per_s_min"] / tb["sent_per_s_max"],
                                                   fg["sent_per_s_max"] / tb["sent_per_s_min"]]
            write_json(d / "speed.json", out)

        return run
