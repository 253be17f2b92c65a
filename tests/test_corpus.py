"""Tests for seqkd.data.corpus (no network: downloads go through a monkeypatched `_fetch`)."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from pathlib import Path

import pytest

from seqkd.data import corpus
from seqkd.data.corpus import (
    MULTI30K_SHA256,
    CleanStats,
    clean_pairs,
    corpus_files,
    data_dir_from_env,
    iter_parallel,
    parallel_lines,
    read_lines,
    read_parallel,
    sha256_file,
)
from seqkd.util.fsutil import SeqkdError

SHARED = Path(os.environ.get("SEQKD_DATA") or Path(__file__).resolve().parents[2] / "shared/data/multi30k").resolve()
needs_shared = pytest.mark.skipif(not (SHARED / "val.de.gz").exists(), reason="shared Multi30k copy missing")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQKD_DATA", raising=False)
    monkeypatch.setenv("SEQKD_CACHE", str(tmp_path / "default-cache"))

    def no_network(url, dest):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(corpus, "_fetch", no_network)


# --- reading -------------------------------------------------------------------------------------


def test_read_lines_plain_and_gz(tmp_path):
    data = "Ein Hund.\n\nZwei Männer ▁ ü\nlast without newline"
    (tmp_path / "a.txt").write_bytes(data.encode())
    with gzip.open(tmp_path / "a.txt.gz", "wb") as f:
        f.write(data.encode())
    want = ["Ein Hund.", "", "Zwei Männer ▁ ü", "last without newline"]
    assert read_lines(tmp_path / "a.txt") == want
    assert read_lines(str(tmp_path / "a.txt.gz")) == want


def test_read_lines_crlf_and_whitespace_kept(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"a\r\n  b  \r\n\r\n\tc\rd\n")
    assert read_lines(tmp_path / "c.txt") == ["a", "  b  ", "", "\tc\rd"]
    (tmp_path / "e.txt").write_bytes(b"")
    assert read_lines(tmp_path / "e.txt") == []


def test_read_lines_invalid_utf8(tmp_path):
    p = tmp_path / "bad.de"
    p.write_bytes(b"ok\nalso ok\nbro\xffken\nfine\n")
    with pytest.raises(SeqkdError) as e:
        read_lines(p)
    assert "bad.de:3:" in str(e.value) and "invalid UTF-8" in str(e.value)
    assert "byte offset 3" in str(e.value)
    gz = tmp_path / "bad.de.gz"
    gz.write_bytes(gzip.compress(b"ok\nalso ok\n\xc3(\n"))
    with pytest.raises(SeqkdError, match=r"bad\.de\.gz:3: invalid UTF-8"):
        read_lines(gz)


def test_read_lines_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(SeqkdError, match="nope.txt: file not found"):
        read_lines(tmp_path / "nope.txt")
    with pytest.raises(SeqkdError, match="cannot read"):
        read_lines(tmp_path)
    (tmp_path / "junk.gz").write_bytes(b"this is not gzip data at all\n")
    with pytest.raises(SeqkdError, match="junk.gz: not a valid gzip file"):
        read_lines(tmp_path / "junk.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"line\n" * 1000)[:40])
    with pytest.raises(SeqkdError, match="cut.gz: not a valid gzip file"):
        read_lines(tmp_path / "cut.gz")


def test_read_parallel_misaligned(tmp_path):
    (tmp_path / "x.de").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "y.en").write_text("1\n\n3\n", encoding="utf-8")
    assert read_parallel(tmp_path / "x.de", tmp_path / "y.en") == (["a", "b", "c"], ["1", "", "3"])
    with pytest.raises(SeqkdError) as e:
        read_parallel(tmp_path / "x.de", tmp_path / "x.en")
    msg = str(e.value)
    assert "x.de has 3 lines" in msg and "x.en has 2" in msg and "aligned" in msg


def test_parallel_lines_one_reader(tmp_path):
    """`parallel_lines`, the reader behind read_parallel, iter_parallel and the line-offset index: numbers, text and
    byte offsets (CRLF, a last line without newline, gzip: offsets in the text); misaligned files name both counts
    whichever is longer, streamed or not; a bad line past the shorter file's end is still a file:line error."""
    (tmp_path / "s.txt").write_bytes("a\r\nü\n\nlast".encode())
    (tmp_path / "t.txt").write_bytes(b"1\n22\n333\n4\n")
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"1\n22\n333\n4\n"))
    want = [(1, "a", "1", 0, 0), (2, "ü", "22", 3, 2), (3, "", "333", 6, 5), (4, "last", "4", 7, 9)]
    assert [tuple(x) for x in parallel_lines(tmp_path / "s.txt", tmp_path / "t.txt")] == want
    assert [tuple(x) for x in parallel_lines(tmp_path / "s.txt", tmp_path / "t.txt.gz")] == want
    (tmp_path / "short.txt").write_text("x\ny\n", encoding="utf-8")
    for a, b, counts in (("s.txt", "short.txt", (4, 2)), ("short.txt", "s.txt", (2, 4))):
        msg = f"{tmp_path / a} has {counts[0]} lines but {tmp_path / b} has {counts[1]} (files must be aligned"
        for read in (read_parallel, lambda x, y: list(iter_parallel(x, y))):
            with pytest.raises(SeqkdError) as e:
                read(tmp_path / a, tmp_path / b)
            assert str(e.value).startswith(msg)
    (tmp_path / "bad.txt").write_bytes(b"1\n2\n3\n\xff\n")
    with pytest.raises(SeqkdError, match=r"bad\.txt:4: invalid UTF-8"):
        read_parallel(tmp_path / "short.txt", tmp_path / "bad.txt")
    with pytest.raises(SeqkdError, match="nope.txt: file not found"):
        read_parallel(tmp_path / "s.txt", tmp_path / "nope.txt")


