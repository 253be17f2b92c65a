"""`seqkd train` killed with SIGKILL and rerun ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import reverse_task
from safetensors.torch import load_file


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return str(path)


def _cmd(tmp: Path, out: Path) -> list[str]:
    src, tgt = reverse_task(1500, seed=5)
    vsrc, vtgt = reverse_task(50, seed=6)
    files = {k: _write(tmp / f"{k}.txt", v) for k, v in
             {"ts": src, "tt": tgt, "vs": vsrc, "vt": vtgt}.items()}
    sets = ["data.train_src=" + files["ts"], "data.train_tgt=" + files["tt"], "data.val_src=" + files["vs"],
            "data.val_tgt=" + files["vt"], "vocab.size=40", "train.max_tokens=512", "train.lr=1e-3",
            "train.warmup_steps=20", "train.max_epochs=3", "train.ckpt_every=7", "train.val_every=25",
            "train.val_bleu=false", "train.threads=1", "train.log_every=5", "model.overrides={dropout: 0.1}"]
    cmd = [sys.executable, "-m", "seqkd", "train", "--size", "tiny", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run(cmd, env):
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_cmd(tmp_path, full), env)

    proc = subprocess.Popen(_cmd(tmp_path, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    _run(_cmd(tmp_path, killed), env)

    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ra = json.loads((full / "train_result.json").read_text())
    rb = json.loads((killed / "train_result.json").read_text())
    assert (ra["steps"], ra["best_step"], ra["target_tokens"]) == (rb["steps"], rb["best_step"], rb["target_tokens"])
    assert abs(ra["best_metric"] - rb["best_metric"]) < 1e-6

    # metrics: nothing lost or duplicated
    def rows(run):
        return [(r["type"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert rows(full) == rows(killed)
    # the time spent writing checkpoints is in the train row after them: none in steps 1-5, the step-7 one by step 10
    train_rows = {r["step"]: r for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())
                  if r["type"] == "train"}
    assert train_rows[5]["ckpt_s"] == 0 and train_rows[10]["ckpt_s"] > 0
