"""Bad-input matrix (issue 12): each case runs the CLI in-process and checks the exit code (2 for a
user error), exactly one stderr line starting with "seqkd: error:" that names the file (and line),
and that nothing was left under the final output name. The "not an error" cases check alignment
and the cleaning counts instead. The cases of tests/test_bad_input.py are not repeated here."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from seqkd.cli.main import main
from seqkd.util.fsutil import SeqkdError, folder_lock


def fail(capsys, argv: list[str], *names: str, absent: tuple[Path, ...] = ()) -> str:
    """Run `seqkd ARGV`; expect exit 2 and one error line naming every string in `names` (a progress bar
    that ran before the error may precede it on stderr)."""
    code = main([str(x) for x in argv])
    stderr = capsys.readouterr().err
    err = re.split(r"[\r\n]", stderr.strip())[-1]
    assert code == 2, stderr
    assert err.startswith("seqkd: error:") and stderr.count("seqkd: error:") == 1, stderr
    assert "Traceback" not in stderr, stderr
    for n in names:
        assert str(n) in err, (n, err)
    for p in absent:
        assert not Path(p).exists(), p
    return err


def lines(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def pair_files(tmp: Path, src: str | bytes, tgt: str | bytes) -> list[str]:
    """--set arguments for explicit train and val files (no corpus access)."""
    s, t = lines(tmp / "train.src", src), lines(tmp / "train.tgt", tgt)
    vs, vt = lines(tmp / "val.src", "1 2\n"), lines(tmp / "val.tgt", "2 1\n")
    return ["--set", f"data.train_src={s}", "--set", f"data.train_tgt={t}",
            "--set", f"data.val_src={vs}", "--set", f"data.val_tgt={vt}"]


def train_argv(out: Path, *extra) -> list:
    return ["train", "--size", "tiny", "--out", out, "--data-dir", out.parent / "no-data", *extra]


# --- 1 empty training files ------------------------------------------------------------------------
def test_empty_train_files(tmp_path, capsys):
    out = tmp_path / "run"
    fail(capsys, train_argv(out, *pair_files(tmp_path, "", "")), "train.src", "no usable training pairs",
         "kept 0 of 0", absent=(out,))


# --- 2 blank lines: translate keeps alignment, training skips them ----------------------------------------
def test_blank_lines_translate_keeps_alignment(tmp_path, capsys, tiny_reverse):
    inp, out = lines(tmp_path / "in.txt", "1 2 3\n\n   \n4 5 6\n"), tmp_path / "out.txt"
    assert main(["translate", "--model", str(tiny_reverse[0]), "-i", str(inp), "-o", str(out)]) == 0
    got = out.read_text(encoding="utf-8").split("\n")
    assert len(got) == 5 and got[-1] == "" and got[1].strip() == "" and got[2].strip() == "", got
    assert got[0] and got[3]


def test_blank_lines_skipped_in_training(tmp_path, capsys, caplog):
    args = pair_files(tmp_path, "1 2 3\n\n   \n4 5 6\n7 8\n", "3 2 1\n1\n1\n6 5 4\n8 7\n")
    with caplog.at_level(logging.INFO, logger="seqkd"):
        assert main(["vocab", "--out", str(tmp_path / "vocab"), "--set", "vocab.size=20", *args]) == 0
    assert "kept 3 of 5 pairs (skipped: 2 empty, 0 over 1000 chars" in caplog.text


# --- 3 NUL byte ------------------------------------------------------------------------------------
def test_nul_byte_translate(tmp_path, capsys, tiny_reverse):
    inp, out = lines(tmp_path / "in.txt", b"1 2\n3 \x00 4\n"), tmp_path / "out.txt"
    fail(capsys, ["translate", "--model", tiny_reverse[0], "-i", inp, "-o", out], "in.txt:2:", "NUL byte",
         absent=(out,))


def test_nul_byte_train(tmp_path, capsys):
    out = tmp_path / "run"
    fail(capsys, train_argv(out, *pair_files(tmp_path, "1 2\n3 4\n5 6\n", "2 1\n4 3\n6 \x00 5\n")),
         "train.tgt:3:", "NUL byte", absent=(out,))


def test_nul_byte_distill(tmp_path, capsys):
    out = tmp_path / "dist"
    args = pair_files(tmp_path, "1 2\n3 \x00 4\n", "2 1\n4 3\n")
    fail(capsys, ["distill", "--teacher", tmp_path / "no-teacher", "--out", out, *args], "train.src:2:", "NUL byte",
         absent=(out / "train.src",))


# --- 4 over-long lines are skipped and counted -------------------------------------------------------
def test_long_lines_skipped_in_training(tmp_path, capsys, caplog):
    long = " ".join("7" * 40)
    args = pair_files(tmp_path, f"1 2 3\n{long}\n4 5\n", "3 2 1\n7 7\n5 4\n")
    with caplog.at_level(logging.INFO, logger="seqkd"):
        assert main(["vocab", "--out", str(tmp_path / "vocab"), "--set", "vocab.size=20",
                     "--set", "data.max_chars=20", *args]) == 0
    assert "kept 2 of 3 pairs (skipped: 0 empty, 1 over 20 chars" in caplog.text


# --- 5 CRLF reads as LF ------------------------------------------------------------------------------
def test_crlf_same_as_lf(tmp_path, capsys, tiny_reverse):
    text = "1 2 3\n4 5\n\n6 7 8 9\n"
    lf, crlf = lines(tmp_path / "lf.txt", text), lines(tmp_path / "crlf.txt", text.replace("\n", "\r\n"))
    from seqkd.data.corpus import read_lines

    assert read_lines(crlf) == read_lines(lf) == ["1 2 3", "4 5", "", "6 7 8 9"]
    for name in ("lf", "crlf"):
        assert main(["translate", "--model", str(tiny_reverse[0]), "-i", str(tmp_path / f"{name}.txt"),
                     "-o", str(tmp_path / f"{name}.out")]) == 0
    assert (tmp_path / "lf.out").read_bytes() == (tmp_path / "crlf.out").read_bytes()


# --- 6 missing input file ----------------------------------------------------------------------------
def test_missing_input_files(tmp_path, capsys, tiny_reverse):
    model, nope = tiny_reverse[0], tmp_path / "nope.src"
    ref = lines(tmp_path / "ref.txt", "1\n")
    fail(capsys, ["evaluate", "--model", model, "--source", nope, "--reference", ref, "--out", tmp_path / "s.json"],
         nope, "file not found", absent=(tmp_path / "s.json",))
    out = tmp_path / "run"
    args = pair_files(tmp_path, "1 2\n", "2 1\n") + ["--set", f"data.train_src={nope}"]
    fail(capsys, train_argv(out, *args), nope, "file not found", absent=(out,))
    fail(capsys, ["distill", "--teacher", model, "--out", tmp_path / "dist", *args], nope, "not found",
         absent=(tmp_path / "dist" / "train.src",))
    fail(capsys, ["distill", "--mode", "topk", "--teacher", model, "--out", tmp_path / "topk", *args], nope,
         "not found", absent=(tmp_path / "topk",))


# --- 7 missing model folder --------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["translate", "evaluate", "export"], ids=["translate", "evaluate", "export"])
def test_missing_model_folder(tmp_path, capsys, cmd):
    model, out = tmp_path / "missing-dir", tmp_path / "out"
    src = lines(tmp_path / "in.txt", "1 2\n")
    argv = {"translate": ["-i", src, "-o", out], "evaluate": ["--source", src, "--reference", src, "--out", out],
            "export": ["--out", out]}[cmd]
    err = fail(capsys, [cmd, "--model", model, *argv], f"{model}: model", "folder does not exist", absent=(out,))
    assert "source.spm" not in err and "config.json" not in err


# --- 8 checkpoint of another size --------------------------------------------------------------------
def test_resume_checkpoint_of_another_size(tmp_path, capsys, tiny_reverse):
    import torch

    from seqkd.data.vocab import Vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training import checkpoint

    vocab_dir, out = tiny_reverse[0], tmp_path / "run"
    v = Vocab(vocab_dir)
    other = build_model(ModelConfig("student-small"), v.size, v.pad_id, v.eos_id)
    opt = torch.optim.AdamW(other.parameters())
    checkpoint.save(out, other, opt, {"step": 3, "epoch": 0}, [torch.get_rng_state(), torch.empty(0)])
    fail(capsys, train_argv(out, "--vocab", vocab_dir, *pair_files(tmp_path, "1 2\n", "2 1\n")),
         out / "checkpoints" / "step-3", "checkpoint of another model size", absent=(out / "model.safetensors",))


# --- 9 config: unknown key, wrong types, fractional integers -----------------------------------------
@pytest.mark.parametrize("override,message", [
    ("train.lrr=1", "config train: unknown key(s) lrr"),
    ("train.max_epochs=1.7", "config train.max_epochs: expected an integer, got 1.7"),
    ("train.max_epochs=abc", "config train.max_epochs: expected an integer, got 'abc'"),
    ("train.lr=[1]", "config train.lr: expected a number, got [1]"),
    ("data.src=[de]", "config data.src: expected a string, got ['de']"),
    ("model.size={a: 1}", "config model.size: expected a string, got {'a': 1}"),
    ("model.overrides=[1]", "config model.overrides: expected a mapping, got [1]"),
    ("train.adam_betas=0.9", "config train.adam_betas: expected a list, got 0.9"),
    ("train.val_bleu=maybe", "config train.val_bleu: expected true/false, got 'maybe'"),
], ids=["unknown-key", "fractional-int", "str-for-int", "list-for-float", "list-for-str", "dict-for-str",
        "list-for-dict", "scalar-for-tuple", "str-for-bool"])
def test_config_types(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    fail(capsys, train_argv(out, "--set", override), message, absent=(out,))


def test_config_types_from_yaml(tmp_path, capsys):
    cfg = lines(tmp_path / "c.yaml", "train:\n  max_epochs: 2.5\n")
    out = tmp_path / "run"
    fail(capsys, train_argv(out, "--config", cfg), "train.max_epochs: expected an integer, got 2.5", absent=(out,))


def test_config_whole_numbers_still_accepted():
    from seqkd.config import load_run_config

    cfg = load_run_config(None, ["train.max_epochs=2.0", "train.lr=1", "train.warmup_steps=1e3"])
    assert cfg.train.max_epochs == 2 and isinstance(cfg.train.max_epochs, int)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.warmup_steps == 1000


# --- 10 top-k cache of another temperature or k ------------------------------------------------------
def test_topk_cache_of_another_temperature(tmp_path, capsys, tiny_reverse):
    model, cache, out = tiny_reverse[0], tmp_path / "cache", tmp_path / "run"
    args = pair_files(tmp_path, "1 2 3\n4 5\n", "3 2 1\n5 4\n")
    assert main(["distill", "--mode", "topk", "--teacher", str(model), "--temperature", "2", "--topk", "4",
                 "--out", str(cache), *args]) == 0
    capsys.readouterr()
    fail(capsys, train_argv(out, "--vocab", model, "--topk-cache", cache, "--word-kd", "0.5", *args),
         cache / "manifest.json", "temperature 2.0", "train.loss.temperature=1.0", absent=(out / "model.safetensors",))

    from seqkd.data.tokdata import hash_pairs
    from seqkd.data.vocab import Vocab
    from seqkd.training.kd import offline_teacher

    pairs = [("1 2 3", "3 2 1"), ("4 5", "5 4")]
    with pytest.raises(SeqkdError, match="holds k=4 but this run asks for k=8"):
        offline_teacher(cache, Vocab(model), hash_pairs(lambda: pairs), temperature=2.0, k=8)
    assert offline_teacher(cache, Vocab(model), hash_pairs(lambda: pairs), temperature=2.0, k=4) is not None


# --- 11 output folder that cannot be created ---------------------------------------------------------
def test_output_under_a_regular_file(tmp_path, capsys, tiny_reverse):
    blocker = lines(tmp_path / "a_file", "x\n")
    src = lines(tmp_path / "in.txt", "1 2\n")
    fail(capsys, ["translate", "--model", tiny_reverse[0], "-i", src, "-o", blocker / "sub" / "o.txt"],
         blocker / "sub" / "o.txt", "cannot write")
    fail(capsys, train_argv(blocker / "sub", *pair_files(tmp_path, "1 2\n", "2 1\n")), blocker / "sub",
         "cannot create")
    assert blocker.read_text() == "x\n"


# --- 12 a second writer of a training folder ---------------------------------------------------------
def test_training_folder_locked(tmp_path, capsys):
    out = tmp_path / "run"
    with folder_lock(out, "training run"):
        fail(capsys, train_argv(out, *pair_files(tmp_path, "1 2\n", "2 1\n")), out,
             "another training run is writing this folder", f"pid {os.getpid()}")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no vocab, no config, no checkpoints


# --- 13 unknown size / preset before any data access -------------------------------------------------
def test_unknown_size_before_data(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--size", "huge", "--out", out, "--data-dir", tmp_path / "no-data"]
    fail(capsys, argv, "unknown model size 'huge'", absent=(out,))
    fail(capsys, ["train", "--set", "model.size=huge", "--out", out, "--data-dir", tmp_path / "no-data"],
         "unknown model size 'huge'", absent=(out,))


def test_unknown_preset_before_data(tmp_path, capsys):
    out = tmp_path / "run"
    fail(capsys, ["reproduce", "--preset", "nope", "--out", out, "--data-dir", tmp_path / "no-data"],
         "unknown preset 'nope'", absent=(out,))


# --- 14 distill argument errors before the teacher is loaded -----------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--beam", "0"], "--beam 0: must be at least 1"),
    (["--beam", "-3"], "--beam -3: must be at least 1"),
    (["--shard-size", "-1"], "--shard-size -1: must be at least 1"),
    (["--shard-size", "0"], "--shard-size 0: must be at least 1"),
], ids=["beam-0", "beam-negative", "shard-size-negative", "shard-size-0"])
def test_distill_arguments_before_teacher(tmp_path, capsys, flags, message):
    out = tmp_path / "dist"
    fail(capsys, ["distill", "--mode", "seq_inter", "--teacher", tmp_path / "no-teacher", "--out", out,
                  "--data-dir", tmp_path / "no-data", *flags], message, absent=(out,))
