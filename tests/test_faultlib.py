"""faultlib's checks can fail: each is given a planted bad file (as the security scan is given planted snippets),
and a clean folder passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from faultlib import assert_no_partial_files
from safetensors import SafetensorError
from safetensors.torch import save_file


def _good(root: Path) -> Path:
    """A folder as a finished run leaves it: a model, a checkpoint, metrics, a distilled folder, a ct2 folder."""
    root.mkdir()
    save_file({"w": torch.zeros(64, 64)}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"d_model": 64}))
    (root / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    step = root / "checkpoints" / "step-5"
    step.mkdir(parents=True)
    for f in ("model.safetensors", "optim.safetensors"):
        save_file({"w": torch.zeros(4)}, str(step / f))
    (step / "state.json").write_text("{}")
    (root / "checkpoints" / "latest.json").write_text(json.dumps({"dir": "step-5", "step": 5}))
    d = root / "distilled"
    (d / "shards").mkdir(parents=True)
    (d / "identity.json").write_text(json.dumps({"config": {"shard_size": 2}, "input_pairs": 3}))
    (d / "shards" / "shard-00000.jsonl").write_text('{"i": 0}\n{"i": 1}\n')
    (d / "shards" / "shard-00001.jsonl").write_text('{"i": 2}\n')
    (d / "manifest.json").write_text(json.dumps({"pairs": 3}))
    (d / "train.src").write_text("a\nb\nc\n")
    (d / "train.tgt").write_text("x\ny\nz\n")
    (root / "ct2").mkdir()
    (root / "ct2" / "model.bin").write_bytes(b"\0" * 8)
    (root / "ct2" / "config.json").write_text("{}")
    return root


def _truncate(p: Path, keep: int) -> None:
    p.write_bytes(p.read_bytes()[:keep])


PLANTS = {
    "a JSON file cut short": lambda r: _truncate(r / "config.json", 5),
    "a torn JSONL line": lambda r: (r / "metrics.jsonl").write_text('{"step": 1}\n{"st'),
    "weights cut short": lambda r: _truncate(r / "model.safetensors", 1000),
    "a checkpoint without its optimizer state": lambda r: (r / "checkpoints" / "step-5" / "optim.safetensors").unlink(),
    "latest.json naming a missing checkpoint": lambda r: (r / "checkpoints" / "latest.json").write_text(
        json.dumps({"dir": "step-9", "step": 9})),
    "a shard with a row missing": lambda r: (r / "distilled" / "shards" / "shard-00000.jsonl").write_text('{"i": 0}\n'),
    "train.tgt shorter than its manifest": lambda r: (r / "distilled" / "train.tgt").write_text("x\ny\n"),
    "a ct2 folder without its model": lambda r: (r / "ct2" / "model.bin").unlink(),
}


def test_a_clean_folder_passes(tmp_path):
    assert_no_partial_files(_good(tmp_path / "run"))


@pytest.mark.parametrize("plant", list(PLANTS))
def test_each_check_catches_its_planted_file(tmp_path, plant):
    root = _good(tmp_path / "run")
    PLANTS[plant](root)
    with pytest.raises((AssertionError, ValueError, SafetensorError)):  # ValueError: JSON; SafetensorError
        assert_no_partial_files(root)
