"""Speed measurement: the one warm-up-and-timing loop, S1 in `seqkd bench` (measured, or from a bench JSON), and
`seqkd tune-decode`. Values are checked against the rows they come from; no timing target is asserted."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from conftest import reverse_task

from seqkd.cli.main import main
from seqkd.inference.bench import best_against_best, s1_lines
from seqkd.inference.decode import Hypothesis
from seqkd.inference.timing import Timing, rotation, time_interleaved
from seqkd.util.fsutil import SeqkdError

SPLIT = "test_2018_flickr"  # a Multi30k split without a pinned checksum: a local folder may hold digit strings


class Recorder:
    """A stand-in translator that records each call (its name, the number of lines, the beam)."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def translate(self, lines, beam=None):
        self.calls.append((self.name, len(lines), beam))
        return [[Hypothesis(f"{self.name}{len(self.calls)} {ln}", [], 0.0)] for ln in lines]


def test_time_interleaved_warms_up_then_interleaves_and_keeps_the_last_repetition():
    calls: list = []
    systems = [(Recorder(n, calls), b) for n, b in (("A", 1), ("B", 5), ("C", 1))]
    src = [str(i) for i in range(40)]
    out = time_interleaved(systems, src, repeats=4, warmup=8)
    assert calls[:3] == [("A", 8, 1), ("B", 8, 5), ("C", 8, 1)]  # warm-up of each first
    assert [c[0] for c in calls[3:]] == list("ABC" "BCA" "CAB" "ABC")  # never all A, then all B
    assert all(n == 40 for _, n, _ in calls[3:])
    assert [len(t.seconds) for t in out] == [4, 4, 4] and all(t.n == 40 for t in out)
    assert out[0].texts()[0] == "A13 0" and out[2].texts()[0] == "C15 0"  # the last repetition's output (calls 13, 15)
    assert rotation(3, 4) == [1, 2, 0] and rotation(0, 2) == []
    assert len(time_interleaved(systems[:1], src, repeats=0, warmup=8)[0].seconds) == 1  # at least one repetition


def test_timing_median_and_range_are_of_sentences_per_second():
    t = Timing(100, seconds=[0.5, 2.0, 1.0, 0.25])
    assert t.rates() == [50, 100, 200, 400]
    assert t.sent_per_s == 150 and t.sent_per_s_min == 50 and t.sent_per_s_max == 400


def _row(model, engine, search, sps, bleu):
    return {"model": f"runs/{model}", "engine": engine, "vmap": False, "threads": 2, "inter_threads": 1,
            "search": search, "sentences": 10, "seconds": 10 / sps, "sent_per_s": sps, "sent_per_s_min": sps - 1,
            "sent_per_s_max": sps + 1, "tgt_tok_per_s": 5 * sps, "bleu": bleu}


def test_s1_lines_one_per_student_and_named_errors():
    rows = [_row("t", "ct2", "greedy", 90, 30.0), _row("t", "ct2", "beam5", 20, 31.0),
            _row("t", "ct2-int8", "beam5", 30, 30.5), _row("a", "ct2", "greedy", 300, 29.0),
            _row("a", "ct2", "beam5", 50, 30.0), _row("b", "ct2-int8", "greedy", 600, 27.5)]
    lines = s1_lines(rows, "t")
    assert lines == [f"S1 = {300 / 30:.1f}x (range {299 / 31:.1f}-{301 / 29:.1f}x): a ct2 1x2 greedy 300.0 sent/s over "
                     "t ct2-int8 1x2 beam5 30.0 sent/s; BLEU -1.50",
                     f"S1 = {600 / 30:.1f}x (range {599 / 31:.1f}-{601 / 29:.1f}x): b ct2-int8 1x2 greedy 600.0 sent/s "
                     "over t ct2-int8 1x2 beam5 30.0 sent/s; BLEU -3.00"]
    assert best_against_best(rows, "t", "a", engine="ct2")["speedup"] == pytest.approx(300 / 20)
    with pytest.raises(SeqkdError, match="no greedy row of model 'b' with BLEU on engine ct2"):
        s1_lines(rows, "t", engine="ct2")  # b has int8 rows only
    with pytest.raises(SeqkdError, match="no beam row of model 'x'"):
        s1_lines(rows, "x")


