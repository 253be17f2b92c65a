"""`seqkd train` under torchrun (gloo, CPU): the same loss curve as one process, and resume after SIGKILL.

Tolerance: the tiny model has no dropout and trains in float32 here, so two ranks differ from one
process only by summation order and padding (each rank pads its own rows): logged losses and
validation NLL must agree within 1e-3 relative.
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
from conftest import reverse_task, write_lines

TOL = 1e-3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from seqkd.data.vocab import VocabConfig, train_vocab

    root = tmp_path_factory.mktemp("ddp")
    src, tgt = reverse_task(800, seed=1)
    vs, vt = reverse_task(60, seed=2)
    train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    files = {"train_src": write_lines(root / "train.src", src), "train_tgt": write_lines(root / "train.tgt", tgt),
             "val_src": write_lines(root / "val.src", vs), "val_tgt": write_lines(root / "val.tgt", vt)}
    args = ["train", "--vocab", str(root / "vocab"), "--size", "tiny", "--epochs", "2"]
    for k, v in {**{f"data.{k}": v for k, v in files.items()}, "train.max_tokens": 256, "train.bf16": "off",
                 "train.val_bleu": "false", "train.log_every": 5, "train.threads": 1, "train.warmup_steps": 20,
                 "train.lr": 1e-3, "train.ckpt_every": 7}.items():
        args += ["--set", f"{k}={v}"]
    return root, args


def _cmd(args: list[str], out: Path, ranks: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return (launcher if ranks > 1 else [sys.executable]) + ["-m", "seqkd", *args, "--out", str(out)]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _metrics(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return ({r["step"]: r["loss"] for r in rows if r["type"] == "train"},
            {r["step"]: r["val_nll"] for r in rows if r["type"] == "val"})


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line contains `marker`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def _result(run: Path) -> dict:
    return json.loads((run / "train_result.json").read_text())


def _close(a: dict[int, float], b: dict[int, float], steps=None) -> None:
    for s in steps if steps is not None else a:
        assert abs(a[s] - b[s]) <= TOL * abs(a[s]), (s, a[s], b[s])


@pytest.fixture(scope="module")
def single(setup):
    root, args = setup
    subprocess.run(_cmd(args, root / "single", 1), check=True, env=_env(), capture_output=True)
    return root / "single"


def test_two_ranks_match_one_process(setup, single):
    root, args = setup
    p = subprocess.run(_cmd(args, root / "two", 2), env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    one, two = _result(single), _result(root / "two")
    assert two["world_size"] == 2 and one["steps"] == two["steps"] > 40
    assert one["target_tokens"] == two["target_tokens"]  # the same global batches
    (tl1, vl1), (tl2, vl2) = _metrics(single), _metrics(root / "two")
    assert tl1.keys() == tl2.keys() and vl1.keys() == vl2.keys()
    _close(tl1, tl2)
    _close(vl1, vl2)
    assert vl1[max(vl1)] < 0.7 * math.log(40)  # learned: well below the uniform distribution's NLL
    assert not list((root / "two").glob("**/*.tmp"))


# resumed under 1 rank (a world-size change) by default; under 2 ranks it is marked slow (one of the
# slowest cases in `pytest --durations`)
@pytest.mark.parametrize("resume_ranks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_two_ranks_killed_resume(setup, single, resume_ranks):
    root, args = setup
    out = root / f"killed-{resume_ranks}"
    p = subprocess.Popen(_cmd(args, out, 2), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest.exists() and json.loads(latest.read_text())["step"] >= 14):
        time.sleep(0.05)
    _kill_all(str(out))  # torchrun and both ranks (torchrun starts its workers in their own sessions)
    p.wait()
    assert not (out / "train_result.json").exists()
    killed_at = json.loads(latest.read_text())["step"]
    # resume with 1 or 2 ranks: the same number of steps, and the curve of an uninterrupted run
    q = subprocess.run(_cmd(args, out, resume_ranks), env=_env(), capture_output=True, text=True)
    assert q.returncode == 0, q.stderr[-3000:]
    one, res = _result(single), _result(out)
    assert res["steps"] == one["steps"] and res["world_size"] == resume_ranks
    (tl1, vl1), (tlk, vlk) = _metrics(single), _metrics(out)
    assert tlk.keys() == tl1.keys()  # nothing lost or logged twice
    _close(vl1, vlk)
    _close(tl1, tlk, [s for s in tl1 if s > killed_at + 5 or s <= killed_at])


def test_cuda_without_gpu_is_an_error_not_a_cpu_fallback(setup, capsys):
    import torch

    from seqkd.cli.main import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, args = setup
    out = root / "cuda"
    assert main([*args, "--set", "train.device=cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (out / "model.safetensors").exists() and not (out / "checkpoints").exists()
