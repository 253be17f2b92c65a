"""Distillation across workers: torchrun ranks and independent processes claiming shards, a killed
worker's shard taken over, Slurm-array splitting, and the merge's checks; every result byte-identical
to one process's (and the merge byte-identical to the implementation it replaced)."""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import multimodal_task, write_lines

from seqkd.cli.main import main
from seqkd.data.pairs import FilePairs, ListPairs
from seqkd.distill.config import DECODE_FIELDS, SPEED_FIELDS, DistillConfig
from seqkd.distill.shards import LOCK, merge
from seqkd.distill.workers import _identity, distill
from seqkd.inference.decode import DecodeConfig
from seqkd.models.marian import weights_hash
from seqkd.util.fsutil import SeqkdError, atomic_open, hash_lines, write_json

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# the same thread layout in every worker: CTranslate2's scores may differ in the last digits across layouts
MODES = {
    "seq_kd": (dict(mode="seq_kd", beam=3, shard_size=16, filter_worst=0.1, max_len_ratio=2.0),
               ["--mode", "seq_kd", "--beam", "3", "--filter-worst", "0.1", "--max-len-ratio", "2.0"]),
    "seq_inter": (dict(mode="seq_inter", beam=4, shard_size=16, fraction=0.9),
                  ["--mode", "seq_inter", "--beam", "4", "--fraction", "0.9"]),
}
FINAL = ("train.src", "train.tgt", "manifest.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A quickly trained tiny teacher (CTranslate2 conversion made), 200 pairs as files, and each mode's
    one-process result: (root, teacher, src file, tgt file, {mode: reference folder})."""
    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.inference.decode import ct2_dir
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    root = tmp_path_factory.mktemp("scale")
    src, tgt = multimodal_task(1500, seed=11)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=50, max_epochs=4, ckpt_every=10_000, val_bleu=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few seconds on one thread; two threads on a busy 2-core machine crawl
    try:
        train(root / "teacher", cfg, model, vocab, TrainData(src, tgt, *multimodal_task(50, seed=12)), progress=False)
    finally:
        torch.set_num_threads(threads)
    ct2_dir(root / "teacher")
    src, tgt = multimodal_task(200, seed=31)
    s, t = write_lines(root / "s.txt", src), write_lines(root / "t.txt", tgt)
    refs = {}
    for mode, (kw, _) in MODES.items():
        refs[mode] = root / f"ref-{mode}"
        distill(root / "teacher", src, tgt, refs[mode], DistillConfig(**kw, threads=1, inter_threads=1),
                progress=False)
    return root, root / "teacher", s, t, refs


def _argv(setup, mode: str, out: Path, *extra: str) -> list[str]:
    _, teacher, s, t, _ = setup
    return ["distill", "--teacher", str(teacher), "--set", f"data.train_src={s}", "--set", f"data.train_tgt={t}",
            "--shard-size", "16", "--threads", "1", "--inter-threads", "1", "--out", str(out),
            *MODES[mode][1], *extra]


def _assert_same(out: Path, ref: Path) -> None:
    """The same final files and shards, byte for byte, and no claim left behind."""
    for name in FINAL:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    shards = sorted(p.name for p in (ref / "shards").iterdir())
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards
    for name in shards:
        assert (out / "shards" / name).read_bytes() == (ref / "shards" / name).read_bytes(), name
    assert not list(out.glob(".input-index-*")), "the merge left the workers' cached line index behind"


def _hold(path: Path) -> int:
    """Lock `path` from this process (workers are other processes, so they wait for it)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd


def _wait_claims(out: Path, n: int, procs: list[subprocess.Popen]) -> None:
    """Wait until `n` shards are claimed at once: each worker holds one and waits for the teacher's lock."""
    deadline = time.time() + 300
    while len(list((out / "shards").glob("*.claim"))) < n:
        assert time.time() < deadline, "workers did not claim shards in time"
        for p in procs:
            assert p.poll() is None, p.communicate()
        time.sleep(0.05)


def _run_together(cmds: list[list[str]], out: Path, claims: int) -> list[str]:
    """Start the commands at once, hold them until `claims` shards are claimed, then let them work."""
    out.mkdir()
    fd = _hold(out / LOCK)
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    try:
        _wait_claims(out, claims, procs)
    finally:
        os.close(fd)
        outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e
    return [o for o, _ in outs]


@pytest.mark.parametrize("mode", MODES)
def test_two_independent_workers_identical(tmp_path, setup, mode):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seqkd", *_argv(setup, mode, out)]
    _run_together([cmd, cmd], out, claims=2)  # both hold a shard at once: the work is shared
    _assert_same(out, setup[4][mode])


# seq_inter under torchrun is marked slow (one of the slowest cases): the two-worker test covers seq_inter's
# sharding by default
@pytest.mark.parametrize("mode", ["seq_kd", pytest.param("seq_inter", marks=pytest.mark.slow)])
def test_torchrun_two_ranks_identical(tmp_path, setup, mode):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seqkd",
           *_argv(setup, mode, out)]
    _run_together([cmd], out, claims=2)
    _assert_same(out, setup[4][mode])