def _data_dir(root: Path, n: int) -> Path:
    """A local corpus folder whose SPLIT holds `n` digit-reversal pairs (de -> en)."""
    src, tgt = reverse_task(n, seed=3)
    root.mkdir()
    for lang, lines in (("de", src), ("en", tgt)):
        with gzip.open(root / f"{SPLIT}.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("".join(ln + "\n" for ln in lines))
    return root


def test_bench_teacher_prints_s1_of_the_measured_rows_and_from_json(tiny_reverse, tmp_path, capsys):
    model_dir = tiny_reverse[0]
    for name in ("teacher", "student"):  # one model under two names: the ratio is whatever was measured
        shutil.copytree(model_dir, tmp_path / name)
    data = _data_dir(tmp_path / "data", 40)
    out = tmp_path / "bench.json"
    base = ["bench", "--data-dir", str(data), "--split", SPLIT, "--engines", "ct2", "--beam", "3", "--repeats", "2",
            "--threads", "2", "--teacher", "teacher"]
    assert main([*base, "--model", str(tmp_path / "teacher"), "--model", str(tmp_path / "student"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(Path(r["model"]).name, r["search"]) for r in rows] == [
        ("teacher", "greedy"), ("teacher", "beam3"), ("student", "greedy"), ("student", "beam3")]
    assert all(r["repeats"] == 2 and r["sentences"] == 40 and r["bleu"] > 50 for r in rows)
    t, s = rows[1], rows[2]
    expected = (f"S1 = {s['sent_per_s'] / t['sent_per_s']:.1f}x (range {s['sent_per_s_min'] / t['sent_per_s_max']:.1f}-"
                f"{s['sent_per_s_max'] / t['sent_per_s_min']:.1f}x): student ct2 1x2 greedy {s['sent_per_s']:.1f} "
                f"sent/s over teacher ct2 1x2 beam3 {t['sent_per_s']:.1f} sent/s; BLEU {s['bleu'] - t['bleu']:+.2f}")
    assert printed.splitlines()[-1] == expected and "| teacher | ct2 | beam3 |" in printed
    assert main(["bench", "--from-json", str(out), "--teacher", "teacher"]) == 0  # the same, measuring nothing
    assert capsys.readouterr().out == printed
    assert main([*base, "--model", str(tmp_path / "student")]) == 2  # refused before measuring
    assert "--teacher 'teacher': not the folder name of any --model (student)" in capsys.readouterr().err
    out.write_text('{"rows": []}')
    assert main(["bench", "--from-json", str(out)]) == 2
    assert "not the rows of `seqkd bench --out`" in capsys.readouterr().err


def test_tune_decode_prints_the_trials_and_writes_json(tiny_reverse, tmp_path, capsys):
    data = _data_dir(tmp_path / "data", 40)
    out = tmp_path / "res" / "tune.json"
    assert main(["tune-decode", "--model", str(tiny_reverse[0]), "--beam", "1", "--data-dir", str(data),
                 "--split", SPLIT, "--repeats", "2", "--threads", "2", "--max-bleu-drop", "0.5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (r,) = json.loads(out.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["tune.json"]  # written by rename, no temp file left
    assert (r["model"], r["beam"], r["threads"], r["sentences"]) == ("model", 1, 2, 40)
    settings = [t["setting"] for t in r["trials"]]
    assert settings[:3] == ["default", "inter_threads=2", "engine_batching=True"]
    assert settings[-2:] == ["return_scores=False", "compute_type=int8_float32"]  # greedy: scores tried; no vmap
    assert ("max_batch_size=1024" in settings) == r["trials"][2]["kept"]  # batch sizes only with engine batching
    expect = {"inter_threads": 1, "engine_batching": False, "max_batch_size": 0, "return_scores": True,
              "compute_type": "float32"}
    for t in r["trials"][1:]:
        inc = t["incumbent"]
        assert inc["min"] <= inc["sent_per_s"] <= inc["max"] and t["min"] <= t["sent_per_s"] <= t["max"]
        assert t["kept"] == (t["min"] > inc["max"] and t["bleu"] >= r["default_bleu"] - 0.5)
        if t["kept"]:
            field, value = t["setting"].split("=")
            expect[field] = json.loads(value.lower()) if value[0] in "0123456789TF" else value
    assert {k: r["best"][k] for k in expect} == expect  # the best settings are the kept trials'
    assert r["best_result"]["bleu"] >= r["default_bleu"] - 0.5 and r["default_bleu"] > 50
    assert printed.count("| model | 1 |") == len(r["trials"])
    assert printed.splitlines()[-1].startswith(f"model beam 1: {r['best_result']['sent_per_s']:.1f} sent/s")
    assert main(["tune-decode", "--model", "m", "--model", "n", "--beam", "1", "--data-dir", str(data)]) == 2
    assert "give one --beam per --model" in capsys.readouterr().err