# --- cleaning ------------------------------------------------------------------------------------


def test_clean_pairs_counts(caplog):
    src = ["a dog", "", "  ", "x" * 11, "ok", "a", "b" * 9, "same", "tab"]
    tgt = ["ein Hund", "leer", "blank", "short", "y" * 11, "z" * 10, "c", "gleich", "\t"]
    with caplog.at_level(logging.INFO, logger="seqkd.data.corpus"):
        s, t, stats = clean_pairs(src, tgt, max_chars=10, max_ratio=4.0)
    # empty: "", "  ", "\t" ; too long: x*11, y*11 ; ratio: (10+1)/(1+1)=5.5 > 4 ; (9+1)/(1+1)=5 > 4
    assert stats == CleanStats(kept=2, empty=3, too_long=2, ratio=2, max_chars=10, max_ratio=4.0)
    assert s == ["a dog", "same"] and t == ["ein Hund", "gleich"]
    assert str(stats) == ("kept 2 of 9 pairs (skipped: 3 empty, 2 over 10 chars, 2 with length ratio over 4)")
    assert "kept 2 of 9 pairs" in caplog.text


def test_clean_pairs_ratio_boundary():
    # a 1-char vs 17-char pair: (17+1)/(1+1) = 9.0, not over the default 9 -> kept
    s, _, stats = clean_pairs(["a"], ["b" * 17])
    assert s == ["a"] and stats.ratio == 0
    _, _, stats = clean_pairs(["a"], ["b" * 18])
    assert stats.ratio == 1 and stats.kept == 0


# --- locating local data -------------------------------------------------------------------------


def test_data_dir_from_env(monkeypatch, tmp_path):
    assert data_dir_from_env() is None
    monkeypatch.setenv("SEQKD_DATA", str(tmp_path / "env"))
    assert data_dir_from_env() == tmp_path / "env"
    assert data_dir_from_env(tmp_path / "arg") == tmp_path / "arg"


@needs_shared
def test_corpus_files_shared_copy():
    src, tgt = corpus_files("multi30k", "train", "de", "en", data_dir=SHARED)
    assert src == SHARED / "train.de.gz" and tgt == SHARED / "train.en.gz"
    assert sha256_file(src) == MULTI30K_SHA256["train.de.gz"]
    de, en = read_parallel(*corpus_files("multi30k", "val", "de", "en", data_dir=SHARED))
    assert len(de) == len(en) == 1014
    assert all(isinstance(x, str) for x in de[:5])


@needs_shared
def test_seqkd_data_env(monkeypatch):
    monkeypatch.setenv("SEQKD_DATA", str(SHARED))
    assert corpus_files("multi30k", "val", "en", "de") == (SHARED / "val.en.gz", SHARED / "val.de.gz")


