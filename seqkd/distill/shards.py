"""Shards as the unit of work of `seqkd distill`: claimed atomically by any number of workers (torchrun
ranks, Slurm array tasks, processes on several machines sharing the folder), then checked and merged.

Files in `shards/` for shard k (the input indices idx[k * shard_size: (k + 1) * shard_size]):
  shard-0000k.jsonl         finished: one {"i", "hyp", "score"[, "rank", "sim"]} row per pair in input
                            order, renamed into place; never redone
  shard-0000k.claim         created with O_CREAT|O_EXCL by the worker that takes the shard, which holds a
                            POSIX lock on it (fcntl.lockf, honoured over NFS) while it translates and
                            removes it once the shard is finished. A claim whose lock can be taken is a
                            dead worker's: the taker owns the shard from then on.
  .shard-0000k.jsonl.*.tmp  rows being written (atomic_open); the next owner removes a dead worker's
The merge runs under the output folder's `.distill.lock` (POSIX lock): exactly one worker writes train.src,
train.tgt and manifest.json (the manifest last, each atomically); a later one finds the manifest and
returns it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqkd.data.pairs import INDEX_PREFIX, Pairs
from seqkd.distill.config import DistillConfig
from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, atomic_open, locked, read_json, write_json

log = logging.getLogger(__name__)


LOCK = ".distill.lock"  # in the output folder: the merge, and the teacher's one-time CTranslate2 conversion


def shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"shard-{k:05d}.jsonl"


def claim_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"shard-{k:05d}.claim"


def unfinished(shard_dir: Path, n_shards: int) -> list[int]:
    """Shards without their final file."""
    return [k for k in range(n_shards) if not shard_path(shard_dir, k).exists()]


@dataclass
class Claim:
    """A held claim on one shard: the lock lives as long as `fd` is open."""

    path: Path
    fd: int
    previous: str  # the claim file's text when taken over from a dead worker ("" for a fresh claim)

    def release(self, finished: bool) -> None:
        """Drop the lock; a finished shard's claim file is removed (an unfinished one stays, free to take)."""
        if finished:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _open_claim(path: Path) -> tuple[int, bool] | None:
    """(fd, fresh): the claim file created now, or the existing one; None if it vanished meanwhile."""
    try:
        return os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), False
    except FileNotFoundError:
        return None  # its owner just finished the shard and removed the claim


def try_claim(shard_dir: Path, k: int) -> Claim | None:
    """Take shard k unless it is finished or a live worker holds it."""
    final, path = shard_path(shard_dir, k), claim_path(shard_dir, k)
    if final.exists() or (opened := _open_claim(path)) is None:
        return None
    fd, fresh = opened
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN / EACCES: held by a live worker
        os.close(fd)
        return None
    if final.exists():  # finished between the first look and the lock: the claim file is garbage
        path.unlink(missing_ok=True)
        os.close(fd)
        return None
    previous = "" if fresh else os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "?"
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
    for stale in shard_dir.glob(f".{final.name}.*.tmp"):  # a dead owner's rows in flight
        stale.unlink(missing_ok=True)
    return Claim(path, fd, previous)


def read_shard(path: Path, expected: Sequence[int], seq_inter: bool) -> Iterator[dict]:
    """The rows of a finished shard, checked as they are read: each a JSON object on a line ending in a
    newline, with the needed fields, and the `i` values exactly `expected`, in order."""
    keys = ("i", "hyp", "score") + (("rank", "sim") if seq_inter else ())
    n = 0
    if not path.exists():
        raise SeqkdError(f"{path}: shard missing")
    with open(path, encoding="utf-8", newline="\n") as f:
        try:
            for n, line in enumerate(f, start=1):
                yield _check_row(line, f"{path}:{n}", keys, expected, n)
        except UnicodeDecodeError:
            raise SeqkdError(f"{path}:{n + 1}: invalid UTF-8 (corrupt shard)") from None
    if n < len(expected):
        raise SeqkdError(f"{path}: {n} rows where {len(expected)} were expected (truncated shard)")


def _check_row(line: str, where: str, keys: tuple[str, ...], expected: Sequence[int], n: int) -> dict:
    if not line.endswith("\n"):
        raise SeqkdError(f"{where}: last line cut short (truncated shard)")
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise SeqkdError(f"{where}: not a JSON row (corrupt shard)") from None
    if not isinstance(row, dict) or any(k not in row for k in keys) or not isinstance(row["hyp"], str):
        raise SeqkdError(f"{where}: not a distillation row with {', '.join(keys)} (corrupt shard)")
    if n > len(expected):
        raise SeqkdError(f"{where}: row beyond the {len(expected)} expected (misaligned shard)")
    if row["i"] != expected[n - 1]:
        raise SeqkdError(f"{where}: row for input {row['i']} where input {expected[n - 1]} belongs "
                         "(misaligned shard)")
    return row


