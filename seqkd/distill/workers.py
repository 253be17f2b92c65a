"""Distillation data from a teacher: Seq-KD (beam output) and Seq-Inter (n-best pick closest to the
reference), written in shards so a killed run resumes where it stopped and ends byte-identical, and
so any number of workers can share the work (torchrun ranks, a Slurm array, several machines on one
folder): `seqkd.distill.shards` has the claim protocol and the checked merge.

Layout of an output folder:
  shards/shard-00000.jsonl   one {"i", "hyp", "score"} line per input pair, written atomically
  shards/shard-00000.claim   a worker's claim on a shard while it translates it (seqkd.distill.shards)
  train.src / train.tgt      the assembled corpus (after optional filtering), aligned line by line
  manifest.json              teacher, engine, K, length limits, input hash, counts; written last
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from seqkd.data.pairs import ListPairs, Pairs
from seqkd.distill.config import SPEED_FIELDS, DistillConfig
from seqkd.distill.shards import LOCK, locked, merge, shard_path, try_claim, unfinished
from seqkd.inference.decode import Translator
from seqkd.models.marian import weights_hash
from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, atomic_open, make_folder, read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """This process's part: the shards k with k % num_shards == shard_index (a Slurm array task; default
    all), claimed one at a time, starting at an offset by torchrun rank so ranks rarely meet.
    `merge_only` translates nothing: it checks and merges finished shards."""

    shard_index: int = 0
    num_shards: int = 1
    merge_only: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, **kw) -> Worker:
        """With torchrun's RANK / WORLD_SIZE / LOCAL_RANK when they are set."""
        env = {k: int(os.environ[v]) for k, v in (("rank", "RANK"), ("world_size", "WORLD_SIZE"),
                                                 ("local_rank", "LOCAL_RANK")) if os.environ.get(v)}
        return cls(**env, **kw)

    def order(self, n_shards: int) -> list[int]:
        """The shards this worker may take, in the order it tries them."""
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise SeqkdError(f"--shard-index {self.shard_index} --num-shards {self.num_shards}: "
                             "need num-shards >= 1 and 0 <= shard-index < num-shards")
        mine = list(range(self.shard_index, n_shards, self.num_shards))
        start = self.rank * len(mine) // max(1, self.world_size)
        return mine[start:] + mine[:start]


@dataclass
class WorkerResult:
    """The manifest once the folder is complete; else None and the count of shards still unfinished."""

    manifest: dict | None
    remaining: int
    shards: int
    translated: int = 0  # shards this worker translated


def _pick(hyps: list, ref: str, metric: str) -> tuple[int, float]:
    """Index of the hypothesis most similar to `ref` (ties: the teacher's better-ranked one) and its score."""
    from sacrebleu.metrics import BLEU, CHRF

    scorer = BLEU(effective_order=True, smooth_method="exp") if metric == "bleu" else CHRF()
    best, best_s = 0, float("-inf")
    for k, h in enumerate(hyps):
        s = scorer.sentence_score(h, [ref]).score
        if s > best_s:
            best, best_s = k, s
    return best, best_s


def _moveable(ident: dict) -> dict:
    """The identity without the teacher's path: a moved run folder still matches (weights are hashed)."""
    return {k: v for k, v in ident.items() if k != "teacher"}


def select_indices(n: int, fraction: float, seed: int) -> Sequence[int]:
    """The input indices to distil, ascending: all (a range, no list of n ints), or a seeded sample."""
    if fraction >= 1.0:
        return range(n)
    k = max(1, int(round(n * fraction)))
    return sorted(random.Random(seed).sample(range(n), k))