@needs_shared
def test_tampered_local_copy(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(SHARED / "val.en.gz", d / "val.en.gz")
    (d / "val.de.gz").write_bytes((SHARED / "val.de.gz").read_bytes() + b"\0")
    with pytest.raises(SeqkdError) as e:
        corpus_files("multi30k", "val", "de", "en", data_dir=d)
    msg = str(e.value)
    assert "val.de.gz" in msg and "sha256" in msg and MULTI30K_SHA256["val.de.gz"] in msg


def test_local_file_missing(tmp_path):
    with pytest.raises(SeqkdError, match="test_2017_mscoco.fr.gz: file not found.*SEQKD_DATA/--data-dir"):
        corpus_files("multi30k", "test_2017_mscoco", "fr", "en", data_dir=tmp_path)


def test_validation_errors(tmp_path):
    with pytest.raises(SeqkdError, match=r"unknown corpus 'wmt14' \(known: multi30k\)"):
        corpus_files("wmt14", "train", "de", "en", data_dir=tmp_path)
    with pytest.raises(SeqkdError, match="no language 'es'.*en, de, fr, cs"):
        corpus_files("multi30k", "train", "es", "en", data_dir=tmp_path)
    with pytest.raises(SeqkdError, match="no split 'test_2017_flickr' for cs-en.*test_2018_flickr"):
        corpus_files("multi30k", "test_2017_flickr", "cs", "en", data_dir=tmp_path)
    with pytest.raises(SeqkdError, match="unknown split 'test'"):
        corpus_files("multi30k", "test", "de", "en", data_dir=tmp_path)
    with pytest.raises(SeqkdError, match="both 'de'"):
        corpus_files("multi30k", "train", "de", "de", data_dir=tmp_path)


# --- downloading (monkeypatched _fetch) ----------------------------------------------------------


def test_download_bad_checksum_leaves_nothing(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    fetched = []

    def fake(url, dest):
        fetched.append(url)
        Path(dest).write_bytes(gzip.compress(b"not the real data\n"))

    monkeypatch.setattr(corpus, "_fetch", fake)
    with pytest.raises(SeqkdError) as e:
        corpus_files("multi30k", "val", "de", "en", cache_dir=cache)
    assert "sha256" in str(e.value) and "val.de.gz" in str(e.value)
    assert fetched == [corpus.MULTI30K_URL.format(split="val", lang="de")]
    assert list(cache.iterdir()) == []


def test_download_network_error(monkeypatch, tmp_path):
    def fail(url, dest):
        Path(dest).write_bytes(b"partial")
        raise OSError("connection refused")

    monkeypatch.setattr(corpus, "_fetch", fail)
    cache = tmp_path / "cache"
    with pytest.raises(
        SeqkdError, match=r"cannot download https://.*val\.de\.gz: connection refused; set SEQKD_DATA"
    ):
        corpus_files("multi30k", "val", "de", "en", cache_dir=cache)
    assert list(cache.iterdir()) == []


@needs_shared
def test_download_lands_in_cache_once(monkeypatch, tmp_path):
    fetched = []

    def fake(url, dest):
        fetched.append(url)
        shutil.copy(SHARED / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(corpus, "_fetch", fake)
    cache = tmp_path / "cache"
    src, tgt = corpus_files("multi30k", "val", "de", "en", cache_dir=cache)
    assert (src, tgt) == (cache / "val.de.gz", cache / "val.en.gz")
    assert sorted(p.name for p in cache.iterdir()) == ["val.de.gz", "val.en.gz"]
    assert len(fetched) == 2
    de, en = read_parallel(*corpus_files("multi30k", "val", "de", "en", cache_dir=cache))
    assert len(fetched) == 2 and len(de) == len(en) == 1014
    # default cache folder comes from SEQKD_CACHE
    monkeypatch.setenv("SEQKD_CACHE", str(cache))
    assert corpus_files("multi30k", "val", "de", "en") == (src, tgt)
    assert len(fetched) == 2


def test_download_unpinned_trust_on_first_use(monkeypatch, tmp_path, caplog):
    payload = {"fr": gzip.compress(b"Un chien.\n"), "cs": gzip.compress(b"Pes.\n")}

    def fake(url, dest):
        lang = url.rsplit(".", 2)[1]
        Path(dest).write_bytes(payload[lang])

    monkeypatch.setattr(corpus, "_fetch", fake)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="seqkd.data.corpus"):
        fr, cs = read_parallel(*corpus_files("multi30k", "test_2018_flickr", "fr", "cs", cache_dir=cache))
    assert (fr, cs) == (["Un chien."], ["Pes."])
    assert "no pinned checksum" in caplog.text
    sums = (cache / "SHA256SUMS").read_text(encoding="utf-8")
    assert f"{sha256_file(cache / 'test_2018_flickr.fr.gz')}  test_2018_flickr.fr.gz" in sums
    assert "test_2018_flickr.cs.gz" in sums
    # later use verifies against the recorded sum
    (cache / "test_2018_flickr.cs.gz").write_bytes(gzip.compress(b"Kocka.\n"))
    with pytest.raises(SeqkdError, match="test_2018_flickr.cs.gz: sha256 mismatch.*delete it"):
        corpus_files("multi30k", "test_2018_flickr", "fr", "cs", cache_dir=cache)
    # a re-download is checked against the recorded sum too, and a changed file is discarded
    (cache / "test_2018_flickr.cs.gz").unlink()
    payload["cs"] = gzip.compress(b"Jiny.\n")
    with pytest.raises(SeqkdError, match="downloaded .*test_2018_flickr.cs.gz: sha256 mismatch"):
        corpus_files("multi30k", "test_2018_flickr", "fr", "cs", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["SHA256SUMS", "test_2018_flickr.fr.gz"]


def test_download_unpinned_not_gzip_discarded(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "_fetch", lambda url, dest: Path(dest).write_bytes(b"<html>login</html>"))
    cache = tmp_path / "cache"
    with pytest.raises(SeqkdError, match="not a gzip file"):
        corpus_files("multi30k", "test_2017_mscoco", "fr", "en", cache_dir=cache)
    assert list(cache.iterdir()) == []
