"""Errors users see, and atomic file writes (temp file + fsync + rename)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from seqkd.util import faults

_UMASK = os.umask(0)  # read once at import: os.umask can only be read by setting it, which races with threads
os.umask(_UMASK)


class SeqkdError(Exception):
    """An error caused by the user's input or environment; the CLI prints it on one line and exits 2."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(e: BaseException) -> bool:
    """A full disk, whether raised by Python (OSError ENOSPC/EDQUOT) or by a native writer
    (safetensors, CTranslate2) that reports it only in its message."""
    if isinstance(e, OSError):
        return e.errno in NO_SPACE
    return "No space left on device" in str(e) or "StorageFull" in str(e)


def no_space(path: str | os.PathLike | None) -> SeqkdError:
    """The one-line error for a full disk (or quota): finished work is kept, a rerun resumes."""
    where = f"{path}: " if path else ""
    return SeqkdError(f"{where}no space left on device; free some space and rerun the same "
                      "command: finished work is kept and the run resumes")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it onto `path`.

    On an exception the temporary file is removed and `path` is left untouched, so a reader
    never sees a partial file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise SeqkdError(f"{path}: cannot write ({e.strerror or e})") from None
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, mode, encoding=encoding)
        with f:
            yield f
            f.flush()
            faults.point("atomic_write")
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_no_space(e):
            raise no_space(path) from None
        raise


def make_folder(path: str | os.PathLike) -> Path:
    """Create the folder `path` (and its parents) to write in: a file of that name, a parent that is a file or a
    folder we may not write is a one-line SeqkdError naming it, before anything is written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SeqkdError(f"{p}: cannot create or write the folder (a file of that name exists)")
    nearest = next(q for q in (p, *p.parents) if q.exists())  # the folder a mkdir would write in
    if nearest.is_dir() and not os.access(nearest, os.W_OK | os.X_OK):
        where = f" in {nearest}" if nearest != p else ""
        raise SeqkdError(f"{p}: cannot create or write the folder (no write permission{where})")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeqkdError(f"{p}: cannot create or write the folder ({e.strerror or e})") from None
    return p


def check_new_folder(path: str | os.PathLike) -> Path:
    """For a folder built beside its name and renamed into place: `path` may not be a file, and its parent must be
    a folder we can write (created if needed); else a one-line SeqkdError naming it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SeqkdError(f"{p}: cannot create or write the folder (a file of that name exists)")
    make_folder(p.parent)
    return p


def _fsync(path: str | os.PathLike) -> None:
    """Flush a file's bytes (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_replace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished temp file written by another writer (safetensors, numpy) onto `path`: the usual
    permissions, its bytes fsynced, the rename, then the folder's entry fsynced, so a crash never leaves a
    renamed file whose bytes were still in the page cache."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(Path(path).parent)


def finish_folder(folder: str | os.PathLike) -> None:
    """Before a temp folder is renamed into place: fsync every file directly in it, and give the files and
    the folder the usual permissions (mkdtemp and safetensors create them readable by their owner only)."""
    folder = Path(folder)
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~_UMASK)
            _fsync(p)
    os.chmod(folder, 0o777 & ~_UMASK)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line (metrics logs; a torn last line is tolerated by `read_jsonl`)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def read_json(path: str | os.PathLike, keys: Iterable[str] = (), fix: str = "delete it and rerun") -> dict:
    """The JSON object in `path` (a file this program wrote, or a model's config); a file that cannot be read,
    is not JSON, is not an object or lacks one of `keys` is a one-line SeqkdError naming it and saying `fix`."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise SeqkdError(f"{p}: not a readable JSON file ({e}); {fix}") from None
    if not isinstance(obj, dict):
        raise SeqkdError(f"{p}: expected a JSON object, found a {type(obj).__name__}; {fix}")
    if missing := [k for k in keys if k not in obj]:
        raise SeqkdError(f"{p}: damaged, no {missing[0]!r} field; {fix}")
    return obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn line after a kill
    return out


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (its `.lock` file) for the duration: a second process that
    tries to write the same folder at once is refused with a one-line error instead of interleaving
    its checkpoints and files with the first's. The lock dies with the process (kill -9 included).
    """
    import fcntl

    folder = make_folder(folder)
    try:
        f = open(folder / ".lock", "a+")
    except OSError as e:
        raise SeqkdError(f"{folder}: cannot create or write the folder ({e.strerror or e})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise SeqkdError(f"{folder}: another {what} is writing this folder (pid {holder}); wait for it or "
                         "use another folder") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive POSIX lock on `path` (created if needed), waiting for it. Not reentrant."""
    import fcntl

    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_lines(*sides: Iterable[str]) -> str:
    """sha256 (16 hex) of each side's lines, each line followed by a newline, each side by a NUL: the
    identity of a parallel text (distilled data, top-k caches and token files use it)."""
    h = hashlib.sha256()
    for lines in sides:
        for ln in lines:
            h.update(ln.encode("utf-8") + b"\n")
        h.update(b"\x00")
    return h.hexdigest()[:16]