def distill(teacher_dir: str | Path, src: list[str], ref: list[str], out_dir: str | Path,
            cfg: DistillConfig, progress: bool = True) -> dict:
    """Translate `src` with the teacher and write the distilled corpus into `out_dir`.

    Returns the manifest. Reruns skip finished shards; a finished folder (manifest present and
    matching) is returned as is. Other workers may share the folder (`distill_worker`); if they still
    hold shards when this call has done the rest, it raises a SeqkdError saying so.
    """
    res = distill_worker(teacher_dir, ListPairs(src, ref), out_dir, cfg, Worker(), progress)
    if res.manifest is None:
        raise SeqkdError(f"{out_dir}: {res.remaining} of {res.shards} shards are being translated by other "
                         "workers; the last of them merges (or rerun this when they are done)")
    return res.manifest


def _identity(teacher_dir: Path, pairs: Pairs, cfg: DistillConfig) -> dict:
    """What the data depends on (the same keys as before workers existed). The teacher is named by its folder's
    name, informative only (its weights are hashed): no path of the machine in a record that may be committed."""
    return {"teacher": teacher_dir.resolve().name,
            "teacher_weights": weights_hash(teacher_dir), "input_sha256": pairs.digest(), "input_pairs": len(pairs),
            "config": {k: v for k, v in asdict(cfg).items() if k not in SPEED_FIELDS}}


def _finished(out: Path, ident: dict) -> dict | None:
    """The manifest if `out` is finished with this identity; None if unfinished; an error if it is another's."""
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        return None
    m = read_json(manifest_path)
    if {k: m.get(k) for k in ident if k != "teacher"} == _moveable(ident):
        log.info("%s: distilled data up to date, skipping", out)
        return m
    raise SeqkdError(f"{manifest_path}: folder holds distilled data from another teacher, input or config; "
                     "use another output folder")


def _prepare(out: Path, ident: dict) -> Path:
    """Create the shard folder and record the identity; refuse unfinished shards of another identity."""
    shard_dir = make_folder(make_folder(out) / "shards")
    if not (out / "identity.json").exists():
        write_json(out / "identity.json", ident)
    if _moveable(read_json(out / "identity.json")) != _moveable(ident):
        raise SeqkdError(f"{out}: unfinished shards come from another teacher, input or config; use another folder")
    return shard_dir


def _device(cfg: DistillConfig, worker: Worker) -> tuple[str, int]:
    """(device, device_index) for this worker: on CUDA, GPU LOCAL_RANK modulo the GPUs the engine sees.
    No GPU for --device cuda is an error, never a silent CPU fallback."""
    if cfg.device == "cpu":
        return "cpu", 0
    if cfg.device != "cuda":
        raise SeqkdError(f"unknown device {cfg.device!r} (cpu or cuda)")
    if cfg.engine == "ct2":
        import ctranslate2

        count, engine = ctranslate2.get_cuda_device_count(), "CTranslate2"
    else:
        import torch

        count, engine = torch.cuda.device_count(), "torch"
    if count == 0:
        raise SeqkdError(f"--device cuda: {engine} sees no CUDA device on this machine; use --device cpu")
    index = worker.local_rank % count
    return ("cuda" if cfg.engine == "ct2" else f"cuda:{index}"), index


def _translator(teacher_dir: Path, out: Path, cfg: DistillConfig, worker: Worker) -> Translator:
    device, index = _device(cfg, worker)
    with locked(out / LOCK):  # the teacher's CTranslate2 conversion is made once, not once per worker
        return Translator(teacher_dir, cfg.decode_config(device, index))


def _write_shard(path: Path, part: Sequence[int], pairs: Pairs, tr: Translator, cfg: DistillConfig) -> None:
    """Translate one shard and write its rows atomically (Seq-Inter picks its candidate here, per shard)."""
    seq_inter = cfg.mode == "seq_inter"
    ref = pairs.reference(part) if seq_inter else None
    hyps = tr.translate(pairs.source(part), beam=cfg.beam, nbest=cfg.beam if seq_inter else 1)
    with atomic_open(path) as f:
        for j, (i, hs) in enumerate(zip(part, hyps)):
            if seq_inter:
                b, sim = _pick([h.text for h in hs], ref[j], cfg.metric)
                row = {"i": i, "hyp": hs[b].text, "score": hs[b].score, "rank": b, "sim": sim}
            else:
                row = {"i": i, "hyp": hs[0].text, "score": hs[0].score}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            faults.point("shard_row")


