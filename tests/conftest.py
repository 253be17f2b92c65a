"""Shared fixtures: the local Multi30k copy and a tiny model trained once on a synthetic task."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def pytest_configure(config):
    torch.set_num_threads(2)
    # The README runs the suite with a relative SEQKD_DATA (`../shared/data/multi30k`). Tests hand the path to
    # subprocesses and symlinks made in other folders, where a relative path points nowhere: make it absolute,
    # relative to the folder pytest was started in, as the shell meant it.
    if os.environ.get("SEQKD_DATA"):
        os.environ["SEQKD_DATA"] = str(Path(os.environ["SEQKD_DATA"]).resolve())


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    d = Path(os.environ.get("SEQKD_DATA") or SHARED_DATA).resolve()
    if not (d / "train.de.gz").exists():
        pytest.skip(f"no local Multi30k copy at {d}")
    return d


def reverse_task(n: int, seed: int, lo: int = 3, hi: int = 8) -> tuple[list[str], list[str]]:
    """Random digit strings (space separated) and their reversal."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        digits = [str(rng.randrange(10)) for _ in range(rng.randint(lo, hi))]
        src.append(" ".join(digits))
        tgt.append(" ".join(reversed(digits)))
    return src, tgt


@pytest.fixture(scope="session")
def tiny_reverse(tmp_path_factory):
    """A `tiny` model trained for a few seconds to reverse digit strings: (model_dir, test src, test tgt)."""
    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    root = tmp_path_factory.mktemp("tiny_reverse")
    src, tgt = reverse_task(4000, seed=1)
    val_src, val_tgt = reverse_task(100, seed=2)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=50, max_epochs=20, log_every=50, ckpt_every=10_000,
                      val_bleu=False)
    result = train(root / "model", cfg, model, vocab, TrainData(src, tgt, val_src, val_tgt), progress=False)
    test_src, test_tgt = reverse_task(200, seed=3)
    return root / "model", test_src, test_tgt, result


def train_cmd(tmp: Path, out: Path, quiet: bool = True) -> list[str]:
    """`seqkd train` of a tiny model on 1500 reversal pairs for 3 epochs, a checkpoint every 7 steps, into `out`;
    its data files are written to `tmp`. The command that the kill-and-resume tests interrupt."""
    src, tgt = reverse_task(1500, seed=5)
    vsrc, vtgt = reverse_task(50, seed=6)
    files = {k: write_lines(tmp / f"{k}.txt", v) for k, v in
             {"ts": src, "tt": tgt, "vs": vsrc, "vt": vtgt}.items()}
    sets = ["data.train_src=" + files["ts"], "data.train_tgt=" + files["tt"], "data.val_src=" + files["vs"],
            "data.val_tgt=" + files["vt"], "vocab.size=40", "train.max_tokens=512", "train.lr=1e-3",
            "train.warmup_steps=20", "train.max_epochs=3", "train.ckpt_every=7", "train.val_every=25",
            "train.val_bleu=false", "train.threads=1", "train.log_every=5", "model.overrides={dropout: 0.1}"]
    cmd = [sys.executable, "-m", "seqkd", "train", "--size", "tiny", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return [*cmd, "--quiet"] if quiet else cmd


@pytest.fixture(scope="session")
def train_ref(tmp_path_factory) -> tuple[Path, Path]:
    """`train_cmd` run once, uninterrupted, with --quiet: (data folder, run folder). The reference that every
    killed and resumed training run must end at."""
    from faultlib import run_ok

    tmp = tmp_path_factory.mktemp("train_ref")
    p = run_ok(train_cmd(tmp, tmp / "full"))
    assert "%|" not in p.stderr, "--quiet still drew a progress bar"
    umask = os.umask(0)
    os.umask(umask)
    out = tmp / "full"
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in rows} == {"train", "val"} and all(r["rss_mb"] > 0 for r in rows)  # memory plotted
    for f in [out / "model.safetensors", out / "vocab", *(out / "checkpoints").glob("step-*/*.safetensors")]:
        # temp folders and safetensors start private; the finished files get the usual permissions
        want = (0o777 if f.is_dir() else 0o666) & ~umask
        assert f.stat().st_mode & 0o777 == want, (f, oct(f.stat().st_mode))
    return tmp, out


def multimodal_task(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Copying where half the references shift every digit by +1: two valid outputs per source."""
    rng = random.Random(seed)
    src, _ = reverse_task(n, seed)
    out = []
    for t in src:
        if rng.random() < 0.5:
            t = " ".join(str((int(d) + 1) % 10) for d in t.split())
        out.append(t)
    return src, out


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def multimodal_teacher(tmp_path_factory):
    """A `tiny` teacher trained on the two-mode reversal task: (root, vocab dir, model dir, src, refs)."""
    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    root = tmp_path_factory.mktemp("multimodal")
    src, tgt = multimodal_task(3000, seed=11)
    vs, vt = multimodal_task(100, seed=12)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=50, max_epochs=15, ckpt_every=10_000, val_bleu=False)
    train(root / "teacher", cfg, model, vocab, TrainData(src, tgt, vs, vt), progress=False)
    return root, root / "vocab", root / "teacher", src, tgt


# --- the tiny grid, run once per session -------------------------------------------------------------------
TIMING = {"sent_per_s_greedy", "sent_per_s_beam", "seconds_greedy", "seconds_beam", "p50_ms_greedy", "p95_ms_greedy",
          "p50_ms_beam", "p95_ms_beam"}


def reproduce_cmd(out: Path, data_dir: Path, *extra: str) -> list[str]:
    """The tiny grid on one thread: its models are too small to gain from a second (the whole grid took 43.5 s on
    one thread, 50.4 s on two: benchmarks/tiny_threads.py, docs/results/tests-avx2/README.md)."""
    return [sys.executable, "-m", "seqkd", "reproduce", "--preset", "tiny", "--data-dir", str(data_dir),
            "--out", str(out), "--quiet", "--threads", "1", *extra]


def reproduce_here(out: Path, data_dir: Path, *extra: str) -> None:
    """`reproduce_cmd` run in this process (`seqkd.cli.main.main`): no second start of Python and torch, about 3 s
    a run. For runs that nothing kills; its stdout goes to `capsys`. The suite's torch threads are restored after
    it (`--threads` sets them)."""
    from seqkd.cli.main import main

    threads = torch.get_num_threads()
    try:
        assert main(reproduce_cmd(out, data_dir, *extra)[3:]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, multi30k_dir):
    """The tiny grid, uninterrupted, with a run archive: (run folder, seconds); the archive is `archive_of(out)`."""
    out = tmp_path_factory.mktemp("repro") / "tiny"
    t = time.time()
    reproduce_here(out, multi30k_dir, "--archive", str(archive_of(out)))
    return out, time.time() - t


def archive_of(out: Path) -> Path:
    return out.parent / "archive"


def same_results(a: dict, b: dict) -> None:
    """Two results.json equal in every non-timing field of every system, with the same systems."""
    assert [s["name"] for s in a["systems"]] == [s["name"] for s in b["systems"]]
    for sa, sb in zip(a["systems"], b["systems"]):
        for k in sa:
            if k not in TIMING and k != "machine":
                assert sa[k] == sb[k], (sa["name"], k, sa[k], sb[k])
    assert a["best_student"] == b["best_student"] and a["seeds"] == b["seeds"]
    assert {k: v for k, v in a["claims"].items() if k != "S1"} == {k: v for k, v in b["claims"].items() if k != "S1"}
