"""Helpers of the fault-injection tests: run a command killed at a named point (seqkd/util/faults.py), and
check that a folder shows no partial file under a final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from safetensors import safe_open

TEMP_SUFFIXES = (".tmp", ".claim")


def env(fault: str = "") -> dict[str, str]:
    """The environment of a test run: one thread, and SEQKD_FAULT armed at `fault` (or unset)."""
    e = {k: v for k, v in os.environ.items() if k != "SEQKD_FAULT"}
    e["OMP_NUM_THREADS"] = "1"
    if fault:
        e["SEQKD_FAULT"] = fault
    return e


def run(cmd: list[str], fault: str = "", timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(fault), capture_output=True, text=True, timeout=timeout)


def run_killed(cmd: list[str], fault: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `cmd` with SEQKD_FAULT=`fault` and check that the point was reached: SIGKILL, not an exit."""
    p = run(cmd, fault, timeout)
    assert p.returncode == -signal.SIGKILL, f"{fault}: exit {p.returncode}, not killed\n{p.stderr[-2000:]}"
    return p


def run_ok(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    p = run(cmd, "", timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def last_line(text: str) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def visible_files(root: Path) -> list[Path]:
    """Files under their final names: no path part starting with "." (temp files and folders, locks)
    and no temp or claim suffix."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(".") for part in rel) and not p.name.endswith(TEMP_SUFFIXES):
            out.append(p)
    return out


def _complete_safetensors(p: Path) -> None:
    with safe_open(str(p), framework="np") as f:
        for k in f.keys():
            f.get_tensor(k)


def assert_no_partial_files(root: Path) -> None:
    """Every file under a final name is whole: JSON parses, every JSON line parses, safetensors load
    tensor by tensor; every checkpoint folder is complete and `latest.json` points at one; a distilled
    folder's train.src / train.tgt match its manifest when it has one; a CTranslate2 folder holds its
    model and config."""
    for p in visible_files(root):
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    raise AssertionError(f"{p}:{i + 1}: partial line ({e})") from None
        elif p.suffix == ".safetensors":
            _complete_safetensors(p)
    for d in root.rglob("checkpoints"):
        for step in d.glob("step-*"):
            assert {f.name for f in step.iterdir()} >= {"model.safetensors", "optim.safetensors", "state.json"}, step
        if (d / "latest.json").exists():
            assert (d / json.loads((d / "latest.json").read_text())["dir"]).is_dir(), d
    for ident_path in root.rglob("identity.json"):  # a distillation folder: every visible shard is whole
        ident = json.loads(ident_path.read_text())
        cfg, n = ident["config"], ident["input_pairs"]
        if cfg.get("fraction", 1.0) >= 1.0:
            for shard in (ident_path.parent / "shards").glob("shard-*.jsonl"):
                k = int(shard.stem.split("-")[1])
                rows = len(shard.read_text(encoding="utf-8").splitlines())
                assert rows == min(cfg["shard_size"], n - k * cfg["shard_size"]), f"{shard}: {rows} rows"
    for m in root.rglob("manifest.json"):
        if (m.parent / "train.tgt").exists() or (m.parent / "train.src").exists():
            n = json.loads(m.read_text())["pairs"]
            for side in ("train.src", "train.tgt"):
                assert len((m.parent / side).read_text(encoding="utf-8").splitlines()) == n, m.parent / side
    for d in [*root.rglob("ct2"), *root.rglob("ct2-*")]:
        if d.is_dir() and not d.name.startswith("."):
            assert {"model.bin", "config.json"} <= {f.name for f in d.iterdir()}, d


def latest_step(run_dir: Path) -> int:
    p = run_dir / "checkpoints" / "latest.json"
    return json.loads(p.read_text())["step"] if p.exists() else 0
