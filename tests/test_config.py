"""Typed configs: YAML round trip, overrides, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqkd.config import RunConfig, apply_overrides, dump, from_dict, load_run_config
from seqkd.util.fsutil import SeqkdError


def test_roundtrip_and_overrides(tmp_path):
    cfg = RunConfig()
    cfg.train.lr = 1e-3
    p = tmp_path / "c.yaml"
    p.write_text(dump(cfg))
    overrides = ["model.size=tiny", "train.adam_betas=[0.9, 0.99]", "train.lr=1e-3"]
    back = load_run_config(str(p), overrides)
    assert back.train.lr == 1e-3 and isinstance(back.train.lr, float)
    assert back.model.size == "tiny" and back.train.adam_betas == (0.9, 0.99)
    assert dump(load_run_config(str(p))) == dump(cfg)


def test_unknown_keys_are_errors():
    with pytest.raises(SeqkdError, match="unknown key.*lrr"):
        from_dict(RunConfig, {"train": {"lrr": 1}})
    with pytest.raises(SeqkdError, match="unknown key.*trian"):
        from_dict(RunConfig, {"trian": {}})
    with pytest.raises(SeqkdError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_missing_config_file(tmp_path):
    with pytest.raises(SeqkdError, match="not found"):
        load_run_config(str(tmp_path / "nope.yaml"))


def test_yaml_keeps_no_and_on_as_strings(tmp_path):
    """YAML 1.2 booleans only: a language code `no` (Norwegian) stays "no", `bf16: on` stays "on"; a bool
    field still takes yes / no / on / off."""
    from seqkd.config import load_run_config

    p = tmp_path / "c.yaml"
    p.write_text("data: {src: no, tgt: en}\ntrain: {val_bleu: off, bf16: on}\n")
    c = load_run_config(str(p))
    assert (c.data.src, c.data.tgt, c.train.val_bleu, c.train.bf16) == ("no", "en", False, "on")
    c = load_run_config(None, ["data.src=no", "train.val_bleu=yes", "train.bf16=true"])
    assert (c.data.src, c.train.val_bleu, c.train.bf16) == ("no", True, "on")


def test_decode_section_is_refused_not_ignored(tmp_path):
    """A non-default `decode:` section would do nothing: refused with one line; defaults (as saved in every
    run's seqkd.yaml) still load."""
    from seqkd.config import dump, load_run_config
    from seqkd.util.fsutil import SeqkdError

    with pytest.raises(SeqkdError, match="config decode: .* do not decode with it"):
        load_run_config(None, ["decode.beam=8"])
    saved = tmp_path / "seqkd.yaml"
    saved.write_text(dump(load_run_config(None, [])))
    assert "decode:" in saved.read_text() and load_run_config(str(saved)).decode.beam == 5


def test_ci_runs_the_readme_commands():
    """CI runs the README's set-up block as written (relative SEQKD_DATA included), not a variant of it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    awk = ci.split('commands="$(', 1)[1].split(')"', 1)[0]
    block = subprocess.run(["bash", "-c", awk], cwd=root, capture_output=True, text=True, check=True).stdout
    lines = block.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("python3 -m venv .venv") and "pip install torch==2.13.0" in lines[0]
    assert lines[1] == "SEQKD_DATA=../shared/data/multi30k python -m pytest -q"
    assert "pytest" not in ci.replace(awk, "").replace("pytest -q -m slow", "")
