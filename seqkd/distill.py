"""Distillation data from a teacher: Seq-KD (beam output) and Seq-Inter (n-best pick closest to the
reference), written in shards so a killed run resumes where it stopped and ends byte-identical.

Layout of an output folder:
  shards/shard-00000.jsonl   one {"i", "hyp", "score"} line per input pair, written atomically
  train.src / train.tgt      the assembled corpus (after optional filtering), aligned line by line
  manifest.json              teacher, engine, K, length limits, input hash, counts; written last
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from seqkd.decode import DecodeConfig, Translator
from seqkd.fsutil import SeqkdError, atomic_open, write_json

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    mode: str = "seq_kd"  # seq_kd: teacher's beam output | seq_inter: n-best candidate closest to the reference
    beam: int = 5  # beam size (Seq-Inter: also the n-best size K; the paper uses 35)
    metric: str = "bleu"  # Seq-Inter similarity: bleu (sentence BLEU, exp smoothing) | chrf
    fraction: float = 1.0  # Seq-Inter: use a random fraction of the corpus
    shard_size: int = 2000
    engine: str = "ct2"
    compute_type: str = "float32"
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_tokens: int = 4096
    filter_worst: float = 0.0  # drop this fraction of pairs with the lowest teacher score (mean log-prob)
    max_len_ratio: float = 0.0  # drop pairs whose hyp/src length ratio (characters) exceeds this (or its inverse)
    seed: int = 1


def _hash_lines(*sides: list[str]) -> str:
    h = hashlib.sha256()
    for lines in sides:
        for ln in lines:
            h.update(ln.encode("utf-8") + b"\n")
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _weights_hash(model_dir: Path) -> str:
    h = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


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


def select_indices(n: int, fraction: float, seed: int) -> list[int]:
    if fraction >= 1.0:
        return list(range(n))
    k = max(1, int(round(n * fraction)))
    return sorted(random.Random(seed).sample(range(n), k))


def distill(teacher_dir: str | Path, src: list[str], ref: list[str], out_dir: str | Path,
            cfg: DistillConfig, progress: bool = True) -> dict:
    """Translate `src` with the teacher and write the distilled corpus into `out_dir`.

    Returns the manifest. Reruns skip finished shards; a finished folder (manifest present and
    matching) is returned as is.
    """
    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    if cfg.mode not in ("seq_kd", "seq_inter"):
        raise SeqkdError(f"unknown distillation mode {cfg.mode!r} (seq_kd or seq_inter)")
    if len(src) != len(ref):
        raise SeqkdError(f"source has {len(src)} lines but reference has {len(ref)}")
    idx = select_indices(len(src), cfg.fraction if cfg.mode == "seq_inter" else 1.0, cfg.seed)
    ident = {"teacher": str(teacher_dir.resolve()), "teacher_weights": _weights_hash(teacher_dir),
             "input_sha256": _hash_lines(src, ref), "input_pairs": len(src), "config": asdict(cfg)}
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if {k: m.get(k) for k in ident if k != "teacher"} == _moveable(ident):
            log.info("%s: distilled data up to date, skipping", out)
            return m
        raise SeqkdError(f"{manifest_path}: folder holds distilled data from another teacher, input or config; "
                         "use another output folder")
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".*.tmp"):  # the shard in flight when a previous run was killed
        stale.unlink()
    if not (out / "identity.json").exists():
        write_json(out / "identity.json", ident)
    if _moveable(json.loads((out / "identity.json").read_text())) != _moveable(ident):
        raise SeqkdError(f"{out}: unfinished shards come from another teacher, input or config; use another folder")

    nbest = cfg.beam if cfg.mode == "seq_inter" else 1
    tr = Translator(teacher_dir, DecodeConfig(engine=cfg.engine, beam=cfg.beam, nbest=nbest,
                                              compute_type=cfg.compute_type, max_len_a=cfg.max_len_a,
                                              max_len_b=cfg.max_len_b, max_tokens=cfg.max_tokens))
    shards = [idx[s: s + cfg.shard_size] for s in range(0, len(idx), cfg.shard_size)]
    todo = [k for k in range(len(shards)) if not (shard_dir / f"shard-{k:05d}.jsonl").exists()]
    already = len(idx) - sum(len(shards[k]) for k in todo)
    bar = tqdm(total=len(idx), initial=already, unit="sent",
               desc=f"{cfg.mode} (beam {cfg.beam})", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    for k in todo:
        part = shards[k]
        hyps = tr.translate([src[i] for i in part], beam=cfg.beam, nbest=nbest)
        with atomic_open(shard_dir / f"shard-{k:05d}.jsonl") as f:
            for i, hs in zip(part, hyps):
                if cfg.mode == "seq_inter":
                    j, sim = _pick([h.text for h in hs], ref[i], cfg.metric)
                    row = {"i": i, "hyp": hs[j].text, "score": hs[j].score, "rank": j, "sim": sim}
                else:
                    row = {"i": i, "hyp": hs[0].text, "score": hs[0].score}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        bar.update(len(part))
        bar.set_postfix(sent_s=f"{(bar.n - already) / max(1e-9, time.time() - t0):.1f}")
    bar.close()
    return _assemble(out, src, shards, ident, cfg)


def _assemble(out: Path, src: list[str], shards: list[list[int]], ident: dict, cfg: DistillConfig) -> dict:
    rows = []
    for k in range(len(shards)):
        rows += [json.loads(ln) for ln in (out / "shards" / f"shard-{k:05d}.jsonl").read_text("utf-8").splitlines()]
    keep = [r for r in rows if r["hyp"].strip() and src[r["i"]].strip()]
    dropped = {"empty": len(rows) - len(keep), "length_ratio": 0, "low_score": 0}
    if cfg.max_len_ratio:
        def ok(r):
            a, b = len(src[r["i"]]) + 1, len(r["hyp"]) + 1
            return max(a / b, b / a) <= cfg.max_len_ratio
        n = len(keep)
        keep = [r for r in keep if ok(r)]
        dropped["length_ratio"] = n - len(keep)
    if cfg.filter_worst:
        n_drop = int(len(keep) * cfg.filter_worst)
        worst = {r["i"] for r in sorted(keep, key=lambda r: (r["score"], r["i"]))[:n_drop]}
        keep = [r for r in keep if r["i"] not in worst]
        dropped["low_score"] = n_drop
    with atomic_open(out / "train.src") as f:
        f.writelines(src[r["i"]].replace("\n", " ") + "\n" for r in keep)
    with atomic_open(out / "train.tgt") as f:
        f.writelines(r["hyp"].replace("\n", " ") + "\n" for r in keep)
    manifest = {**ident, "pairs": len(keep), "dropped": dropped,
                "mean_teacher_score": sum(r["score"] for r in rows) / max(1, len(rows))}
    if cfg.mode == "seq_inter":
        manifest["mean_similarity"] = sum(r["sim"] for r in rows) / max(1, len(rows))
        manifest["mean_rank"] = sum(r["rank"] for r in rows) / max(1, len(rows))
    write_json(out / "manifest.json", manifest)
    log.info("distilled %d pairs into %s (dropped: %s)", len(keep), out, dropped)
    return manifest
