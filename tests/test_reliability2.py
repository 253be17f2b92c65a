"""Reliability, round two (issue 40, items 4-7 and 9): significance of outputs with equal BLEU statistics, one-line
errors where a traceback was, lines that stay aligned, inputs longer than the model's positions, and the training
folder's lock held from the start. Error cases use tests/test_bad_input_matrix.py's `fail`: exit 2, one stderr line
naming the file, no traceback, nothing under the output name."""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from pathlib import Path

import pytest
from conftest import reverse_task
from test_bad_input_matrix import fail, lines, pair_files, train_argv

from seqkd.cli.main import main
from seqkd.util.fsutil import SeqkdError, folder_lock


# --- 4 significance: different texts with the same per-sentence BLEU statistics are not significant ----------------
def test_equal_statistics_are_not_significant():
    """Each sentence has one digit replaced, by "x" in one system and by "y" in the other (neither is in any
    reference): the texts differ, every sentence's n-gram matches and lengths are equal, so every resampled
    difference is 0. sacreBLEU alone gives p = 1 / (samples + 1) = 0.005 at 200 samples; seqkd gives p = 1."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from seqkd.inference.evaluate import paired_significance

    refs = reverse_task(100, seed=5)[1]

    def replace_one(mark: str) -> list[str]:
        return [" ".join([mark] + r.split()[1:]) for r in refs]

    hyps = {"baseline": replace_one("x"), "same_stats": replace_one("y"), "worse": ["y"] * len(refs)}
    assert hyps["baseline"] != hyps["same_stats"]
    assert (BLEU()._extract_corpus_statistics(hyps["baseline"], [refs])
            == BLEU()._extract_corpus_statistics(hyps["same_stats"], [refs]))
    named = [("baseline", hyps["baseline"]), ("same_stats", hyps["same_stats"])]
    raw = PairedTest(named, {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=200)()[1]["BLEU"][1].p_value
    assert raw == pytest.approx(1 / 201)  # what the report used to show as significant
    sig = paired_significance(hyps, refs, 200)
    assert sig["same_stats"] == {"p_value": 1.0, "significant": False}
    assert sig["worse"]["significant"]  # a real difference still goes through the bootstrap


# --- 5 one line instead of a traceback ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["seq_kd", "topk"])
def test_distill_missing_teacher(tmp_path, capsys, mode):
    out = tmp_path / "dist"
    fail(capsys, ["distill", "--mode", mode, "--teacher", tmp_path / "MISSING", "--out", out,
                  *pair_files(tmp_path, "1 2\n", "2 1\n")], tmp_path / "MISSING", "folder does not exist",
         absent=(out,))


def test_evaluate_empty_files(tmp_path, capsys, tiny_reverse):
    src, ref, scores = lines(tmp_path / "e.src", ""), lines(tmp_path / "e.ref", ""), tmp_path / "s.json"
    fail(capsys, ["evaluate", "--model", tiny_reverse[0], "--source", src, "--reference", ref, "--out", scores],
         f"{src}: nothing to evaluate", absent=(scores,))


def test_empty_validation_file_before_training(tmp_path, capsys):
    out, val = tmp_path / "run", lines(tmp_path / "empty.val", "")
    args = pair_files(tmp_path, "1 2\n3 4\n", "2 1\n4 3\n") + ["--set", f"data.val_src={val}",
                                                              "--set", f"data.val_tgt={val}"]
    fail(capsys, train_argv(out, *args), f"{val}: the validation set is empty", absent=(out,))


def _out_argv(cmd: str, model, out, tmp_path) -> list:
    data = pair_files(tmp_path, "1 2\n3 4\n", "2 1\n4 3\n")
    return {"distill": ["distill", "--teacher", model, "--out", out, *data],
            "topk": ["distill", "--mode", "topk", "--teacher", model, "--out", out, *data],
            "export": ["export", "--model", model, "--out", out],
            "vocab": ["vocab", "--set", "vocab.size=12", "--out", out, *data]}[cmd]


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file", "read-only-parent"])
@pytest.mark.parametrize("cmd", ["distill", "topk", "export", "vocab"])
def test_blocked_output_folder(tmp_path, capsys, monkeypatch, tiny_reverse, cmd, where):
    """The output path is a regular file, lies under one, or its parent may not be written (simulated through
    os.access: the tests run as root, for whom chmod blocks nothing): one line naming it, nothing written."""
    blocker = lines(tmp_path / "a_file", "x\n")
    out = {"is-a-file": blocker, "under-a-file": blocker / "sub",
           "read-only-parent": tmp_path / "readonly" / "out"}[where]
    if where == "read-only-parent":
        (tmp_path / "readonly").mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).name != "readonly" and real(p, mode, **kw))
    argv = _out_argv(cmd, tiny_reverse[0], out, tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    name = blocker if where == "under-a-file" and cmd in ("export", "vocab") else out
    if where == "read-only-parent" and cmd in ("export", "vocab"):
        name = out.parent  # built beside its name, then renamed: the parent is the folder written
    fail(capsys, argv, f"{name}: cannot create or write the folder")
    assert blocker.read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no temp folder, shard, index or lock left


# --- 6 lines end at \n only -----------------------------------------------------------------------------------------
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_translate_keeps_lines_at_other_separators(tmp_path, capsys, monkeypatch, tiny_reverse, sep):
    """3 lines in (each holding `sep`, which str.splitlines would split at) give 3 lines out, from stdin and
    from a file."""
    text = f"1 2{sep}3\n4 5{sep}\n{sep}6 7\n".encode()
    _stdin(monkeypatch, text)
    assert main(["translate", "--model", str(tiny_reverse[0]), "-o", str(tmp_path / "stdin.out")]) == 0
    inp = lines(tmp_path / "in.txt", text)
    assert main(["translate", "--model", str(tiny_reverse[0]), "-i", str(inp), "-o", str(tmp_path / "file.out")]) == 0
    for name in ("stdin.out", "file.out"):
        assert (tmp_path / name).read_bytes().count(b"\n") == 3, name
    assert (tmp_path / "stdin.out").read_bytes() == (tmp_path / "file.out").read_bytes()


def test_nul_byte_in_stdin(tmp_path, capsys, monkeypatch, tiny_reverse):
    _stdin(monkeypatch, b"1 2\n3 \x00 4\n")
    out = tmp_path / "o.txt"
    fail(capsys, ["translate", "--model", tiny_reverse[0], "-o", out], "<stdin>:2:", "NUL byte", absent=(out,))


# --- 7 sources and decode limits past the model's 512 positions -----------------------------------------------------
def _digits(n: int, seed: int) -> str:
    return " ".join(reverse_task(1, seed, lo=n, hi=n)[0][0].split())


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_long_source_truncated_with_a_warning(tmp_path, capsys, caplog, tiny_reverse, engine):
    """A source of 600 digits (over 600 tokens) is cut to the model's 512 positions and counted in a warning, as
    is the decode limit 1.5 x 512 + 10 capped at 512; the short line beside it is translated as usual. Forced
    decoding (evaluate's perplexity) cuts a long target the same way."""
    from seqkd.inference.decode import DecodeConfig, Translator

    long, short = _digits(600, 1), "1 2 3"
    inp, out = lines(tmp_path / "in.txt", f"{long}\n{short}\n"), tmp_path / "out.txt"
    with caplog.at_level(logging.WARNING, logger="seqkd"):
        assert main(["translate", "--model", str(tiny_reverse[0]), "--engine", engine, "--beam", "2",
                     "-i", str(inp), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("\n") == 2
    assert "1 of 2 sources longer than 512 tokens (the model's max_position_embeddings) were truncated" in caplog.text
    assert "capped at 512 tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seqkd"):
        scores = Translator(tiny_reverse[0], DecodeConfig(engine=engine)).score([long, short], [long, short])
    assert all(math.isfinite(s) for s, _ in scores) and scores[0][1] == 512  # 511 target tokens + </s>
    assert "1 of 2 targets longer than 511 tokens" in caplog.text


@pytest.fixture(scope="module")
def endless(tmp_path_factory, tiny_reverse):
    """A random `tiny` model that never ends a sentence (</s> suppressed): it decodes up to the length limit."""
    import torch

    from seqkd.data.vocab import Vocab
    from seqkd.models.marian import ModelConfig, build_model, save_model

    v = Vocab(tiny_reverse[0])
    model = build_model(ModelConfig("tiny"), v.size, v.pad_id, v.eos_id, seed=3)
    with torch.no_grad():
        model.final_logits_bias[..., v.eos_id] = -1e4
    out = tmp_path_factory.mktemp("endless") / "model"
    save_model(model, out)
    v.save_to(out)
    return out


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_decode_limit_capped_at_positions(caplog, endless, engine):
    """max_len_b = 600 asks for more tokens than the model has positions (both engines crashed at the 513th):
    the output stops at 512 tokens and the cap is counted in a warning."""
    from seqkd.inference.decode import DecodeConfig, Translator

    with caplog.at_level(logging.WARNING, logger="seqkd"):
        hyps = Translator(endless, DecodeConfig(engine=engine, beam=1, max_len_b=600)).translate(["1 2 3"])
    assert len(hyps[0][0].pieces) == 512
    assert "1 of 1 sentences had their decode limit" in caplog.text and "capped at 512 tokens" in caplog.text


# --- 9 the training folder is locked before the vocabulary is written -----------------------------------------------
def test_train_holds_the_lock_while_writing_the_vocabulary(tmp_path, capsys, monkeypatch):
    """`seqkd train` used to release the folder's lock while it wrote OUT/vocab (two runs started together could
    both write it): a second writer is now refused while the vocabulary is trained."""
    out = tmp_path / "run"
    seen = []

    def train_vocab(*args, **kwargs):
        with pytest.raises(SeqkdError, match="another training run is writing this folder"):
            with folder_lock(out, "training run"):
                pass
        seen.append(True)
        raise SeqkdError("stopped by the test after the check")

    monkeypatch.setattr("seqkd.training.run.train_vocab", train_vocab)
    fail(capsys, train_argv(out, *pair_files(tmp_path, "1 2\n", "2 1\n")), "stopped by the test")
    assert seen == [True]
    with folder_lock(out, "training run"):  # released at the end
        pass


@pytest.mark.parametrize("prune, named", [
    ("[{scheme: ../x, schedule: [0.5]}]", "prune[0].scheme '../x': unknown"),
    ("[{scheme: class-blind/../../x, schedule: [0.5]}]", "prune[0].scheme"),
    ("[{scheme: class-blind}]", "prune[0]: give exactly scheme and schedule"),
    ("[{scheme: class-blind, schedule: [0.5, x]}]", "prune[0].schedule"),
    ("[{scheme: class-blind, schedule: [1.5]}]", "prune[0].schedule"),
    ("x", "config prune: expected a list"),
])
def test_config_names_are_checked_before_any_work(tmp_path, capsys, prune, named):
    """A prune entry becomes part of a stage folder's name (a folder removed when settings change): every name
    and scheme is checked before anything is read or written: one line, exit 2, no run folder."""
    out = tmp_path / "run"
    fail(capsys, ["reproduce", "--preset", "tiny", "--data-dir", tmp_path / "no-data", "--out", out,
                  "--set", f"prune={prune}"], named, absent=(out,))


def test_fast_size_and_suffix_names_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    fail(capsys, ["reproduce", "--preset", "tiny", "--data-dir", tmp_path / "no-data", "--out", out,
                  "--set", "fast_sizes=[../x]"], "../x", absent=(out,))
    fail(capsys, ["reproduce", "--preset", "tiny", "--data-dir", tmp_path / "no-data", "--out", out,
                  "--set", "small_suffix=-../x"], "small_suffix", absent=(out,))


def test_a_bad_language_leaves_no_run_folder(tmp_path, capsys, multi30k_dir):
    """`reproduce` checks the data before it writes anything: a language Multi30k lacks leaves nothing behind."""
    out = tmp_path / "run"
    fail(capsys, ["reproduce", "--preset", "tiny", "--data-dir", multi30k_dir, "--src", "de", "--tgt", "xx",
                  "--out", out], absent=(out,))


# --- 3 a save killed between its renames (faults point `model_save`) is refused with one line ------------------------
SAVE_TWO = """
import sys
from seqkd.models.marian import ModelConfig, build_model, save_model
out = sys.argv[1]
save_model(build_model(ModelConfig("tiny"), 40, 39, 2, seed=1), out)  # a complete save
save_model(build_model(ModelConfig("tiny", {"d_model": 32}), 40, 39, 2, seed=2), out)  # killed half-renamed
"""


def test_a_save_killed_between_its_renames_is_refused_with_one_line(tmp_path):
    """Killed after config.json of the second save is renamed into place and before its weights: the folder holds
    the new config.json and the old weights under their final names. Loading it is one SeqkdError naming the file
    (without `saved.json`, the record written last, it would load the wrong weights or fail deep in torch)."""
    import subprocess

    from seqkd.models.marian import check_model_folder, load_model

    out = tmp_path / "model"
    p = subprocess.run([sys.executable, "-c", SAVE_TWO, str(out)], env={**os.environ, "SEQKD_FAULT": "model_save:5"},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]  # the first save passes the point 4 times (3 files + the record)
    assert '"d_model": 32' in (out / "config.json").read_text()  # the second save's config, the first's weights
    with pytest.raises(SeqkdError, match=r"model/config\.json: not the file saved\.json records"):
        check_model_folder(out)
    with pytest.raises(SeqkdError, match="interrupted"):
        load_model(out)
