"""The parallel input of `seqkd distill`, read by index: lists in memory (the Python API) or two plain
text files through a line-offset index (the CLI), so a worker holds one shard's lines at a time.

Both give the same `digest()` (`fsutil.hash_lines` of the source, then the reference lines) and the
same lines, so a folder started from lists can be finished from files and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from seqkd.data.corpus import CleanStats, decode_line, keep_pair, parallel_lines
from seqkd.data.load import explicit_files, load_pairs
from seqkd.util.fsutil import SeqkdError, hash_lines, sync_replace

log = logging.getLogger(__name__)


class Pairs(Protocol):
    """Indexed parallel input: the lines of given (ascending) pair indices, and the whole input's hash."""

    def __len__(self) -> int: ...

    def digest(self) -> str: ...

    def source(self, idx: Iterable[int]) -> list[str]: ...

    def reference(self, idx: Iterable[int]) -> list[str]: ...

    def keep_index(self) -> None:
        """Keep what was learnt about the input for the next worker (FilePairs' line index)."""


class ListPairs:
    """Source and reference lines held in lists."""

    def __init__(self, src: Sequence[str], ref: Sequence[str]):
        if len(src) != len(ref):
            raise SeqkdError(f"source has {len(src)} lines but reference has {len(ref)}")
        self.src, self.ref = src, ref

    def __len__(self) -> int:
        return len(self.src)

    def digest(self) -> str:
        return hash_lines(self.src, self.ref)

    def source(self, idx: Iterable[int]) -> list[str]:
        return [self.src[i] for i in idx]

    def reference(self, idx: Iterable[int]) -> list[str]:
        return [self.ref[i] for i in idx]

    def keep_index(self) -> None:
        pass  # nothing to keep: the lines are in memory


def _keep(s: str, t: str, max_chars: int, max_ratio: float) -> bool:
    """`corpus.keep_pair`, the one cleaning rule."""
    return keep_pair(s, t, CleanStats(0, 0, 0, 0, max_chars=max_chars, max_ratio=max_ratio))


INDEX_PREFIX = ".input-index-"  # cached line index of a distillation's input, in its output folder


class FilePairs:
    """Two line-aligned plain UTF-8 files, cleaned as `load.load_pairs` cleans training pairs (the
    first `max_pairs` pairs, then `clean_pairs`' rule). Holds only the kept lines' byte offsets.

    With `cache_dir`, the index and the digest are kept there after the first pass over the files
    (`.input-index-KEY.safetensors`, KEY from both files' path, size, mtime and inode and the cleaning
    settings), so that every further worker of a distillation skips that O(N) pass."""

    def __init__(self, src_path: str | Path, ref_path: str | Path, max_pairs: int = 0, max_chars: int = 1000,
                 max_ratio: float = 9.0, cache_dir: str | Path | None = None):
        self.paths = (Path(src_path), Path(ref_path))
        if any(p.suffix == ".gz" for p in self.paths):  # its lines are read back by byte offset
            raise SeqkdError(f"{self.paths[0]}, {self.paths[1]}: a line-offset index needs plain text files, not .gz")
        self._digest = ""
        self._cache = None
        if cache_dir is not None:
            self._cache = Path(cache_dir) / f"{INDEX_PREFIX}{self._key(max_pairs, max_chars, max_ratio)}.safetensors"
            if self._load_cache():
                return
        self._off = (array("q"), array("q"))
        self._lineno = array("q")  # 1-based line number of each kept pair, for error messages
        self._src_hash = hashlib.sha256()  # the source side of `digest`, hashed on the way
        total = 0
        for line in parallel_lines(*self.paths):
            total = line.no
            if (not max_pairs or total <= max_pairs) and _keep(line.src, line.tgt, max_chars, max_ratio):
                self._off[0].append(line.src_offset)
                self._off[1].append(line.tgt_offset)
                self._lineno.append(total)
                self._src_hash.update(line.src.encode("utf-8") + b"\n")
        log.info("training data: kept %d of %d pairs (%s)", len(self), total, self.paths[0])

    def _key(self, max_pairs: int, max_chars: int, max_ratio: float) -> str:
        try:
            stats = [os.stat(p) for p in self.paths]
        except FileNotFoundError as e:
            raise SeqkdError(f"{e.filename}: file not found") from None
        files = [[str(p.resolve()), s.st_size, s.st_mtime_ns, s.st_ino] for p, s in zip(self.paths, stats)]
        return hashlib.sha256(json.dumps([1, files, max_pairs, max_chars, max_ratio]).encode()).hexdigest()[:16]

    def _load_cache(self) -> bool:
        """Take the index and digest from the cache file; False if there is none (or it is unreadable)."""
        from safetensors import SafetensorError, safe_open

        if not self._cache.exists():
            return False
        try:
            with safe_open(str(self._cache), framework="np") as f:
                self._digest = f.metadata()["digest"]
                self._off = (f.get_tensor("src"), f.get_tensor("ref"))
                self._lineno = f.get_tensor("lineno")
        except (OSError, KeyError, SafetensorError):
            return False  # torn or foreign: build it again
        log.info("training data: %d pairs, line index from %s", len(self), self._cache)
        return True

    def _save_cache(self) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        tmp = self._cache.with_name(f"{self._cache.name}.{os.getpid()}.tmp")
        try:
            save_file({"src": np.asarray(self._off[0], dtype=np.int64), "ref": np.asarray(self._off[1], dtype=np.int64),
                       "lineno": np.asarray(self._lineno, dtype=np.int64)}, str(tmp), metadata={"digest": self._digest})
            sync_replace(tmp, self._cache)
        except OSError:  # a cache only: a read-only or full output folder must not stop the work
            tmp.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._lineno)

    def _read(self, side: int, idx: Iterable[int]) -> list[str]:
        out = []
        with open(self.paths[side], "rb") as f:
            for i in idx:
                f.seek(int(self._off[side][i]))
                out.append(decode_line(f.readline(), self.paths[side], int(self._lineno[i])))
        return out

    def source(self, idx: Iterable[int]) -> list[str]:
        return self._read(0, idx)

    def reference(self, idx: Iterable[int]) -> list[str]:
        return self._read(1, idx)

    def digest(self) -> str:
        """`hash_lines(source, reference)`: the source side was hashed while indexing; the reference is read now
        (once: then cached, in memory and in `cache_dir`)."""
        if self._digest:
            return self._digest
        h = self._src_hash.copy()
        h.update(b"\x00")
        for s in range(0, len(self), 10_000):
            for ln in self.reference(range(s, min(len(self), s + 10_000))):
                h.update(ln.encode("utf-8") + b"\n")
        h.update(b"\x00")
        self._digest = h.hexdigest()[:16]
        return self._digest

    def keep_index(self) -> None:
        """Write the index and digest to `cache_dir` (distill_worker: once the output folder is known to be
        this input's and unfinished), unless they came from there."""
        if self._cache is not None and not self._cache.exists():
            self.digest()
            self._save_cache()


def training_pairs(dc, cache_dir: str | Path | None = None) -> Pairs:
    """A `DataConfig`'s training pairs: plain explicit files through a line-offset index (a worker holds
    one shard's lines at a time; cached in `cache_dir`), else the lists `load_pairs` reads (a named
    corpus, .gz files)."""
    files = explicit_files(dc, "train")
    if files and not any(Path(f).suffix == ".gz" for f in files):
        return FilePairs(*files, max_pairs=dc.max_train_pairs, max_chars=dc.max_chars, max_ratio=dc.max_ratio,
                         cache_dir=cache_dir)
    return ListPairs(*load_pairs(dc, "train"))
