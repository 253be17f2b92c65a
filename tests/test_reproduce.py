"""`seqkd reproduce --preset tiny` end to end, and killed with SIGKILL then resumed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import reproduce_cmd, reproduce_here, same_results

_cmd = reproduce_cmd

STUDENTS = ["baseline", "word_kd", "seq_kd", "baseline+seq_inter", "word_kd+seq_inter", "seq_kd+seq_inter",
            "seq_kd+word_kd", "seq_kd+seq_inter+word_kd"]
RUN_ORDER = ["baseline", "seq_kd", "word_kd", "seq_kd+word_kd", "baseline+seq_inter", "word_kd+seq_inter",
             "seq_kd+seq_inter", "seq_kd+seq_inter+word_kd"]  # Table 1's rows in the order the grid trains them
SYSTEMS = (["teacher", "teacher+seq_inter", *RUN_ORDER, *[s + "-small" for s in RUN_ORDER], "baseline-seed2",
            "seq_kd-seed2", "fast_student-2-1", "fast_student-4-1", "pruned_0", "pruned_50",
            "pruned_90", "pruned_80_class-distribution", "best_int8"])
SYSTEM_KEYS = ["name", "params_total", "params_nonzero", "bleu_greedy", "bleu_beam", "chrf_greedy", "ppl", "p_beam",
               "sent_per_s_greedy", "sent_per_s_beam", "engine", "size_mb"]

def test_reproduce_tiny_schema(tiny_run):
    out, _ = tiny_run
    res = json.loads((out / "results.json").read_text())
    for k in ("preset", "src", "tgt", "test_set", "sacrebleu_signature", "wall_seconds", "machine", "systems"):
        assert k in res, k
    assert res["preset"] == "tiny" and res["src"] == "de" and res["tgt"] == "en"
    assert [s["name"] for s in res["systems"]] == SYSTEMS
    for s in res["systems"]:
        for k in SYSTEM_KEYS:
            assert k in s, (s["name"], k)
            if k not in ("name", "engine"):
                assert isinstance(s[k], (int, float)) and math.isfinite(s[k]), (s["name"], k, s[k])
    for s in res["systems"]:  # latency, one sentence at a time (the tiny preset: 2 sentences)
        assert 0 < s["p50_ms_greedy"] <= s["p95_ms_greedy"] and 0 < s["p50_ms_beam"] <= s["p95_ms_beam"], s["name"]
    by = {s["name"]: s for s in res["systems"]}
    assert by["pruned_90"]["params_nonzero"] < by["pruned_50"]["params_nonzero"] < by["pruned_50"]["params_total"]
    assert by["pruned_0"]["params_nonzero"] > 0.99 * by["pruned_0"]["params_total"]
    assert by["baseline-small"]["params_total"] < by["baseline"]["params_total"]
    assert by["best_int8"]["engine"] == "ct2-int8"
    assert by["teacher"]["params_total"] > by["baseline"]["params_total"]
    report = (out / "report.md").read_text()
    assert "prove nothing" in report and "nrefs:1" in report
    # every training stage's validation curve, each in one panel of the plot and a row of the report
    trained = [n for n in SYSTEMS if n != "best_int8"] + ["fast_student-2-1_seq_kd", "fast_student-4-1_seq_kd"]
    assert sorted(res["curves"]) == sorted(trained)
    assert sorted(sum(res["curve_panels"].values(), [])) == sorted(trained)
    for name, c in res["curves"].items():
        assert len(c["epoch"]) == len(c["val_bleu"]) >= 1 and c["epoch"] == sorted(c["epoch"]), name
        assert f"| {name} | {len(c['epoch'])} | " in report, name
    for png in ("bleu_greedy_beam.png", "speed_quality.png", "pruning.png", "learning_curves.png"):
        assert (out / png).stat().st_size > 1000, png


def test_rerun_skips_everything(tiny_run, multi30k_dir, tmp_path):
    """Same command again, but the data reached through another path (SEQKD_DATA, a symlink), the run
    folder moved, and cosmetic settings changed: every stage is reused."""
    out, _ = tiny_run
    before = json.loads((out / "results.json").read_text())
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, symlinks=True)
    link = tmp_path / "data-link"
    link.symlink_to(multi30k_dir, target_is_directory=True)
    cmd = [sys.executable, "-m", "seqkd", "reproduce", "--preset", "tiny", "--out", str(moved), "--quiet",
           "--threads", "1", "--set", "student_train.log_every=3", "--set", "teacher_train.ckpt_every=7"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600, env={**os.environ, "SEQKD_DATA": str(link)})
    after = json.loads((moved / "results.json").read_text())
    assert after["stages_run_now"] == []
    assert after["systems"] == before["systems"]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*")
            if f.is_file()}


def _plan(capsys, out: Path, data_dir: Path, *extra: str) -> dict[str, str]:
    """`reproduce --plan` run in-process: {stage: status}."""
    from seqkd.cli.main import main

    assert main(["reproduce", "--preset", "tiny", "--data-dir", str(data_dir), "--out", str(out), "--plan",
                 *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(nothing has run)")
    return {ln.split()[0]: ln.split(None, 1)[1].split("  ")[0].strip() for ln in lines[1:] if ln.startswith("  ")}


def test_plan_says_what_a_rerun_keeps_and_discards_and_touches_nothing(tiny_run, multi30k_dir, tmp_path, capsys):
    out, _ = tiny_run
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, symlinks=True)
    before = _tree(moved)
    link = tmp_path / "data-link"  # the data through another path: still the same stages
    link.symlink_to(multi30k_dir, target_is_directory=True)
    plan = _plan(capsys, moved, link, "--threads", "1")
    assert list(plan) == list(json.loads((out / "results.json").read_text())["stage_seconds"])
    assert set(plan.values()) == {"done"}, plan
    # the stages that carry the claims first (a grid runs in chapters): the teacher and its data, the main size's
    # rows and seeds (Q1, Q2), the fast students (S1) and the pruning chains (Z1), then the second size
    order = [list(plan).index(s) for s in ("data_seq_inter", "teacher+seq_inter", "seq_kd", "seq_kd+seq_inter+word_kd",
                                          "seq_kd-seed2", "fast_student-4-1", "pruned_90", "baseline-small",
                                          "speed")]
    assert order == sorted(order), list(plan)
    names = list(plan)  # each system is evaluated right after it is made (its weights can then leave the archive)
    assert all(names[names.index(n) + 1] == f"eval_{n}" for n in SYSTEMS), names
    # a change that matters to the students: the vocabulary, teacher and distilled data stay, the students change
    plan = _plan(capsys, moved, link, "--set", "student_train.lr=0.0042")
    assert all(plan[s] == "done" for s in ("vocab", "teacher", "data_seq_kd", "data_seq_inter", "teacher+seq_inter"))
    assert all(plan[s] == "changed" for s in ("baseline", "seq_kd", "word_kd+seq_inter", "fast_student-2-1_seq_kd"))
    assert plan["pruned_50"] == "changed"  # its parent, the best student, is chosen among stages to be rerun
    # a larger budget only: the students train on from their last checkpoints; what starts from them is redone
    plan = _plan(capsys, moved, link, "--set", "student_train.max_epochs=3")
    assert all(plan[s] == "extends" for s in ("baseline", "seq_kd", "baseline-seed2", "seq_kd+word_kd",
                                              "fast_student-2-1_seq_kd")), plan
    assert all(plan[s] == "changed" for s in ("word_kd+seq_inter", "fast_student-4-1_seq_kd")), plan
    assert plan["teacher"] == "done"
    assert _tree(moved) == before  # nothing written, nothing removed
    # a half-run stage resumes; an empty folder plans everything and is not created
    (moved / "speed" / "stage.json").unlink()
    assert _plan(capsys, moved, link)["speed"] == "partial"
    # a damaged stage record: one line naming it, exit 2, from a plan and from a run alike, and no stage's files
    # touched (a run rewrites only the folder's own lock and config.json)
    (moved / "vocab" / "stage.json").write_text('{"hash": "0a1')
    stages = {k: v for k, v in _tree(moved).items() if "/" in k}
    from seqkd.cli.main import main

    for extra in (["--plan"], []):
        assert main(["reproduce", "--preset", "tiny", "--data-dir", str(link), "--out", str(moved), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"seqkd: error: {moved / 'vocab' / 'stage.json'}: not a readable JSON file") and \
            "\n" not in err, err
        assert {k: v for k, v in _tree(moved).items() if "/" in k} == stages
    fresh = tmp_path / "fresh"
    plan = _plan(capsys, fresh, link)
    assert plan["vocab"] == "to run" and plan["eval_teacher"] == "to run" and not fresh.exists()


def test_seeds_and_claims_in_report(tiny_run):
    out, _ = tiny_run
    res = json.loads((out / "results.json").read_text())
    for name in ("baseline", "seq_kd"):
        st = res["seeds"][name]
        assert st["n"] == 2 and len(st["bleu_greedy"]["values"]) == 2
        assert min(st["bleu_greedy"]["values"]) <= st["bleu_greedy"]["mean"] <= max(st["bleu_greedy"]["values"])
    for k in ("Q1", "Q2", "S1", "Z1"):
        assert {"claim", "this_run", "paper", "holds"} <= set(res["claims"][k]), k
    sk, bl = res["seeds"]["seq_kd"], res["seeds"]["baseline"]  # Q1 shows the seeds' mean ± sd of each side
    assert (f"Seq-KD greedy {sk['bleu_greedy']['mean']:.2f} ± {sk['bleu_greedy']['sd']:.2f} vs baseline greedy "
            f"{bl['bleu_greedy']['mean']:.2f} ± {bl['bleu_greedy']['sd']:.2f}") in res["claims"]["Q1"]["this_run"]
    assert "mean ± sd over 2 seeds" in res["claims"]["Q1"]["this_run"]
    assert res["speed"]["teacher_beam"]["sent_per_s_median"] > 0 and res["claims"]["S1"]["speedup"] > 0
    sp = res["speed"]  # each system decoded with its own fastest settings, chosen on validation
    assert sp["tuned_on"] == "validation"
    for key in ("teacher_beam", "student_greedy", "fast_greedy"):
        tuning = sp[key]["tuning"]
        assert tuning["sentences"] == 10 and len(tuning["trials"]) >= 4, key  # tiny: tune_max_sents val lines
        assert sp[key]["settings"] == {k: v for k, v in tuning["best"].items() if k != "vmap"}, key
        assert tuning["best_result"]["bleu"] >= tuning["default_bleu"] - 0.2, key
    assert sp["teacher_beam"]["settings"]["return_scores"]  # never switched off for beam search
    pick = json.loads((out / "fast" / "pick.json").read_text())
    assert pick["model"] in pick["candidates"] and res["speed"]["fast"] == pick["model"]
    assert set(pick["candidates"]) == {"fast_student-2-1", "fast_student-4-1", res["best_student"]}
    assert set(res["stage_seconds"]) >= {"teacher", "data_seq_inter", "pruned_90", "eval_teacher", "speed"}
    assert all(res["stage_machines"][s]["cpu"] for s in res["stage_seconds"])
    report = (out / "report.md").read_text()
    assert report.startswith("**Smoke test only") and "| Q2:" in report and "± " in report
    assert "fastest settings chosen on validation" in report
    assert res["fast_pick"]["within_budget"] == pick["within_budget"]  # tiny: False (fast_max_drop 0)
    assert ("not the fastest" in report) == (not pick["within_budget"])
    gap, bl = res["claims"]["greedy_beam_gap"], res["seeds"]["baseline"]
    assert gap["seeds"] == 2 and gap["baseline"] == pytest.approx(bl["bleu_beam"]["mean"] - bl["bleu_greedy"]["mean"])


def test_tiny_preset_reverse_direction(tmp_path, multi30k_dir, capsys):
    """The presets name no language: en->de runs unchanged (stopped after the Seq-KD data; a smaller budget)."""
    import gzip

    out = tmp_path / "en-de"
    reproduce_here(out, multi30k_dir, "--src", "en", "--tgt", "de", "--stop-after", "data_seq_kd",
                   "--set", "data.max_train_pairs=300", "--set", "teacher_train.max_epochs=1")
    assert "stopped after stage data_seq_kd" in capsys.readouterr().out
    assert (out / "teacher" / "train_result.json").exists() and not (out / "data_seq_inter").exists()
    first_en = gzip.open(multi30k_dir / "train.en.gz", "rt", encoding="utf-8").readline().strip()
    assert (out / "data_seq_kd" / "train.src").read_text(encoding="utf-8").splitlines()[0] == first_en


@pytest.mark.slow
def test_killed_reproduce_resumes_and_matches(tiny_run, tmp_path, multi30k_dir):
    """SIGKILLed inside the Seq-KD student's training (by timing), then at exact points
    (seqkd/util/faults.py): between stages, during a checkpoint write, while the int8 export is copied.
    After each kill no partial file is visible; the last rerun gives the uninterrupted run's results."""
    from faultlib import assert_no_partial_files, run_killed, run_ok

    ref_dir, _ = tiny_run
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out, multi30k_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    # kill inside the Seq-KD student's training, after at least one checkpoint
    while time.time() < deadline and proc.poll() is None:
        if (out / "seq_kd" / "checkpoints" / "latest.json").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "reproduce finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    for fault in ("stage_done:2", "checkpoint_write:3", "export_copy:1"):
        run_killed(_cmd(out, multi30k_dir), fault, timeout=1200)
        assert not (out / "results.json").exists()
        assert_no_partial_files(out)
    assert not (out / "best_int8" / "stage.json").exists() and not (out / "best_int8" / "ct2-int8").exists()
    run_ok(_cmd(out, multi30k_dir), timeout=1200)
    a = json.loads((ref_dir / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert "teacher" not in b["stages_run_now"] and "best_int8" in b["stages_run_now"]
    same_results(a, b)
