"""Parallel corpora: locate (or download and verify) Multi30k, read it strictly, clean training pairs."""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path
from typing import BinaryIO, NamedTuple

from seqkd.util.fsutil import SeqkdError, atomic_open, sha256_file  # noqa: F401 (sha256_file re-exported)

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{split}.{lang}.gz"
MULTI30K_LANGS = ("en", "de", "fr", "cs")
MULTI30K_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("en", "de", "fr", "cs"),
    "val": ("en", "de", "fr", "cs"),
    "test_2016_flickr": ("en", "de", "fr", "cs"),
    "test_2017_flickr": ("en", "de", "fr"),
    "test_2017_mscoco": ("en", "de", "fr"),
    "test_2018_flickr": ("en", "de", "fr", "cs"),
}
MULTI30K_SHA256: dict[str, str] = {
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
}
KNOWN_CORPORA = ("multi30k",)
SUMS_FILE = "SHA256SUMS"
_DOWNLOAD_TIMEOUT_S = 60


def decode_line(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """One raw line without its terminator (``\\n`` or ``\\r\\n``), strictly UTF-8; a NUL byte or
    invalid UTF-8 is a SeqkdError naming file and line."""
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if b"\0" in raw:
        raise SeqkdError(f"{path}:{lineno}: NUL byte in line (byte offset {raw.index(0)}; a binary file?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqkdError(f"{path}:{lineno}: invalid UTF-8 (byte offset {e.start} in line)") from None


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The raw lines (terminators kept) of a plain or gzipped (``.gz`` suffix) file, one at a time; a missing,
    unreadable or corrupt file is a SeqkdError naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except FileNotFoundError:
        raise SeqkdError(f"{path}: file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise SeqkdError(f"{path}: not a valid gzip file ({e or type(e).__name__})") from None
    except OSError as e:
        raise SeqkdError(f"{path}: cannot read ({e.strerror or e})") from None


def iter_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a plain or gzipped (``.gz`` suffix) UTF-8 text file, one at a time.

    Only the line terminator (``\\n`` or ``\\r\\n``) is removed; empty lines are kept so that
    parallel files stay aligned. Decoding is strict and done line by line, so an error names the
    exact line.
    """
    path = Path(path)
    for lineno, raw in enumerate(_raw_lines(path), start=1):
        yield decode_line(raw, path, lineno)


def read_stream(f: BinaryIO, name: str) -> list[str]:
    """The lines of a binary stream (stdin), read as `iter_lines` reads a file: a line ends at ``\\n`` (or
    ``\\r\\n``) only, never at the other separators of `str.splitlines` (``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``,
    ``\\x85``, U+2028, U+2029, a lone ``\\r``), so N lines in give N lines out; `name` is the error messages' file."""
    return [decode_line(raw, name, lineno) for lineno, raw in enumerate(f, start=1)]


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a file (`iter_lines`) in a list."""
    return list(iter_lines(path))


class Line(NamedTuple):
    """One line of two line-aligned files (`parallel_lines`)."""

    no: int  # 1-based line number
    src: str
    tgt: str
    src_offset: int  # where the line starts in the source file, in bytes (of the uncompressed text for .gz)
    tgt_offset: int


def misaligned(src_path: str | os.PathLike, n_src: int, tgt_path: str | os.PathLike, n_tgt: int) -> SeqkdError:
    """The error for parallel files of different lengths, naming both counts."""
    return SeqkdError(f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt} (files must be aligned line by line)")


def parallel_lines(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> Iterator[Line]:
    """The one reader of parallel text: the lines of two line-aligned files (plain or gzipped), streamed side by
    side, each decoded as `iter_lines` decodes it (a bad line is a SeqkdError naming file and line). Files of
    different lengths are a SeqkdError naming both line counts (`misaligned`), raised when the shorter ends; the
    rest of the longer is read (and checked) to count it."""
    paths = Path(src_path), Path(tgt_path)
    raws = _raw_lines(paths[0]), _raw_lines(paths[1])
    offsets = [0, 0]
    for no, (raw_s, raw_t) in enumerate(zip_longest(*raws), start=1):
        if raw_s is None or raw_t is None:
            side = 0 if raw_s is not None else 1  # the longer file: its line `no` is read, the rest follows
            last = no - 1
            for last, raw in enumerate(chain([raw_s if side == 0 else raw_t], raws[side]), start=no):
                decode_line(raw, paths[side], last)
            counts = (last, no - 1) if side == 0 else (no - 1, last)
            raise misaligned(src_path, counts[0], tgt_path, counts[1])
        yield Line(no, decode_line(raw_s, paths[0], no), decode_line(raw_t, paths[1], no), offsets[0], offsets[1])
        offsets[0] += len(raw_s)
        offsets[1] += len(raw_t)


def iter_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Pairs of two line-aligned files, streamed (`parallel_lines`)."""
    for line in parallel_lines(src_path, tgt_path):
        yield line.src, line.tgt


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The lines of two line-aligned files in two lists (`parallel_lines`: SeqkdError if their line counts
    differ)."""
    src: list[str] = []
    tgt: list[str] = []
    for line in parallel_lines(src_path, tgt_path):
        src.append(line.src)
        tgt.append(line.tgt)
    return src, tgt


@dataclass
class CleanStats:
    """What `clean_pairs` kept, and how many pairs it dropped for each reason.

    ``max_chars`` and ``max_ratio`` record the limits used, for the message.
    """

    kept: int
    empty: int
    too_long: int
    ratio: int
    max_chars: int = 1000
    max_ratio: float = 9.0

    @property
    def total(self) -> int:
        """Number of pairs before cleaning."""
        return self.kept + self.empty + self.too_long + self.ratio

    def __str__(self) -> str:
        return (
            f"kept {self.kept} of {self.total} pairs (skipped: {self.empty} empty, "
            f"{self.too_long} over {self.max_chars} chars, "
            f"{self.ratio} with length ratio over {self.max_ratio:g})"
        )


def keep_pair(s: str, t: str, stats: CleanStats) -> bool:
    """True for a usable training pair; else count it under the first reason that applies:
    either side empty or whitespace-only, either side longer than ``max_chars`` characters, or
    ``(longer + 1) / (shorter + 1)`` (character lengths) over ``max_ratio``."""
    ls, lt = len(s), len(t)
    if not s.strip() or not t.strip():
        stats.empty += 1
    elif ls > stats.max_chars or lt > stats.max_chars:
        stats.too_long += 1
    elif (max(ls, lt) + 1) / (min(ls, lt) + 1) > stats.max_ratio:
        stats.ratio += 1
    else:
        stats.kept += 1
        return True
    return False


def clean_pairs(
    src: list[str], tgt: list[str], max_chars: int = 1000, max_ratio: float = 9.0
) -> tuple[list[str], list[str], CleanStats]:
    """Drop unusable training pairs (`keep_pair`; never use this on evaluation data)."""
    if len(src) != len(tgt):
        raise ValueError(f"clean_pairs: {len(src)} source lines but {len(tgt)} target lines")
    out_src: list[str] = []
    out_tgt: list[str] = []
    stats = CleanStats(0, 0, 0, 0, max_chars=max_chars, max_ratio=max_ratio)
    for s, t in zip(src, tgt):
        if keep_pair(s, t, stats):
            out_src.append(s)
            out_tgt.append(t)
    log.info("cleaning: %s", stats)
    return out_src, out_tgt, stats


def data_dir_from_env(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local corpus folder: the explicit argument, else $SEQKD_DATA, else None."""
    chosen = str(data_dir) if data_dir is not None and str(data_dir) else os.environ.get("SEQKD_DATA")
    return Path(chosen).expanduser() if chosen else None


def require_https(url: str, redirected_from: str | None = None) -> None:
    """SeqkdError unless `url` is an https URL with a host: nothing is fetched over http, ftp or
    from a file: URL, and a redirect may not leave https either."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.netloc:
        via = f" (redirected from {redirected_from})" if redirected_from else ""
        raise SeqkdError(f"refusing to download {url}{via}: only https URLs are allowed")


def _fetch(url: str, dest_path: str | os.PathLike) -> None:
    """Download `url` into `dest_path` (overwritten). Module-level so tests can replace it."""
    require_https(url)
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
        final = resp.geturl()
        if final != url:
            require_https(final, redirected_from=url)
        with open(dest_path, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)


def _default_cache_dir() -> Path:
    env = os.environ.get("SEQKD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seqkd" / "multi30k"


def _read_sums(cache: Path) -> dict[str, str]:
    """File name -> sha256 recorded in the cache's SHA256SUMS (sha256sum format)."""
    p = cache / SUMS_FILE
    rows = [line.split() for line in p.read_text(encoding="utf-8").splitlines()] if p.exists() else []
    return {r[1].lstrip("*"): r[0].lower() for r in rows if len(r) == 2}


def _record_sum(cache: Path, fname: str, digest: str) -> None:
    sums = _read_sums(cache)
    sums[fname] = digest
    with atomic_open(cache / SUMS_FILE, "w") as f:
        f.writelines(f"{d}  {n}\n" for n, d in sorted(sums.items()))


def _check_local(path: Path, expected: str, hint: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise SeqkdError(f"{path}: sha256 mismatch (expected {expected}, got {actual}); {hint}")


def _download(url: str, fname: str, cache: Path, expected: str | None) -> Path:
    """Download one file (https only) into a temp file in `cache`; verify it, then rename it into place."""
    require_https(url)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=cache)
    os.close(fd)
    try:
        log.info("downloading %s -> %s", url, cache / fname)
        try:
            _fetch(url, tmp)
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise SeqkdError(
                f"cannot download {url}: {reason}; set SEQKD_DATA or --data-dir to a local copy"
            ) from None
        actual = sha256_file(tmp)
        if expected is not None and actual != expected:
            raise SeqkdError(
                f"downloaded {url}: sha256 mismatch (expected {expected}, got {actual}); "
                "the download was discarded"
            )
        if expected is None:
            with open(tmp, "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    raise SeqkdError(f"downloaded {url}: not a gzip file; the download was discarded")
            log.warning("%s: no pinned checksum; recording sha256 %s in %s", fname, actual, cache / SUMS_FILE)
            _record_sum(cache, fname, actual)
        os.replace(tmp, cache / fname)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return cache / fname


def _cached_file(split: str, lang: str, cache: Path) -> Path:
    """Return the verified cached copy of one file, downloading it first if missing.

    The checksum is the pinned one, else the one recorded in SHA256SUMS on first download.
    """
    fname = f"{split}.{lang}.gz"
    path = cache / fname
    expected = MULTI30K_SHA256.get(fname) or _read_sums(cache).get(fname)
    if not path.exists():
        return _download(MULTI30K_URL.format(split=split, lang=lang), fname, cache, expected)
    if expected is None:  # put there by hand: trust it now, verify it later
        digest = sha256_file(path)
        log.warning("%s: no pinned checksum; recording sha256 %s in %s", path, digest, cache / SUMS_FILE)
        _record_sum(cache, fname, digest)
    else:
        _check_local(path, expected, "delete it to download it again")
    return path


def _validate(name: str, split: str, src: str, tgt: str) -> None:
    if name != "multi30k":
        raise SeqkdError(f"unknown corpus {name!r} (known: {', '.join(KNOWN_CORPORA)})")
    for lang in (src, tgt):
        if lang not in MULTI30K_LANGS:
            raise SeqkdError(f"multi30k has no language {lang!r} (languages: {', '.join(MULTI30K_LANGS)})")
    if src == tgt:
        raise SeqkdError(f"source and target language are both {src!r}")
    valid = [s for s, langs in MULTI30K_SPLITS.items() if src in langs and tgt in langs]
    if split not in valid:
        what = "unknown split" if split not in MULTI30K_SPLITS else "no split"
        raise SeqkdError(
            f"multi30k has {what} {split!r} for {src}-{tgt} (splits for {src}-{tgt}: {', '.join(valid)})"
        )


def corpus_files(
    name: str,
    split: str,
    src: str,
    tgt: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Paths of the verified source and target files of one split of a corpus.

    With a local folder (``data_dir`` or $SEQKD_DATA) the files are read from it and never downloaded;
    otherwise they are downloaded once into ``cache_dir`` ($SEQKD_CACHE, default ~/.cache/seqkd/multi30k).
    Files with a pinned sha256 are always verified; others are trusted on first download.
    """
    _validate(name, split, src, tgt)
    local = data_dir_from_env(data_dir)
    out: list[Path] = []
    for lang in (src, tgt):
        if local is not None:
            path = local / f"{split}.{lang}.gz"
            if not path.is_file():
                raise SeqkdError(f"{path}: file not found (SEQKD_DATA/--data-dir points to {local})")
            expected = MULTI30K_SHA256.get(path.name)
            if expected is not None:
                _check_local(path, expected, "the local copy is corrupt or not the published Multi30k file")
        else:
            cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
            path = _cached_file(split, lang, cache)
        out.append(path)
    return out[0], out[1]