@dataclass
class _Scan:
    """What the merge learns from a first pass over the shards: which rows it keeps, and the means."""

    keep: np.ndarray  # bool per row, rows in shard order
    dropped: dict
    means: dict


def _scan(shard_dir: Path, pairs: Pairs, shards: Sequence[Sequence[int]], cfg: DistillConfig) -> _Scan:
    """Check every shard and decide the kept rows (empty sides, length ratio, the worst scores)."""
    seq_inter = cfg.mode == "seq_inter"
    n = sum(len(part) for part in shards)
    scores, sims = np.empty(n), np.empty(n if seq_inter else 0)
    keep, ratio_ok = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    rank_total, pos = 0, 0
    for k, part in enumerate(shards):
        src = pairs.source(part)
        for j, row in enumerate(read_shard(shard_path(shard_dir, k), part, seq_inter)):
            scores[pos] = row["score"]
            if seq_inter:
                sims[pos], rank_total = row["sim"], rank_total + row["rank"]
            keep[pos] = bool(row["hyp"].strip() and src[j].strip())
            if cfg.max_len_ratio:
                a, b = len(src[j]) + 1, len(row["hyp"]) + 1
                ratio_ok[pos] = max(a / b, b / a) <= cfg.max_len_ratio
            pos += 1
    dropped = {"empty": int(n - keep.sum()), "length_ratio": 0, "low_score": 0}
    if cfg.max_len_ratio:
        dropped["length_ratio"] = int((keep & ~ratio_ok).sum())
        keep &= ratio_ok
    if cfg.filter_worst:
        kept = np.flatnonzero(keep)  # rows in input order, so a stable sort breaks score ties by input index
        n_drop = int(len(kept) * cfg.filter_worst + 1e-9)  # 100 x 0.29 is 28.999999999999996 in floats
        keep[kept[np.argsort(scores[kept], kind="stable")[:n_drop]]] = False
        dropped["low_score"] = n_drop
    # builtin sum over floats, in row order: the same value as summing the rows' scores one by one
    means = {"mean_teacher_score": sum(map(float, scores)) / max(1, n)}
    if seq_inter:
        means |= {"mean_similarity": sum(map(float, sims)) / max(1, n), "mean_rank": rank_total / max(1, n)}
    return _Scan(keep, dropped, means)


def _write(out: Path, pairs: Pairs, shards: Sequence[Sequence[int]], keep: np.ndarray, seq_inter: bool) -> None:
    """Stream the kept rows, shard by shard, into train.src / train.tgt (both renamed into place at the end)."""
    pos = 0
    with atomic_open(out / "train.src") as fs, atomic_open(out / "train.tgt") as ft:
        for k, part in enumerate(shards):
            src = pairs.source(part)
            for j, row in enumerate(read_shard(shard_path(out / "shards", k), part, seq_inter)):
                if keep[pos]:
                    fs.write(src[j].replace("\n", " ") + "\n")
                    ft.write(row["hyp"].replace("\n", " ") + "\n")
                pos += 1
            faults.point("merge_write")


def merge(out: Path, pairs: Pairs, shards: Sequence[Sequence[int]], ident: dict, cfg: DistillConfig) -> dict:
    """Check every shard, then write train.src, train.tgt and manifest.json; returns the manifest.

    Exactly one worker merges (the others wait for the lock and get the manifest it wrote). A missing,
    truncated, corrupt or misaligned shard raises a SeqkdError naming it, and no final file is left."""
    shard_dir, manifest_path = out / "shards", out / "manifest.json"
    with locked(out / LOCK):
        if manifest_path.exists():
            return read_json(manifest_path)
        try:
            if missing := unfinished(shard_dir, len(shards)):
                raise SeqkdError(f"{shard_path(shard_dir, missing[0])}: shard missing ({len(missing)} of "
                                 f"{len(shards)} shards unfinished; run the workers again to finish them)")
            scan = _scan(shard_dir, pairs, shards, cfg)
            _write(out, pairs, shards, scan.keep, cfg.mode == "seq_inter")
        except SeqkdError:
            for name in ("train.src", "train.tgt"):  # an earlier merge's, killed before its manifest
                (out / name).unlink(missing_ok=True)
            raise
        manifest = {**ident, "pairs": int(scan.keep.sum()), "dropped": scan.dropped, **scan.means}
        write_json(manifest_path, manifest)
        for stale in shard_dir.glob("*.claim"):  # left by workers that found a shard finished meanwhile
            stale.unlink(missing_ok=True)
        for index in out.glob(f"{INDEX_PREFIX}*"):  # the input's line index, cached for the workers
            index.unlink(missing_ok=True)
    log.info("distilled %d pairs into %s (dropped: %s)", manifest["pairs"], out, scan.dropped)
    return manifest