def test_killed_worker_shard_taken_over(tmp_path, setup, capsys):
    """A worker SIGKILLed while it holds a claim (after others finished shards 0-2): the next worker
    takes the shard over, removes the dead one's rows in flight, and ends byte-identical."""
    ref, out = setup[4]["seq_kd"], tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    shutil.copy(ref / "identity.json", out)
    for k in range(3):
        shutil.copy(ref / "shards" / f"shard-{k:05d}.jsonl", out / "shards")
    fd = _hold(out / LOCK)
    proc = subprocess.Popen([sys.executable, "-m", "seqkd", *_argv(setup, "seq_kd", out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_claims(out, 1, [proc])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        os.close(fd)
    assert (out / "shards" / "shard-00003.claim").exists() and not (out / "manifest.json").exists()
    (out / "shards" / ".shard-00003.jsonl.dead.tmp").write_text('{"i": 48, "hy')
    assert main(_argv(setup, "seq_kd", out)) == 0
    assert '"pairs"' in capsys.readouterr().out
    _assert_same(out, ref)


def test_live_claim_respected_then_taken_over(tmp_path, setup, capsys):
    """A shard held by a live process is left to it (the worker exits 0 saying what remains); once that
    process dies, the next worker takes the shard over."""
    ref, out = setup[4]["seq_inter"], tmp_path / "out"
    claim = out / "shards" / "shard-00002.claim"
    claim.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(claim)!r}, os.O_CREAT | os.O_RDWR)\n"
                               "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_argv(setup, "seq_inter", out)) == 0
        assert "1 of 12 shards remain" in capsys.readouterr().out
        assert not (out / "shards" / "shard-00002.jsonl").exists() and not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(_argv(setup, "seq_inter", out)) == 0
    _assert_same(out, ref)


def test_array_tasks_then_merge_only(tmp_path, setup, capsys):
    ref, out = setup[4]["seq_kd"], tmp_path / "out"
    assert main(_argv(setup, "seq_kd", out, "--shard-index", "1", "--num-shards", "2")) == 0
    assert "7 of 13 shards remain" in capsys.readouterr().out
    done = sorted(p.name for p in (out / "shards").glob("*.jsonl"))
    assert done == [f"shard-{k:05d}.jsonl" for k in range(1, 13, 2)] and not (out / "train.src").exists()
    assert main(_argv(setup, "seq_kd", out, "--shard-index", "0", "--num-shards", "2")) == 0
    _assert_same(out, ref)  # the last task finds every shard finished and merges
    for name in FINAL:
        (out / name).unlink()
    assert main(_argv(setup, "seq_kd", out, "--merge-only")) == 0
    _assert_same(out, ref)
    assert main(_argv(setup, "seq_kd", out, "--merge-only")) == 0  # idempotent
    _assert_same(out, ref)


def _drop_last(lines):
    return lines[:-1]


def _swap_i(lines):
    a, b = json.loads(lines[3]), json.loads(lines[4])
    a["i"], b["i"] = b["i"], a["i"]
    return lines[:3] + [json.dumps(a), json.dumps(b)] + lines[5:]


def _change_i(lines):
    a = json.loads(lines[7])
    a["i"] += 1000
    return lines[:7] + [json.dumps(a)] + lines[8:]


def _duplicate(lines):
    return lines[:5] + [lines[4]] + lines[5:-1]


@pytest.mark.parametrize("damage,message", [
    (None, r"shard-00004\.jsonl: shard missing \(1 of 13"),
    (_drop_last, r"shard-00004\.jsonl: 15 rows where 16 were expected \(truncated"),
    (_swap_i, r"shard-00004\.jsonl:4: row for input 68 where input 67 belongs \(misaligned"),
    (_change_i, r"shard-00004\.jsonl:8: row for input 1071 where input 71 belongs \(misaligned"),
    (_duplicate, r"shard-00004\.jsonl:6: row for input 68 where input 69 belongs \(misaligned"),
    ("cut", r"shard-00004\.jsonl:16: last line cut short \(truncated"),
])
def test_merge_refuses_bad_shard(tmp_path, setup, capsys, damage, message):
    """A missing, truncated or misaligned shard fails the merge with one line naming it; no final file
    stays (not even one from an earlier merge killed before its manifest)."""
    ref, out = setup[4]["seq_kd"], tmp_path / "out"
    shutil.copytree(ref, out)
    for name in FINAL:
        (out / name).unlink()
    (out / "train.src").write_text("left by a merge killed before its manifest\n")
    bad = out / "shards" / "shard-00004.jsonl"
    if damage is None:
        bad.unlink()
    elif damage == "cut":
        bad.write_bytes(bad.read_bytes()[:-10])
    else:
        bad.write_text("".join(ln + "\n" for ln in damage(bad.read_text().splitlines())))
    assert main(_argv(setup, "seq_kd", out, "--merge-only")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err) and str(bad) in err, err
    assert not any((out / name).exists() for name in FINAL)


def test_cuda_without_gpu_is_an_error(tmp_path, setup, capsys):
    import ctranslate2

    if ctranslate2.get_cuda_device_count():
        pytest.skip("this machine has a GPU")
    assert main(_argv(setup, "seq_kd", tmp_path / "out", "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda" in err and "no CUDA device" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "out" / "shards").glob("*.jsonl"))


def test_bad_split_is_an_error(tmp_path, setup, capsys):
    assert main(_argv(setup, "seq_kd", tmp_path / "out", "--shard-index", "2", "--num-shards", "2")) == 2
    assert "0 <= shard-index < num-shards" in capsys.readouterr().err


# --- compatibility with folders written before workers existed -------------------------------------
OLD_FIELDS = ["mode", "beam", "metric", "fraction", "shard_size", "engine", "compute_type", "max_len_a", "max_len_b",
              "max_tokens", "filter_worst", "max_len_ratio", "seed"]


def test_identity_unchanged(setup):
    """New config fields stay out of the identity, so finished and unfinished folders stay valid."""
    _, teacher, *_ = setup
    assert [k for k in asdict(DistillConfig()) if k not in SPEED_FIELDS] == OLD_FIELDS
    src, tgt = multimodal_task(30, seed=5)
    cfg = DistillConfig(mode="seq_inter", beam=7, device="cuda", threads=3)
    old = {"teacher": teacher.resolve().name, "teacher_weights": weights_hash(teacher),
           "input_sha256": hash_lines(src, tgt), "input_pairs": len(src),
           "config": {k: v for k, v in asdict(cfg).items() if k not in ("threads", "inter_threads", "device")}}
    assert _identity(teacher, ListPairs(src, tgt), cfg) == old
    assert list(old["config"]) == OLD_FIELDS


def test_the_teachers_decode_config_is_made_as_before():
    """DECODE_FIELDS are DecodeConfig's fields with its defaults, handed on as they are; `decode_config` makes the
    DecodeConfig that `workers._translator` wrote out field by field before (Seq-Inter: n-best lists of `beam`,
    inter_threads 0 = 2 for n-best lists, 1 for beam output)."""
    assert all(getattr(DistillConfig(), k) == getattr(DecodeConfig(), k) for k in DECODE_FIELDS)
    cfg = DistillConfig(mode="seq_inter", beam=7, engine="hf", compute_type="int8", max_len_a=2.0, max_len_b=3,
                        max_tokens=99, threads=3)
    assert cfg.decode_config("cuda", 1) == DecodeConfig(engine="hf", beam=7, nbest=7, compute_type="int8",
                                                        max_len_a=2.0, max_len_b=3, max_tokens=99, threads=3,
                                                        inter_threads=2, device="cuda", device_index=1)
    assert DistillConfig(beam=4).decode_config() == DecodeConfig(beam=4, nbest=1, inter_threads=1)
    assert DistillConfig(inter_threads=3).decode_config().inter_threads == 3


def _old_assemble(out: Path, src: list[str], shards: list[list[int]], ident: dict, cfg: DistillConfig) -> dict:
    """The merge as it was before workers (seqkd/distill/workers.py at daf1af4), verbatim but for the log line."""
    rows = []
    for k in range(len(shards)):
        rows += [json.loads(ln) for ln in (out / "shards" / f"shard-{k:05d}.jsonl").read_text("utf-8").splitlines()]
    keep = [r for r in rows if r["hyp"].strip() and src[r["i"]].strip()]
    dropped = {"empty": len(rows) - len(keep), "length_ratio": 0, "low_score": 0}
    if cfg.max_len_ratio:
        def ok(r):
            a, b = len(src[r["i"]]) + 1, len(r["hyp"]) + 1
            return max(a / b, b / a) <= cfg.max_len_ratio
        n = len(keep)
        keep = [r for r in keep if ok(r)]
        dropped["length_ratio"] = n - len(keep)
    if cfg.filter_worst:
        n_drop = int(len(keep) * cfg.filter_worst)
        worst = {r["i"] for r in sorted(keep, key=lambda r: (r["score"], r["i"]))[:n_drop]}
        keep = [r for r in keep if r["i"] not in worst]
        dropped["low_score"] = n_drop
    with atomic_open(out / "train.src") as f:
        f.writelines(src[r["i"]].replace("\n", " ") + "\n" for r in keep)
    with atomic_open(out / "train.tgt") as f:
        f.writelines(r["hyp"].replace("\n", " ") + "\n" for r in keep)
    manifest = {**ident, "pairs": len(keep), "dropped": dropped,
                "mean_teacher_score": sum(r["score"] for r in rows) / max(1, len(rows))}
    if cfg.mode == "seq_inter":
        manifest["mean_similarity"] = sum(r["sim"] for r in rows) / max(1, len(rows))
        manifest["mean_rank"] = sum(r["rank"] for r in rows) / max(1, len(rows))
    write_json(out / "manifest.json", manifest)
    return manifest


@pytest.mark.parametrize("kw", [dict(), dict(filter_worst=0.25), dict(max_len_ratio=1.5, filter_worst=0.1),
                                dict(mode="seq_inter", filter_worst=0.3, max_len_ratio=2.0)])
def test_merge_byte_identical_to_previous_assemble(tmp_path, kw):
    """Synthetic shards (tied scores, empty sides, newlines, non-ASCII): the streaming merge writes the
    same bytes as the list-based assembly it replaced."""
    rng = random.Random(7)
    n, size = 150, 20
    src = [" ".join(rng.choice(["a", "bb", "ü", "c\nd"]) for _ in range(rng.randint(0, 6))) for _ in range(n)]
    idx = sorted(rng.sample(range(n), 120))
    shards = [idx[s: s + size] for s in range(0, len(idx), size)]
    cfg = DistillConfig(shard_size=size, **kw)
    for k, part in enumerate(shards):
        rows = []
        for i in part:
            rows.append({"i": i, "hyp": rng.choice(["", " ", "x\ny", "é"]) + " ".join("xyé"[:rng.randint(0, 3)]),
                         "score": rng.choice([-0.5, -1.25, rng.uniform(-3, 0)])})
            if cfg.mode == "seq_inter":
                rows[-1] |= {"rank": rng.randrange(4), "sim": rng.uniform(0, 100)}
        for d in ("old", "new"):
            (tmp_path / d / "shards").mkdir(parents=True, exist_ok=True)
            (tmp_path / d / "shards" / f"shard-{k:05d}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ident = {"teacher": "/t", "config": asdict(cfg)}
    _old_assemble(tmp_path / "old", src, shards, ident, cfg)
    merge(tmp_path / "new", ListPairs(src, ["r"] * n), shards, ident, cfg)
    for name in FINAL:
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes(), name


def test_file_pairs_index_cached_for_the_next_worker(tmp_path, monkeypatch):
    """The first worker keeps the line index and digest in the output folder; the next one reads them
    instead of passing over the files (no line decoded), with the same pairs; a changed file is indexed
    again; a finished distillation leaves no index behind."""
    import seqkd.data.pairs as pairs_mod

    src, tgt = [f"s {i} " + "x" * (i % 7) for i in range(500)], [f"t {i}" for i in range(500)]
    s, t, out = write_lines(tmp_path / "s.txt", src), write_lines(tmp_path / "t.txt", tgt), tmp_path / "out"
    first = FilePairs(s, t, max_chars=9, cache_dir=out)
    out.mkdir()
    assert first.digest() and not list(out.glob(".input-index-*"))  # nothing written before keep_index
    first.keep_index()
    assert len(list(out.glob(".input-index-*"))) == 1

    def no_reading(*paths):
        raise AssertionError("the cached index was not used")

    with monkeypatch.context() as m:
        m.setattr(pairs_mod, "parallel_lines", no_reading)
        second = FilePairs(s, t, max_chars=9, cache_dir=out)
        assert len(second) == len(first) < 500 and second.digest() == first.digest()
    assert second.source(range(len(second))) == first.source(range(len(first)))
    assert second.reference(range(len(second))) == first.reference(range(len(first)))
    assert first.digest() == ListPairs(first.source(range(len(first))), first.reference(range(len(first)))).digest()
    Path(t).write_text("".join(f"T {i}\n" for i in range(500)))  # another file: another key, a new pass
    third = FilePairs(s, t, max_chars=9, cache_dir=out)
    assert third.digest() != first.digest()


def test_file_pairs_match_load_pairs(tmp_path):
    """The CLI's line-offset input gives the same pairs and hash as `load_pairs` (cleaning included)."""
    from seqkd.data.load import DataConfig, load_pairs

    src = ["a b", "", "x" * 30, "ü ö", "one", "tab\there", "last"]
    tgt = ["c d", "e", "y", "ä", "a much longer target line", "t", "no newline"]
    s, t = tmp_path / "s.txt", tmp_path / "t.txt"
    s.write_bytes("\r\n".join(src).encode())
    t.write_bytes(("\n".join(tgt)).encode())
    for max_pairs in (0, 5):
        dc = DataConfig(train_src=str(s), train_tgt=str(t), max_chars=25, max_ratio=4.0, max_train_pairs=max_pairs)
        want = ListPairs(*load_pairs(dc, "train"))
        got = FilePairs(s, t, max_pairs=max_pairs, max_chars=25, max_ratio=4.0)
        assert len(got) == len(want) and got.digest() == want.digest()
        assert got.source(range(len(got))) == want.src and got.reference(range(len(got))) == want.ref
    t.write_text("only\none\n")
    with pytest.raises(SeqkdError, match="has 7 lines but .* has 2"):
        FilePairs(s, t)
    with pytest.raises(SeqkdError, match="plain text files, not .gz"):  # read back by byte offset
        FilePairs(s, tmp_path / "t.txt.gz")
