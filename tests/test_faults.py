"""Fault injection: `seqkd train` and `seqkd distill` (Seq-KD, Seq-Inter, top-k) are SIGKILLed at exact
points (seqkd/util/faults.py: during a checkpoint write, between its rename and latest.json, half-way
through saving the best model, mid-shard, mid-merge, before a temp file's rename), interrupted with
Ctrl-C, and run out of disk on a tmpfs of their own. After every fault no partial file is visible
under its final name; rerunning the same command ends with exactly what an uninterrupted run writes.

Each chain reruns the same command after each fault, so each resume starts from the previous fault's
leftovers (a checkpoint renamed without latest.json, a half-saved model, a torn temp file).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import train_cmd, write_lines
from faultlib import assert_no_partial_files, env, last_line, latest_step, run, run_killed, run_ok, visible_files
from safetensors.torch import load_file
from test_resume import assert_resumed

# --- shared references ---------------------------------------------------------------------------


def assert_same_training(a: Path, b: Path) -> None:
    """The resumed run ends where the uninterrupted one does: weights, steps, tokens, metrics rows."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)
    ra, rb = (json.loads((d / "train_result.json").read_text()) for d in (a, b))
    assert (ra["steps"], ra["best_step"], ra["target_tokens"]) == (rb["steps"], rb["best_step"], rb["target_tokens"])

    def rows(d: Path) -> list[tuple[str, int]]:
        return [(r["type"], r["step"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]

    assert rows(a) == rows(b)  # nothing lost, nothing logged twice


# --- training -------------------------------------------------------------------------------------

TRAIN_FAULTS = [
    "checkpoint_write:2",  # weights of the 2nd checkpoint written, optimizer state not
    "checkpoint_rename:1",  # a checkpoint renamed into place, latest.json still at the previous one
    "model_save:1",  # the best model half renamed (config.json new, weights old)
    "atomic_write:3",  # a temp file written, not yet synced or renamed
]


def test_train_killed_in_a_checkpoint_write_and_its_rename_resumes(tmp_path, train_ref):
    """The two checkpoint fault points (the default suite's share of the chain below, which is slow): killed
    with a checkpoint's weights written and its optimizer state not, then with a checkpoint renamed into place
    and latest.json not yet moved; each rerun goes on from the step latest.json names, and the last ends where
    the uninterrupted run ends."""
    data, ref = train_ref
    out = tmp_path / "run"
    cmd = train_cmd(data, out)
    run_killed(cmd, "checkpoint_write:2")
    assert_no_partial_files(out)
    before = latest_step(out)
    p = run_killed(cmd, "checkpoint_rename:1")
    assert f"resuming from step {before} " in p.stderr, (before, p.stderr[-2000:])
    assert_no_partial_files(out)
    assert not (out / "train_result.json").exists()
    before = latest_step(out)
    p = run_ok(cmd)
    assert_same_training(ref, out)
    assert_resumed(p.stderr, before, json.loads((out / "train_result.json").read_text())["steps"])


@pytest.mark.slow
def test_train_killed_at_each_point_then_ctrl_c(tmp_path, train_ref):
    data, ref = train_ref
    out = tmp_path / "run"
    cmd = train_cmd(data, out)
    steps = []
    for i, fault in enumerate(TRAIN_FAULTS):
        before = latest_step(out) if i else 0
        p = run_killed(cmd, fault)
        if i:  # each rerun goes on from the checkpoint the previous kill left (a kill may land before latest.json)
            assert f"resuming from step {before} " in p.stderr, (fault, before, p.stderr[-2000:])
        assert not (out / "train_result.json").exists()
        assert_no_partial_files(out)
        steps.append(latest_step(out))
    assert steps == sorted(steps) and steps[-1] > 0, steps

    # Ctrl-C: the step finishes, a checkpoint is saved at it, exit 130 with one line
    before = latest_step(out)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and latest_step(out) <= before:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert last_line(err).startswith("seqkd: interrupted; rerun the same command to resume"), err[-2000:]
    assert f"interrupted at step {latest_step(out)}; checkpoint saved" in err
    assert not (out / "train_result.json").exists()
    assert_no_partial_files(out)

    before = latest_step(out)
    p = run_ok(cmd)
    assert_same_training(ref, out)
    assert_resumed(p.stderr, before, json.loads((out / "train_result.json").read_text())["steps"])
    assert not list((out / "checkpoints").glob(".step-*")), "a killed checkpoint's temp folder was left behind"


# --- distillation ---------------------------------------------------------------------------------


def distill_cmd(teacher: Path, s: str, t: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seqkd", "distill", "--teacher", str(teacher), "--set", f"data.train_src={s}",
            "--set", f"data.train_tgt={t}", "--shard-size", "60", "--engine", "hf", "--out", str(out),
            "--quiet", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def distill_data(tmp_path_factory, multimodal_teacher):
    _, _, teacher, src, tgt = multimodal_teacher
    tmp = tmp_path_factory.mktemp("distill_data")
    return teacher, write_lines(tmp / "s.txt", src[:600]), write_lines(tmp / "t.txt", tgt[:600])


DISTILL_CHAINS = {
    # mode flags, faults in order: mid-shard, mid-merge, between the two renames of the merge
    "seq_kd": (["--beam", "3"], ["shard_row:150", "merge_write:4", "atomic_write:2"]),
    "seq_inter": (["--mode", "seq_inter", "--beam", "4"], ["shard_row:70", "shard_row:200", "merge_write:9"]),
}
# Where each kill lands (60 pairs a shard, 10 shards): the finished shards it leaves, and the merged files under
# their final names (the merge renames train.tgt, then train.src: `atomic_write:2` is the second rename).
LANDED = {"shard_row:150": (2, set()), "merge_write:4": (10, set()), "atomic_write:2": (10, {"train.tgt"}),
          "shard_row:70": (1, set()), "shard_row:200": (4, set()), "merge_write:9": (10, set())}


@pytest.mark.slow  # the default suite kills Seq-KD between the merge's two renames (below)
@pytest.mark.parametrize("mode", ["seq_kd", "seq_inter"])
def test_distill_killed_at_each_point(tmp_path, distill_data, mode):
    teacher, s, t = distill_data
    flags, faults = DISTILL_CHAINS[mode]
    full, out = tmp_path / "full", tmp_path / "killed"
    run_ok(distill_cmd(teacher, s, t, full, *flags))
    finished = 0
    for fault in faults:
        p = run_killed(distill_cmd(teacher, s, t, out, *flags), fault)
        if finished:  # the shards finished before this run were not decoded again
            assert f"{finished} of 10 shards already finished: not decoded again" in p.stderr, p.stderr[-2000:]
        assert not (out / "manifest.json").exists()
        assert_no_partial_files(out)
        finished = len(visible_files(out / "shards"))
        merged = {n for n in ("train.src", "train.tgt") if (out / n).exists()}
        assert (finished, merged) == LANDED[fault], (fault, finished, merged)
    p = run_ok(distill_cmd(teacher, s, t, out, *flags))
    assert "10 of 10 shards already finished: not decoded again" in p.stderr and "0 shards decoded in this run" in \
        p.stderr, p.stderr[-2000:]
    for name in ("train.src", "train.tgt", "manifest.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name
    shards = sorted(p.name for p in visible_files(out / "shards"))
    assert shards == sorted(p.name for p in visible_files(full / "shards")) and len(shards) == 10
    for p in shards:  # every shard written once: the rows of a killed shard are not duplicated
        assert (full / "shards" / p).read_bytes() == (out / "shards" / p).read_bytes(), p


def test_distill_killed_between_the_merges_renames_resumes(tmp_path, distill_data):
    """The default suite's share of the chain above: Seq-KD killed with every shard decoded and the merged
    train.tgt renamed into place but not train.src (a half-finished merge under its final names). The rerun
    decodes nothing again, merges anew and writes exactly what an uninterrupted run writes. (A kill mid-shard is
    `test_distill_scale.py::test_killed_worker_shard_taken_over`, with a dead worker's claim and torn temp file.)"""
    teacher, s, t = distill_data
    flags = DISTILL_CHAINS["seq_kd"][0]
    full, out = tmp_path / "full", tmp_path / "killed"
    run_ok(distill_cmd(teacher, s, t, full, *flags))
    # a fresh run's atomic writes: identity.json, the 10 shards, train.tgt, then train.src (killed before its rename)
    run_killed(distill_cmd(teacher, s, t, out, *flags), "atomic_write:13")
    assert not (out / "manifest.json").exists()
    assert_no_partial_files(out)
    assert (len(visible_files(out / "shards")), {n for n in ("train.src", "train.tgt") if (out / n).exists()}) == \
        LANDED["atomic_write:2"]
    p = run_ok(distill_cmd(teacher, s, t, out, *flags))
    assert "10 of 10 shards already finished: not decoded again" in p.stderr and "0 shards decoded in this run" in \
        p.stderr, p.stderr[-2000:]
    for name in ("train.src", "train.tgt", "manifest.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.slow
def test_topk_cache_killed_between_shards(tmp_path, distill_data):
    teacher, s, t = distill_data
    flags = ["--mode", "topk", "--topk", "4"]
    full, out = tmp_path / "full", tmp_path / "killed"
    run_ok(distill_cmd(teacher, s, t, full, *flags))
    for fault in ("topk_shard:3", "topk_shard:2"):
        run_killed(distill_cmd(teacher, s, t, out, *flags), fault)
        assert not (out / "manifest.json").exists()
        assert_no_partial_files(out)
    run_ok(distill_cmd(teacher, s, t, out, *flags))
    names = sorted(p.name for p in visible_files(out))
    assert names == sorted(p.name for p in visible_files(full))
    assert not list(out.glob("*.tmp")), "a killed shard's temp file was left behind"
    for n in names:
        if n.endswith(".safetensors"):
            a, b = load_file(str(full / n)), load_file(str(out / n))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), n
    assert (full / "manifest.json").read_text() == (out / "manifest.json").read_text()


# --- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 32 MiB tmpfs of this test's own (needs root or CAP_SYS_ADMIN; skipped otherwise)."""
    d = tmp_path / "disk"
    d.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(d)], capture_output=True,
                           text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no `mount` here")
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def fill(disk: Path, leave: int) -> Path:
    """Take all the space of `disk` but `leave` bytes, with one file."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def assert_disk_full_error(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 2, p.stderr[-3000:]
    line = last_line(p.stderr)
    assert line.startswith("seqkd: error: ") and "no space left on device" in line, p.stderr[-3000:]
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_train_disk_full_then_resume(small_disk, train_ref):
    data, ref = train_ref
    ckpt = sum(f.stat().st_size for f in (ref / "checkpoints").rglob("*") if f.is_file())
    out = small_disk / "run"
    filler = fill(small_disk, ckpt + 1_500_000)  # room for the vocabulary, tokens and one checkpoint, not two
    cmd = train_cmd(data, out)
    p = run(cmd)
    assert_disk_full_error(p)
    assert latest_step(out) > 0, "the disk filled up before the first checkpoint: not a mid-run failure"
    assert not (out / "train_result.json").exists()
    assert_no_partial_files(out)
    filler.unlink()
    run_ok(cmd)
    assert_same_training(ref, out)


@pytest.mark.slow
def test_distill_disk_full_then_resume(small_disk, tmp_path, distill_data):
    teacher, s, t = distill_data
    full, out = tmp_path / "full", small_disk / "killed"
    run_ok(distill_cmd(teacher, s, t, full, "--beam", "3"))
    filler = fill(small_disk, 40_000)
    p = run(distill_cmd(teacher, s, t, out, "--beam", "3"))
    assert_disk_full_error(p)
    done = [f for f in visible_files(out / "shards") if f.suffix == ".jsonl"]
    assert 0 < len(done) < 10, f"{len(done)} shards finished: not a mid-run failure"
    assert_no_partial_files(out)
    filler.unlink()
    run_ok(distill_cmd(teacher, s, t, out, "--beam", "3"))
    for name in ("train.src", "train.tgt", "manifest.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name


# --- CTranslate2 conversion and int8 export ---------------------------------------------------------


@pytest.mark.slow
def test_ct2_conversion_and_export_killed(tmp_path, tiny_reverse):
    """Killed during the conversion (in the model folder) and while the export folder is copied: no
    conversion or export under its final name until complete; the rerun cleans the killed one's temp
    folder and writes what an uninterrupted export writes."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_reverse[0], model, ignore=shutil.ignore_patterns("ct2*", ".*"))
    ref_model = tmp_path / "ref_model"
    shutil.copytree(model, ref_model)

    def export(m: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "seqkd", "export", "--model", str(m), "--out", str(out), "--quiet"]

    run_ok(export(ref_model, tmp_path / "ref_export"))
    out = tmp_path / "export"
    run_killed(export(model, out), "ct2_convert:1")
    assert not (model / "ct2-int8").exists() and not out.exists()
    assert [p for p in model.glob(".ct2-int8.*") if p.is_dir()], "the kill left no temp folder: point not reached"
    run_killed(export(model, out), "export_copy:1")
    assert not out.exists()
    assert not [p for p in model.glob(".ct2-int8.*") if p.is_dir()], "the killed conversion's temp folder stayed"
    assert_no_partial_files(model)
    run_ok(export(model, out))
    assert_no_partial_files(out)
    ref = tmp_path / "ref_export"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    assert (out / "model.bin").read_bytes() == (ref / "model.bin").read_bytes()
    assert json.loads((out / "export.json").read_text()) == json.loads((ref / "export.json").read_text())


def test_ctrl_c_after_the_last_step_keeps_the_finished_run(tmp_path, monkeypatch):
    """Ctrl-C while a run finishes (after its last step, during clean-up): the model and
    train_result.json are written whole, then KeyboardInterrupt stops whatever called train(); the
    same call again finds the run done and returns the same result without training."""
    from conftest import reverse_task

    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training import validation
    from seqkd.training.trainer import TrainConfig, TrainData, train

    src, tgt = reverse_task(600, seed=1)
    val_src, val_tgt = reverse_task(50, seed=2)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), tmp_path / "vocab")
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=10, max_epochs=3, log_every=10, ckpt_every=10_000,
                      val_bleu=False)
    data = TrainData(src, tgt, val_src, val_tgt)
    out = tmp_path / "run"
    real_cleanup = validation.cleanup

    def ctrl_c_then_cleanup(run) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler only records it; the run goes on finishing
        real_cleanup(run)

    monkeypatch.setattr(validation, "cleanup", ctrl_c_then_cleanup)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or `&`, else Python's default handler
    with pytest.raises(KeyboardInterrupt):
        train(out, cfg, build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1), vocab,
              data, progress=False)
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back
    result = json.loads((out / "train_result.json").read_text())
    assert result["epochs"] == 3 and (out / "model.safetensors").exists()
    assert_no_partial_files(out)
    rows = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    nll = [r["val_nll"] for r in rows if r["type"] == "val"]
    assert nll[-1] < nll[0] - 0.1 and nll[-1] < 0.8 * math.log(vocab.size), nll  # it learned something

    monkeypatch.setattr(validation, "cleanup", real_cleanup)
    again = train(out, cfg, build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1), vocab,
                  data, progress=False)
    assert again == result
