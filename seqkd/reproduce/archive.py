"""The run archive: the portable record of a grid's finished stages, small enough to keep in git.

Layout (plain files, readable without seqkd):

    DIR/stages/<stage>@<identity>.json   one entry per finished stage, written last (atomically): its kind,
                                         clock, machine, and every file it keeps: {path: {sha256, size, gz[, enc]}}
    DIR/blobs/<sha256[:2]>/<sha256>[.f16][.gz]
                                         the files, stored once by content (a tokenizer shared by 40 models
                                         is one blob); weights whose float32 values are all float16 values (the
                                         students', `TrainConfig.round_to`) as float16 safetensors that restore
                                         the original bytes (.f16, `compact`); text, and any file gzip shrinks
                                         by a tenth or more (pruned weights), gzip-compressed (mtime 0: the same
                                         bytes every time); other weights are safetensors as written

An entry with another identity is another stage (other settings) and is never used. Restoring checks
every file's sha256: a truncated or corrupt blob is a one-line error naming it, and nothing of that
entry is restored. An entry keeps a stage's payload (weights, data) only while `KEEP` says so: a model's
weights go once no stage still to run needs them, unless a user needs them (`drop_payload`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import struct
from pathlib import Path

from seqkd.reproduce import compact
from seqkd.util.fsutil import SeqkdError, atomic_open, read_json, write_json

log = logging.getLogger(__name__)

# Working state and caches, remade on demand: never archived. A model folder's CTranslate2 conversions (`ct2`,
# `ct2-int8`, made by decoding) are caches, except in an export stage, whose product they are; a pruning round's
# masks and its model before fine-tuning (`retrain/`) serve only to resume that round.
SKIP_DIRS = ("checkpoints", "shards", "stacked_init", "retrain")
SKIP_FILES = ("stage.json", "stage_hash.txt", "clock.json", "masks.safetensors")  # (stage.json: rewritten on restore)
RECORD_SUFFIXES = (".json", ".jsonl", ".yaml", ".txt")  # small records (a stage's payload is everything else)
TEXT_SUFFIXES = (".jsonl", ".txt", ".src", ".tgt", ".vocab")  # stored gzip-compressed
PAYLOAD_RECORDS = ("train.src", "train.tgt", "vmap.txt")  # text files that are payload, not records


def is_payload(rel: str) -> bool:
    """Whether the file at `rel` (relative to its stage folder) is payload: weights, data, vocabularies."""
    name = rel.rsplit("/", 1)[-1]
    return name in PAYLOAD_RECORDS or not name.endswith(RECORD_SUFFIXES)


def _skipped(rel: Path, kind: str) -> bool:
    parts = rel.parts
    dirs = parts[:-1]
    return (any(p in SKIP_DIRS or p.startswith("round-") or (p.startswith("ct2") and kind != "export") for p in dirs)
            or parts[-1] in SKIP_FILES or parts[-1].endswith((".lock", ".tmp")) or parts[-1].startswith("."))


def _kept(folder: Path, kind: str) -> list[str]:
    """The files of stage folder `folder` that an archive entry can keep (relative POSIX paths, sorted)."""
    rels = (f.relative_to(folder) for f in sorted(folder.rglob("*")) if f.is_file())
    return [r.as_posix() for r in rels if not _skipped(r, kind)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Archive:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry_path(self, name: str, h: str) -> Path:
        return self.root / "stages" / f"{name}@{h}.json"

    def blob_path(self, sha: str, gz: bool, enc: str = "") -> Path:
        return self.root / "blobs" / sha[:2] / (sha + (f".{enc}" if enc else "") + (".gz" if gz else ""))

    def _blob(self, v: dict) -> Path:
        """The blob of a file record {sha256, size, gz[, enc]}."""
        return self.blob_path(v["sha256"], v["gz"], v.get("enc", ""))

    def entry(self, name: str, h: str) -> dict | None:
        """The entry of stage `name` under identity `h`, or None (an entry of other settings is another stage)."""
        p = self.entry_path(name, h)
        if not p.exists():
            return None
        return read_json(p, ["name", "hash", "files", "seconds"], "delete it (the stage then runs again)")

    def has_payload(self, name: str, h: str) -> bool:
        e = self.entry(name, h)
        return e is not None and e.get("payload", True)

    # --- writing -----------------------------------------------------------------------------
    def save(self, name: str, h: str, kind: str, folder: Path, seconds: float, machine: dict,
             payload: bool) -> None:
        """Archive stage folder `folder` (identity `h`): its records, and its payload when `payload`."""
        files = {rel: self._put(folder / rel) for rel in _kept(folder, kind) if payload or not is_payload(rel)}
        write_json(self.entry_path(name, h), {"name": name, "hash": h, "kind": kind, "seconds": seconds,
                                              "machine": machine, "payload": payload, "files": files})

    @staticmethod
    def payload_files(folder: Path, kind: str) -> list[str]:
        """The payload files (weights, data) that `save` would archive from stage folder `folder`."""
        return [rel for rel in _kept(folder, kind) if is_payload(rel)]

    def _put(self, f: Path) -> dict:
        """Store file `f` as a blob (once: content-addressed): float16-exact float32 weights as float16 (`compact`,
        enc "f16"); gzip-compressed where that saves a tenth or more (text; pruned weights, mostly zeros; not dense
        float32 weights)."""
        data = f.read_bytes()
        sha = _sha(data)
        for enc in ("", "f16"):
            for gz in (True, False):
                if self.blob_path(sha, gz, enc).exists():  # a blob, once written, is never rewritten
                    return {"sha256": sha, "size": len(data), "gz": gz, **({"enc": enc} if enc else {})}
        half = compact.pack(data) if f.name.endswith(".safetensors") else None
        body, enc = (half, "f16") if half is not None else (data, "")
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        gz = f.name.endswith(TEXT_SUFFIXES) or len(packed) <= 0.9 * len(body)
        with atomic_open(self.blob_path(sha, gz, enc), "wb", encoding=None) as out:
            out.write(packed if gz else body)
        return {"sha256": sha, "size": len(data), "gz": gz, **({"enc": enc} if enc else {})}

    def drop_payload(self, name: str, h: str) -> None:
        """Keep only the records of stage `name`'s entry (its weights are no longer needed)."""
        e = self.entry(name, h)
        if e is None or not e.get("payload", True):
            return
        e["files"] = {rel: v for rel, v in e["files"].items() if not is_payload(rel)}
        e["payload"] = False
        write_json(self.entry_path(name, h), e)
        log.info("archive: %s keeps its records only", name)
        self.collect()

    def collect(self) -> None:
        """Delete blobs no entry refers to."""
        used = set()
        for p in (self.root / "stages").glob("*.json"):
            used.update(v["sha256"] for v in read_json(p)["files"].values())
        for b in (self.root / "blobs").glob("*/*"):
            if b.name.split(".")[0] not in used:
                b.unlink()

    # --- reading -----------------------------------------------------------------------------
    def restore(self, name: str, h: str, folder: Path) -> dict:
        """Write entry `name`@`h`'s files into `folder` (bit-exact, every sha256 checked first); returns the
        entry. A missing, truncated or corrupt blob raises SeqkdError naming it, before anything is written."""
        e = self.entry(name, h)
        if e is None:
            raise SeqkdError(f"{self.entry_path(name, h)}: no such archive entry")
        blobs = {rel: self._get(v, self.entry_path(name, h)) for rel, v in e["files"].items()}
        tmp = folder.with_name(f".{folder.name}.restore")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, data in blobs.items():
            with atomic_open(tmp / rel, "wb", encoding=None) as out:
                out.write(data)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.replace(folder)
        return e

    def _get(self, v: dict, entry: Path) -> bytes:
        p = self._blob(v)
        try:
            data = p.read_bytes()
            data = gzip.decompress(data) if v["gz"] else data
            data = compact.unpack(data) if v.get("enc") == "f16" else data
        except FileNotFoundError:
            raise SeqkdError(f"{p}: missing from the archive (named by {entry}); restore it or delete the entry") \
                from None
        except (OSError, EOFError, gzip.BadGzipFile, ValueError, KeyError, struct.error) as e:
            raise SeqkdError(f"{p}: corrupt archive file ({e}); delete it and {entry}, then rerun") from None
        if len(data) != v["size"] or _sha(data) != v["sha256"]:
            raise SeqkdError(f"{p}: corrupt or truncated archive file (sha256 differs from {entry}); delete both "
                             "and rerun")
        return data

    def read(self, name: str, h: str, rel: str) -> bytes:
        """One file of entry `name`@`h`, checked."""
        e = self.entry(name, h)
        if e is None:
            raise SeqkdError(f"{self.entry_path(name, h)}: no such archive entry (stage {name} is not archived "
                             "with these settings)")
        if rel not in e["files"]:
            raise SeqkdError(f"{self.entry_path(name, h)}: no file {rel} in this archive entry")
        return self._get(e["files"][rel], self.entry_path(name, h))

    def sizes(self) -> dict[str, dict]:
        """Bytes on disk by stage kind (each blob counted once, under the first kind that refers to it), the
        number of entries and of entries that keep weights; plus "total" and "entries" (the JSON records)."""
        out: dict[str, dict] = {}
        seen: set[str] = set()
        for e in self.clocks():
            k = out.setdefault(e["kind"], {"entries": 0, "with_weights": 0, "bytes": 0})
            k["entries"] += 1
            k["with_weights"] += any(r.endswith((".safetensors", ".bin")) for r in e["files"])
            for v in e["files"].values():
                if v["sha256"] not in seen:
                    seen.add(v["sha256"])
                    k["bytes"] += self._blob(v).stat().st_size
        records = sum(p.stat().st_size for p in (self.root / "stages").glob("*.json"))
        out["total"] = {"bytes": records + sum(k["bytes"] for k in out.values()), "entries_bytes": records}
        return out

    def clocks(self) -> list[dict]:
        """Every entry's (name, kind, seconds, machine), for time estimates."""
        return [read_json(p) for p in sorted((self.root / "stages").glob("*.json"))]