def _work(shard_dir: Path, shards: Sequence[Sequence[int]], order: list[int], pairs: Pairs,
          cfg: DistillConfig, translator: Callable[[], Translator], progress: bool) -> int:
    """Translate every shard of `order` this worker can claim, passing again while a pass claimed one (a
    worker that died meanwhile left its shard free); returns the number translated."""
    if faults.resume_disabled():
        for k in order:
            shard_path(shard_dir, k).unlink(missing_ok=True)
    todo = [k for k in order if not shard_path(shard_dir, k).exists()]
    if len(todo) < len(order):
        log.info("%d of %d shards already finished: not decoded again", len(order) - len(todo), len(order))
    tr, done, t0 = None, 0, time.time()
    with tqdm(total=sum(len(shards[k]) for k in todo), unit="sent", desc=f"{cfg.mode} (beam {cfg.beam})",
              disable=not progress, dynamic_ncols=True) as bar:
        while True:
            claimed = 0
            for k in todo:
                if (claim := try_claim(shard_dir, k)) is None:
                    continue
                finished = False
                try:
                    if claim.previous:
                        log.info("shard %d: taking over from a worker that stopped (%s)", k, claim.previous)
                    tr = tr or translator()
                    _write_shard(shard_path(shard_dir, k), shards[k], pairs, tr, cfg)
                    finished = True
                finally:
                    claim.release(finished)
                claimed += 1
                bar.update(len(shards[k]))
                bar.set_postfix(sent_s=f"{bar.n / max(1e-9, time.time() - t0):.1f}")
            done += claimed
            if not claimed:
                return done


def distill_worker(teacher_dir: str | Path, pairs: Pairs, out_dir: str | Path, cfg: DistillConfig,
                   worker: Worker | None = None, progress: bool = True) -> WorkerResult:
    """One worker of a distillation: translate the shards of its part it can claim, then merge if every
    shard is finished (or only check and merge with `worker.merge_only`).

    Any number of workers may run at once on the same folder; the result is the same bytes whatever
    their number. Returns the manifest, or None with the count of shards others still hold.
    """
    teacher_dir, out, worker = Path(teacher_dir), Path(out_dir), worker or Worker()
    if cfg.mode not in ("seq_kd", "seq_inter"):
        raise SeqkdError(f"unknown distillation mode {cfg.mode!r} (seq_kd or seq_inter)")
    idx = select_indices(len(pairs), cfg.fraction if cfg.mode == "seq_inter" else 1.0, cfg.seed)
    shards = [idx[s: s + cfg.shard_size] for s in range(0, len(idx), cfg.shard_size)]
    order = worker.order(len(shards))
    if not worker.merge_only:
        _device(cfg, worker)  # a missing GPU is an error before anything is written
    ident = _identity(teacher_dir, pairs, cfg)
    if (m := _finished(out, ident)) is not None:
        return WorkerResult(m, 0, len(shards))
    shard_dir = _prepare(out, ident)
    pairs.keep_index()
    done = 0
    if not worker.merge_only:
        done = _work(shard_dir, shards, order, pairs, cfg, lambda: _translator(teacher_dir, out, cfg, worker),
                     progress)
        log.info("%s: %d shards decoded in this run", out, done)
    if not worker.merge_only and (left := unfinished(shard_dir, len(shards))):
        log.info("%s: %d of %d shards unfinished, held by other workers or in other array tasks' parts",
                 out, len(left), len(shards))
        return WorkerResult(None, len(left), len(shards), done)
    return WorkerResult(merge(out, pairs, shards, ident, cfg), 0, len(shards), done)
