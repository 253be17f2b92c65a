"""The parallel input of `seqkd distill`, read by index: lists in memory (the Python API) or two plain
text files through a line-offset index (the CLI), so a worker holds one shard's lines at a time.

Both give the same `digest()` (`fsutil.hash_lines` of the source, then the reference lines) and the
same lines, so a folder started from lists can be finished from files and the other way round.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from seqkd.corpus import CleanStats, decode_line, keep_pair
from seqkd.fsutil import SeqkdError, hash_lines

log = logging.getLogger(__name__)


class Pairs(Protocol):
    """Indexed parallel input: the lines of given (ascending) pair indices, and the whole input's hash."""

    def __len__(self) -> int: ...

    def digest(self) -> str: ...

    def source(self, idx: Iterable[int]) -> list[str]: ...

    def reference(self, idx: Iterable[int]) -> list[str]: ...


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


def _keep(s: str, t: str, max_chars: int, max_ratio: float) -> bool:
    """`corpus.keep_pair`, the one cleaning rule."""
    return keep_pair(s, t, CleanStats(0, 0, 0, 0, max_chars=max_chars, max_ratio=max_ratio))


class FilePairs:
    """Two line-aligned plain UTF-8 files, cleaned as `data.load_pairs` cleans training pairs (the
    first `max_pairs` pairs, then `clean_pairs`' rule). Holds only the kept lines' byte offsets."""

    def __init__(self, src_path: str | Path, ref_path: str | Path, max_pairs: int = 0, max_chars: int = 1000,
                 max_ratio: float = 9.0):
        self.paths = (Path(src_path), Path(ref_path))
        self._off = (array("q"), array("q"))
        self._lineno = array("q")  # 1-based line number of each kept pair, for error messages
        self._src_hash = hashlib.sha256()  # the source side of `digest`, hashed on the way
        total = 0
        try:
            with open(self.paths[0], "rb") as fs, open(self.paths[1], "rb") as ft:
                pos = [0, 0]
                while True:
                    raw_s, raw_t = fs.readline(), ft.readline()
                    if not raw_s or not raw_t:
                        if raw_s or raw_t:
                            self._misaligned(total, fs, raw_s, ft, raw_t)
                        break
                    total += 1
                    s, t = decode_line(raw_s, self.paths[0], total), decode_line(raw_t, self.paths[1], total)
                    if (not max_pairs or total <= max_pairs) and _keep(s, t, max_chars, max_ratio):
                        self._off[0].append(pos[0])
                        self._off[1].append(pos[1])
                        self._lineno.append(total)
                        self._src_hash.update(s.encode("utf-8") + b"\n")
                    pos[0] += len(raw_s)
                    pos[1] += len(raw_t)
        except FileNotFoundError as e:
            raise SeqkdError(f"{e.filename}: file not found") from None
        log.info("training data: kept %d of %d pairs (%s)", len(self), total, self.paths[0])

    def _misaligned(self, total: int, fs, raw_s: bytes, ft, raw_t: bytes) -> None:
        n_src = total + (1 + sum(1 for _ in fs) if raw_s else 0)
        n_ref = total + (1 + sum(1 for _ in ft) if raw_t else 0)
        raise SeqkdError(f"{self.paths[0]} has {n_src} lines but {self.paths[1]} has {n_ref} "
                         "(files must be aligned line by line)")

    def __len__(self) -> int:
        return len(self._lineno)

    def _read(self, side: int, idx: Iterable[int]) -> list[str]:
        out = []
        with open(self.paths[side], "rb") as f:
            for i in idx:
                f.seek(self._off[side][i])
                out.append(decode_line(f.readline(), self.paths[side], self._lineno[i]))
        return out

    def source(self, idx: Iterable[int]) -> list[str]:
        return self._read(0, idx)

    def reference(self, idx: Iterable[int]) -> list[str]:
        return self._read(1, idx)

    def digest(self) -> str:
        """`hash_lines(source, reference)`: the source side was hashed while indexing; the reference is read now."""
        h = self._src_hash.copy()
        h.update(b"\x00")
        for s in range(0, len(self), 10_000):
            for ln in self.reference(range(s, min(len(self), s + 10_000))):
                h.update(ln.encode("utf-8") + b"\n")
        h.update(b"\x00")
        return h.hexdigest()[:16]


def training_pairs(dc) -> Pairs:
    """A `DataConfig`'s training pairs: plain explicit files through a line-offset index (a worker holds
    one shard's lines at a time), else the lists `load_pairs` reads (a named corpus, .gz files)."""
    from seqkd.data import load_pairs

    files = (f"{dc.distilled}/train.src", f"{dc.distilled}/train.tgt") if dc.distilled else (dc.train_src, dc.train_tgt)
    if all(files) and not any(Path(f).suffix == ".gz" for f in files):
        return FilePairs(*files, max_pairs=dc.max_train_pairs, max_chars=dc.max_chars, max_ratio=dc.max_ratio)
    return ListPairs(*load_pairs(dc, "train"))
