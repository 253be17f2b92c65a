"""Training pairs as token ids on disk, memory-mapped (as fairseq's indexed datasets).

A token folder holds, for N pairs:
  src.bin, tgt.bin   every pair's ids (ending with `</s>`) back to back; uint16 when the vocabulary
                     has at most 65,536 ids, else int32
  src.off, tgt.off   (N + 1,) int64 start offsets into the .bin files
  src.len, tgt.len   (N,) uint16 lengths in tokens (capped at 65,535), read whole for batching
  meta.json          N, dtype, the vocabulary fingerprint and the text's sha256; written last

Built once by streaming the text in chunks (memory does not grow with the corpus) into a temporary
folder renamed into place, so a killed build leaves nothing under the final name. Training reads
rows with positioned reads (os.pread: no file pages are mapped into the process, so resident memory
does not grow with the rows a run touches); only the lengths (4 bytes a pair) are held in memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from seqkd.data.vocab import Vocab
from seqkd.util.fsutil import SeqkdError, hash_lines, read_json, write_json

FORMAT = 1
CHUNK = 10_000  # lines encoded per SentencePiece call while building


def hash_pairs(pairs: Callable[[], Iterable[tuple[str, str]]]) -> str:
    """`fsutil.hash_lines(source lines, target lines)` of a pair stream, in two streaming passes."""
    return hash_lines((p[0] for p in pairs()), (p[1] for p in pairs()))


def _chunks(it: Iterable[tuple[str, str]], n: int) -> Iterator[list[tuple[str, str]]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


class TokenData:
    """A token folder opened read-only. `src(i)` / `tgt(i)` are int64 numpy arrays of ids; `lens` the
    (N,) uint16 lengths per side."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise SeqkdError(f"{meta_path}: token data not found or unfinished")
        self.meta = read_json(meta_path, ["pairs", "dtype"])
        self.n = int(self.meta["pairs"])
        self.dtype = np.dtype(self.meta["dtype"])
        self._fd: dict[str, tuple[int, int]] = {}
        self.lens: dict[str, np.ndarray] = {}
        for side in ("src", "tgt"):
            self.lens[side] = np.fromfile(self.folder / f"{side}.len", dtype=np.uint16)
            off_size = (self.folder / f"{side}.off").stat().st_size
            if len(self.lens[side]) != self.n or off_size != 8 * (self.n + 1):
                raise SeqkdError(f"{self.folder}: {side} index does not match meta.json ({self.n} pairs)")
            self._fd[side] = (os.open(self.folder / f"{side}.bin", os.O_RDONLY),
                              os.open(self.folder / f"{side}.off", os.O_RDONLY))

    def __len__(self) -> int:
        return self.n

    def __del__(self) -> None:
        for fds in getattr(self, "_fd", {}).values():
            for fd in fds:
                os.close(fd)

    def _row(self, side: str, i: int) -> np.ndarray:
        data, off = self._fd[side]
        a, b = np.frombuffer(os.pread(off, 16, 8 * i), dtype=np.int64)
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(data, int(b - a) * size, int(a) * size), dtype=self.dtype).astype(np.int64)

    def src(self, i: int) -> np.ndarray:
        return self._row("src", int(i))

    def tgt(self, i: int) -> np.ndarray:
        return self._row("tgt", int(i))

    @property
    def input_sha256(self) -> str:
        return self.meta["input_sha256"]


def build(folder: str | Path, pairs: Callable[[], Iterable[tuple[str, str]]], vocab: Vocab,
          input_sha256: str | None = None) -> TokenData:
    """Encode the pairs `pairs()` yields into `folder` (reused when it already holds the same text
    encoded with the same vocabulary). `pairs` is called twice unless `input_sha256` is given."""
    folder = Path(folder)
    digest = input_sha256 or hash_pairs(pairs)
    want = {"format": FORMAT, "vocab": vocab.fingerprint(), "input_sha256": digest}
    if (folder / "meta.json").exists():
        meta = read_json(folder / "meta.json")
        if {k: meta.get(k) for k in want} == want:
            return TokenData(folder)
        shutil.rmtree(folder)
    dtype = np.uint16 if vocab.size <= 1 << 16 else np.int32
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = 0
    files = {f"{s}.{x}": open(tmp / f"{s}.{x}", "wb") for s in ("src", "tgt") for x in ("bin", "off", "len")}
    try:
        pos = {"src": 0, "tgt": 0}
        for side in ("src", "tgt"):
            files[f"{side}.off"].write(np.zeros(1, dtype=np.int64).tobytes())
        for chunk in _chunks(pairs(), CHUNK):
            for k, side in enumerate(("src", "tgt")):
                ids = (vocab.encode_src if side == "src" else vocab.encode_tgt)([p[k] for p in chunk])
                lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                flat = np.fromiter((t for x in ids for t in x), dtype=dtype, count=int(lens.sum()))
                files[f"{side}.bin"].write(flat.tobytes())
                files[f"{side}.off"].write((pos[side] + np.cumsum(lens)).astype(np.int64).tobytes())
                files[f"{side}.len"].write(np.minimum(lens, 65535).astype(np.uint16).tobytes())
                pos[side] += int(lens.sum())
            n += len(chunk)
    finally:
        for f in files.values():
            f.close()
    write_json(tmp / "meta.json", {**want, "pairs": n, "dtype": np.dtype(dtype).name,
                                   "tokens": {"src": pos["src"], "tgt": pos["tgt"]}})
    tmp.rename(folder)
    return TokenData(folder)


def from_lists(folder: str | Path, src: list[str], tgt: list[str], vocab: Vocab) -> TokenData:
    """`build` for pairs already in memory (the pipeline's Multi30k lists)."""
    if len(src) != len(tgt):
        raise SeqkdError(f"source has {len(src)} lines but target has {len(tgt)}")
    return build(folder, lambda: zip(src, tgt), vocab)
