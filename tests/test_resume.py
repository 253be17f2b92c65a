"""`seqkd train` killed with SIGKILL and rerun ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from conftest import reverse_task, train_cmd
from safetensors.torch import load_file


def _run(cmd, env) -> str:
    """Run `cmd`; its stderr (the log)."""
    return subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=600).stderr


def assert_resumed(log: str, step: int, total: int) -> None:
    """The rerun whose log is `log` went on from checkpoint step `step` (> 0) instead of starting over: it says so,
    and it ran only the steps after it."""
    assert step > 0 and f"resuming from step {step} " in log, (step, log[-2000:])
    assert f"{total - step} steps in this run (steps {step} to {total})" in log, (step, total, log[-2000:])


def test_kill_and_resume_equals_uninterrupted(tmp_path, train_ref):
    """Killed at step 20 or later, with progress bars on, and rerun: the same weights, steps and metrics rows as
    the uninterrupted --quiet reference (`train_ref`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data, full = train_ref
    killed = tmp_path / "killed"
    cmd = train_cmd(data, killed, quiet=False)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_result.json").exists()
    step = json.loads(latest.read_text())["step"]  # where the rerun must go on from
    log = _run(cmd, env)

    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ra = json.loads((full / "train_result.json").read_text())
    rb = json.loads((killed / "train_result.json").read_text())
    assert (ra["steps"], ra["best_step"], ra["target_tokens"]) == (rb["steps"], rb["best_step"], rb["target_tokens"])
    assert abs(ra["best_metric"] - rb["best_metric"]) < 1e-6
    assert_resumed(log, step, rb["steps"])

    # metrics: nothing lost or duplicated
    def rows(run):
        return [(r["type"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert rows(full) == rows(killed)
    # the time spent writing checkpoints is in the train row after them: none in steps 1-5, the step-7 one by step 10
    train_rows = {r["step"]: r for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())
                  if r["type"] == "train"}
    assert train_rows[5]["ckpt_s"] == 0 and train_rows[10]["ckpt_s"] > 0


def _budget_stage(root: Path, tc, data, vocab, plan: bool = False):
    """Stage "s" of a Runner in `root`: a tiny model trained with `tc`; (runner, status it had)."""
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.reproduce.graph import identity
    from seqkd.reproduce.runner import Runner
    from seqkd.training.trainer import train

    def fn(d):
        model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
        train(d, tc, model, vocab, data, progress=False)

    r = Runner(root, progress=False, plan=True)
    r.stage("s", [], {"t": identity(tc)}, fn, tc)
    status = r.rows[0][1]
    if not plan:
        Runner(root, progress=False).stage("s", [], {"t": identity(tc)}, fn, tc)
    return status


def test_raised_patience_and_max_epochs_extend_a_finished_stage_to_where_a_fresh_run_ends(tmp_path, monkeypatch):
    """A finished stage whose only change is a larger budget trains on from its last checkpoint, instead of
    being discarded, and ends exactly where a fresh run with that budget ends; other changes still recompute."""
    from dataclasses import replace

    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.training import validation
    from seqkd.training.trainer import TrainConfig, TrainData

    src, tgt = reverse_task(300, seed=5)
    data = TrainData(src, tgt, *reverse_task(20, seed=6))
    vocab = train_vocab(src, tgt, VocabConfig(size=40), tmp_path / "vocab")
    seen = []

    def scripted(model, *a, **k):  # epoch 1 is the best; every later validation is worse
        seen.append(1)
        return 1.0 if len(seen) == 1 else 2.0

    monkeypatch.setattr(validation, "validation_loss", scripted)
    tc = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=5, val_bleu=False, threads=1, log_every=3,
                     ckpt_every=1000, patience=1, max_epochs=2)
    ext, fresh = tmp_path / "ext", tmp_path / "fresh"

    def result(root):
        return json.loads((root / "s" / "train_result.json").read_text())

    assert _budget_stage(ext, tc, data, vocab) == "to run"
    assert (result(ext)["epochs"], result(ext)["stopped"]) == (2, "early_stopping")
    seen.clear()
    tc2 = replace(tc, patience=4, max_epochs=3)  # goes on past the early stop, to the new epoch ceiling
    assert _budget_stage(ext, tc2, data, vocab) == "extends"
    assert (result(ext)["epochs"], result(ext)["stopped"]) == (3, "max_epochs")
    tc3 = replace(tc2, max_epochs=8)  # on until 4 epochs without improvement: epoch 5
    # a lower patience, a linear schedule with more epochs, or any other change: recomputed, not extended
    for other in (replace(tc3, patience=1), replace(tc3, schedule="linear"), replace(tc3, lr=2e-3)):
        assert _budget_stage(ext, other, data, vocab, plan=True) == "changed"
    assert _budget_stage(ext, tc3, data, vocab) == "extends"
    assert _budget_stage(ext, tc3, data, vocab) == "done"
    seen.clear()
    assert _budget_stage(fresh, tc3, data, vocab) == "to run"
    a, b = result(ext), result(fresh)
    assert (a["epochs"], a["stopped"], a["best_step"]) == (b["epochs"], b["stopped"], b["best_step"]) == (
        5, "early_stopping", b["steps"] // 5)
    assert (a["steps"], a["target_tokens"]) == (b["steps"], b["target_tokens"])
    assert json.loads((ext / "s" / "train_config.json").read_text())["max_epochs"] == 8

    def last(root):  # the weights the training ended with (model.safetensors holds epoch 1's, the best)
        return load_file(str(root / "s" / "checkpoints" / f"step-{result(root)['steps']}" / "model.safetensors"))

    wa, wb = last(ext), last(fresh)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)

    def rows(root):  # nothing lost or duplicated (a train row after a resume averages fewer steps)
        return [(r["type"], r["step"]) for r in map(json.loads, (root / "s" / "metrics.jsonl").open())]

    assert rows(ext) == rows(fresh)
    # a linear schedule: only a raised patience extends (its rate depends on the planned length)
    lin = tmp_path / "lin"
    seen.clear()
    tl = replace(tc, schedule="linear", max_epochs=3)
    _budget_stage(lin, tl, data, vocab)
    assert _budget_stage(lin, replace(tl, max_epochs=4), data, vocab, plan=True) == "changed"
    assert _budget_stage(lin, replace(tl, patience=3), data, vocab, plan=True) == "extends"
