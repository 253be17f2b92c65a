"""Word-KD teachers: online (teacher forward inside the training loop) or offline from a cache of
the teacher's top-k next-word probabilities, computed once, sharded and resumable.

Both return a `TeacherFn(example_indices, batch)` for `seqkd.training.trainer.train`: full logits (B, T, V)
online, or a (probs (B, T, k), ids (B, T, k)) pair offline. The cache is read through memory maps,
one example's rows at a time, so its size on disk does not become memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from seqkd.data.batching import IGNORE, collate, token_batches
from seqkd.data.tokdata import hash_pairs
from seqkd.data.vocab import Vocab
from seqkd.models.marian import load_model, log_probs, training_logits, weights_hash
from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, hash_lines, make_folder, read_json, sync_replace, write_json

log = logging.getLogger(__name__)


def check_same_vocab(teacher_dir: str | Path, vocab: Vocab) -> Vocab:
    """Word-KD compares distributions id by id: the teacher must tokenize exactly like the student."""
    tv = Vocab(teacher_dir)
    if tv.fingerprint() != vocab.fingerprint():
        raise SeqkdError(
            f"{teacher_dir}: the teacher's vocabulary ({tv.size} ids, fingerprint {tv.fingerprint()}) differs from "
            f"the student's ({vocab.size} ids, {vocab.fingerprint()}); Word-KD needs a shared vocabulary: train the "
            "student with --vocab pointing at the teacher's folder, or use Seq-KD, which works across vocabularies")
    return tv


def online_teacher(teacher_dir: str | Path, vocab: Vocab):
    """Teacher forward pass per batch, under no_grad: returns logits (B, T, V)."""
    check_same_vocab(teacher_dir, vocab)
    teacher = load_model(teacher_dir)
    for p in teacher.parameters():
        p.requires_grad_(False)

    def fn(indices: list[int], batch: dict) -> torch.Tensor:
        teacher.to(batch["input_ids"].device)
        with torch.no_grad():
            return training_logits(teacher, batch).float()

    return fn


def build_topk_cache(teacher_dir: str | Path, src: list[str], tgt: list[str], out_dir: str | Path, k: int = 8,
                     temperature: float = 1.0, shard_size: int = 2000, max_tokens: int = 4096,
                     progress: bool = True) -> Path:
    """Teacher-forced top-k probabilities (renormalised over the k) for every target token of (src, tgt).

    Shards `shard-00000.safetensors` hold probs (N_tok, k) float16, ids (N_tok, k) uint16 (int32 for
    vocabularies over 65,536 ids; caches of earlier versions hold int32) and offsets (n + 1,) int64; a
    rerun skips finished shards; `manifest.json` is written last.
    """
    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    vocab = Vocab(teacher_dir)
    ident = {"teacher_weights": weights_hash(teacher_dir), "vocab": vocab.fingerprint(), "k": k,
             "temperature": temperature, "input_sha256": hash_lines(src, tgt), "pairs": len(src),
             "shard_size": shard_size}
    if (out / "manifest.json").exists():
        if read_json(out / "manifest.json") == ident:
            return out
        raise SeqkdError(f"{out / 'manifest.json'}: a cache for another teacher, input or k; use another folder")
    make_folder(out)
    teacher = load_model(teacher_dir)
    src_ids, tgt_ids = vocab.encode_src(src), vocab.encode_tgt(tgt)
    n_shards = (len(src) + shard_size - 1) // shard_size
    id_dtype = np.uint16 if vocab.size <= 1 << 16 else np.int32
    bar = tqdm(total=len(src), unit="sent", desc="top-k cache", disable=not progress, dynamic_ncols=True)
    for s in range(n_shards):
        path = out / f"shard-{s:05d}.safetensors"
        lo, hi = s * shard_size, min(len(src), (s + 1) * shard_size)
        if path.exists():
            bar.update(hi - lo)
            continue
        per_ex: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        local = list(range(lo, hi))
        for b_idx in token_batches([len(src_ids[i]) for i in local], [len(tgt_ids[i]) for i in local], max_tokens):
            ex = [local[j] for j in b_idx]
            b = collate([src_ids[i] for i in ex], [tgt_ids[i] for i in ex], vocab.pad_id)
            with torch.no_grad():
                logits = training_logits(teacher, b)
            lp = log_probs(logits / temperature, vocab.pad_id)
            top, ids = lp.topk(k, dim=-1)
            probs = torch.softmax(top, dim=-1)  # renormalised over the k
            for row, i in enumerate(ex):
                n = len(tgt_ids[i])
                per_ex[i] = (probs[row, :n].half().numpy(), ids[row, :n].numpy().astype(id_dtype))
            bar.update(len(ex))
        lens = [len(tgt_ids[i]) for i in local]
        offsets = np.cumsum([0] + lens, dtype=np.int64)
        tmp = path.with_suffix(".tmp")
        save_file({"probs": np.concatenate([per_ex[i][0] for i in local]),
                   "ids": np.concatenate([per_ex[i][1] for i in local]), "offsets": offsets}, str(tmp))
        faults.point("topk_shard")
        sync_replace(tmp, path)
    bar.close()
    write_json(out / "manifest.json", ident)
    return out


def _check_cache_params(mpath: Path, m: dict, temperature: float, k: int | None) -> None:
    if float(m.get("temperature", 1.0)) != float(temperature):
        raise SeqkdError(f"{mpath}: top-k cache was built at temperature {m.get('temperature', 1.0)} but this run "
                         f"uses train.loss.temperature={temperature}; rebuild it or use the same temperature")
    if k is not None and m["k"] != k:
        raise SeqkdError(f"{mpath}: top-k cache holds k={m['k']} but this run asks for k={k}; rebuild it")


def offline_teacher(cache_dir: str | Path, vocab: Vocab, input_sha256: str, temperature: float = 1.0,
                    k: int | None = None):
    """TeacherFn reading a top-k cache built for exactly the training pairs whose text hashes to
    `input_sha256` (`tokdata.hash_pairs`), for this vocabulary, at the training run's KD `temperature`
    and (when given) top-`k`."""
    cache = Path(cache_dir)
    mpath = cache / "manifest.json"
    if not mpath.exists():
        raise SeqkdError(f"{mpath}: top-k cache not found or unfinished (run `seqkd distill --mode topk`)")
    m = read_json(mpath, ["vocab", "input_sha256"])
    if m["vocab"] != vocab.fingerprint():
        raise SeqkdError(f"{cache}: top-k cache was built with another vocabulary than the student's")
    if m["input_sha256"] != input_sha256:
        raise SeqkdError(f"{cache}: top-k cache was built for other training data")
    _check_cache_params(mpath, m, temperature, k)
    size = m["shard_size"]
    shards = [safe_open(str(cache / f"shard-{s:05d}.safetensors"), framework="numpy")
              for s in range((m["pairs"] + size - 1) // size)]
    offsets = [f.get_tensor("offsets") for f in shards]  # (shard pairs + 1,) int64 each: small
    k = m["k"]

    def fn(indices: list[int], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = batch["labels"].shape
        p = torch.zeros(B, T, k)
        x = torch.zeros(B, T, k, dtype=torch.long)
        for row, i in enumerate(indices):
            s, j = divmod(i, size)
            a, b = int(offsets[s][j]), int(offsets[s][j + 1])
            if b - a != int(batch["labels"][row].ne(IGNORE).sum()):
                raise SeqkdError(f"{cache}: cached length of example {i} does not match its tokenization")
            p[row, : b - a] = torch.from_numpy(shards[s].get_slice("probs")[a:b].astype(np.float32))
            x[row, : b - a] = torch.from_numpy(shards[s].get_slice("ids")[a:b].astype(np.int64))
        return p, x

    return fn


def word_kd_teacher(cfg, vocab, data):
    """Word-KD targets per batch: a cached top-k or the teacher online (None without Word-KD)."""
    if cfg.train.loss.word_kd_alpha <= 0:
        return None
    if cfg.kd.topk_cache:
        return offline_teacher(cfg.kd.topk_cache, vocab, hash_pairs(data.stream()),
                               temperature=cfg.train.loss.temperature)
    return online_teacher(cfg.kd.teacher, vocab)
