"""The run archive, `--time-limit` and `--jobs` on the tiny grid: finished work survives a change of machine."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import archive_of, reproduce_cmd, reproduce_here, same_results

from seqkd.reproduce.archive import Archive


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _copy_archive(tiny_run, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny grid's archive without the entries of the stages `drop`."""
    shutil.copytree(archive_of(tiny_run[0]), dest)
    for name in drop:
        for p in (dest / "stages").glob(f"{name}@*.json"):
            p.unlink()
    return dest


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_fresh_folder_restores_everything_bit_exact_and_runs_nothing(tiny_run, multi30k_dir, tmp_path):
    out, _ = tiny_run
    fresh = tmp_path / "fresh"
    subprocess.run(reproduce_cmd(fresh, multi30k_dir, "--archive", str(archive_of(out))), check=True,
                   capture_output=True, timeout=600)
    b = _results(fresh)
    assert b["stages_run_now"] == []
    same_results(_results(out), b)
    assert b["stage_seconds"] == _results(out)["stage_seconds"]  # the clocks travel with the archive
    for f in ("teacher/model.safetensors", "data_seq_kd/train.tgt", "data_seq_inter/train.src", "vocab/source.spm",
              f"{b['best_student']}/model.safetensors", "best_int8/ct2-int8/model.bin", "eval_seq_kd/beam.txt"):
        assert _sha(fresh / f) == _sha(out / f), f


def test_archive_keeps_weights_only_where_needed(tiny_run):
    """At the end, weights are archived for the teacher, the best student, the fast pick and the int8 model only;
    every stage keeps its records (metrics, curve, evaluation); top-k caches keep nothing heavy."""
    out, _ = tiny_run
    res = _results(out)
    entries = {e["name"]: e for e in Archive(archive_of(out)).clocks()}
    assert set(entries) == set(res["stage_seconds"])
    with_weights = {n for n, e in entries.items() if "model.safetensors" in e["files"]}
    picks = {json.loads((out / c / "pick.json").read_text())["model"] for c in ("best", "fast", "int8_pick")}
    assert with_weights == {"teacher"} | picks
    assert "ct2-int8/model.bin" in entries["best_int8"]["files"]
    # the students' float16-exact weights in half the bytes (restored bit-exactly: the test above); the teacher's as
    # written
    assert entries[res["best_student"]]["files"]["model.safetensors"].get("enc") == "f16"
    assert "enc" not in entries["teacher"]["files"]["model.safetensors"]
    assert "metrics.jsonl" in entries["baseline"]["files"] and "train_result.json" in entries["baseline"]["files"]
    assert not any(f.endswith(".safetensors") for f in entries["data_topk"]["files"])
    assert {"train.src", "train.tgt"} <= set(entries["data_seq_kd"]["files"])
    assert entries["teacher"]["machine"]["cpu"] and entries["teacher"]["seconds"] > 0


def test_archived_records_name_no_path_of_the_machine(tiny_run):
    """What the archive keeps is committed to git: its JSON and YAML records name folders relative to the run
    (a fine-tuning's `init_from`, a distillation's teacher, a pruning round's parent), never the run folder's
    absolute path on the machine that ran it."""
    out, _ = tiny_run
    arch = Archive(archive_of(out))
    where = str(out.parent)
    found = []
    for e in arch.clocks():
        for rel in e["files"]:
            if rel.endswith((".json", ".yaml", ".jsonl")) and where in arch.read(e["name"], e["hash"], rel).decode():
                found.append(f"{e['name']}/{rel}")
    assert not found, found


def test_corrupt_or_truncated_entries_are_one_line_errors_and_restore_nothing(tiny_run, multi30k_dir, tmp_path,
                                                                            capsys):
    from seqkd.cli.main import main

    arch = _copy_archive(tiny_run, tmp_path / "archive")
    entry = json.loads(next((arch / "stages").glob("teacher@*.json")).read_text())
    weights = entry["files"]["model.safetensors"]
    blob = Archive(arch).blob_path(weights["sha256"], weights["gz"])
    blob.write_bytes(blob.read_bytes()[:1000])  # truncated weights
    fresh = tmp_path / "fresh"
    args = ["reproduce", "--preset", "tiny", "--data-dir", str(multi30k_dir), "--out", str(fresh), "--quiet",
            "--archive", str(arch)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"seqkd: error: {blob}: corrupt") and "\n" not in err, err
    assert not (fresh / "teacher").exists() and (fresh / "vocab" / "stage.json").exists()
    # a truncated entry record
    e = next((arch / "stages").glob("vocab@*.json"))
    e.write_text(e.read_text()[:40])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"seqkd: error: {e}: not a readable JSON file" in err and "\n" not in err, err


def test_reading_from_a_missing_entry_says_the_entry_is_missing(tmp_path):
    from seqkd.util.fsutil import SeqkdError

    with pytest.raises(SeqkdError, match="no such archive entry"):
        Archive(tmp_path / "archive").read("eval_x", "0" * 16, "row.json")


def test_an_entry_made_with_other_settings_is_not_used(tiny_run, multi30k_dir, tmp_path, capsys):
    """Other settings are other stages: `--plan` restores what they leave unchanged and runs the rest."""
    from seqkd.cli.main import main

    arch = archive_of(tiny_run[0])
    fresh = tmp_path / "fresh"
    assert main(["reproduce", "--preset", "tiny", "--data-dir", str(multi30k_dir), "--out", str(fresh), "--plan",
                 "--archive", str(arch), "--set", "student_train.lr=0.0042"]) == 0
    rows = {ln.split()[0]: ln.split(None, 1)[1].strip() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("  ")}
    assert all(rows[s].startswith("archived") for s in ("vocab", "teacher", "data_seq_kd", "teacher+seq_inter"))
    assert all(rows[s] == "to run" for s in ("baseline", "seq_kd", "best", "pruned_50", "eval_seq_kd")), rows
    assert not fresh.exists()


def test_time_limit_stops_at_a_boundary_and_the_rerun_completes(tiny_run, multi30k_dir, tmp_path, capsys):
    """With the last stages missing from the archive and `best_int8` estimated at 100 minutes, a 1-minute limit
    passes over `best_int8` (and its evaluation, which needs it), still runs `speed`, which comes later and fits,
    stops (exit 0, a line naming what remains) and archives what ran; a rerun in another fresh folder (another
    machine) restores it and finishes with the uninterrupted run's results."""
    out, _ = tiny_run
    arch = _copy_archive(tiny_run, tmp_path / "archive", drop=("best_int8", "eval_best_int8", "speed"))
    first = tmp_path / "first"
    capsys.readouterr()
    reproduce_here(first, multi30k_dir, "--archive", str(arch), "--time-limit", "1", "--set", "estimates.best_int8=100")
    stdout = capsys.readouterr().out
    assert ("time limit: stopped at a stage boundary; 2 stages remain, about 1.7 h (1 with no estimate), next best_int8"
            in stdout), stdout
    assert (first / "speed" / "stage.json").exists() and not (first / "best_int8").exists()
    assert not (first / "results.json").exists() and list((arch / "stages").glob("speed@*.json"))
    second = tmp_path / "second"
    reproduce_here(second, multi30k_dir, "--archive", str(arch))
    b = _results(second)
    assert b["stages_run_now"] == ["best_int8", "eval_best_int8"]
    same_results(_results(out), b)


def _tiny_graph():
    from seqkd.reproduce.graph import GraphInput, build
    from seqkd.reproduce.pipeline import load_preset

    cfg = load_preset("tiny")
    return build(cfg, GraphInput({"pairs": 1, "sha": "d"}, {"beam": 5, "test_sha": "t"}))


def test_a_stage_starts_under_a_time_limit_only_if_the_stages_reading_its_weights_fit_too(monkeypatch):
    """A chapter must not end between a student and its Seq-Inter fine-tuning: the archive would then keep (and
    git commit for good) weights that only a stage still to run reads. With 60 s a stage and 150 s left, the
    teacher starts (its weights are kept for users anyway), a student does not: it and its chain take 240 s."""
    import time

    from seqkd.reproduce.grid import Grid, GridOptions, TimeLimitReached, weight_chain

    graph = _tiny_graph()
    by = {s.name: s for s in graph}
    assert [c.name for c in weight_chain(graph, by["baseline"], set())] == [
        "eval_baseline", "baseline+seq_inter", "eval_baseline+seq_inter"]
    assert [c.name for c in weight_chain(graph, by["pruned_50"], set())][:2] == ["eval_pruned_50", "pruned_90"]
    assert weight_chain(graph, by["teacher"], set()) == []  # a model users keep ends a chain
    assert weight_chain(graph, by["baseline"], {"eval_baseline", "baseline+seq_inter", "eval_baseline+seq_inter"}) == []
    g = Grid.__new__(Grid)
    g.graph, g.finished, g.deadline, g._passed_over = graph, set(), time.time() + 150, set()
    g.opts = GridOptions(jobs=1)
    monkeypatch.setattr(Grid, "estimate", lambda self, s: 60.0)
    g._check_time(by["teacher"])
    with pytest.raises(TimeLimitReached):
        g._check_time(by["baseline"])
    g.finished = {"eval_baseline", "baseline+seq_inter"}
    g._check_time(by["baseline"])  # 60 s + the one evaluation left


def test_under_two_jobs_a_chain_is_timed_as_the_two_slots_run_it():
    """A chain whose stages run side by side under `--jobs 2` fits a chapter its serial sum would not: a student
    (50), two students started from it (40 each, side by side), then their fine-tunings and a solo choice. The
    serial sum (the old rule) is 153; two slots take 50 + 6 + 40 + 6 + 5 = 107; a solo stage waits for both."""
    from seqkd.reproduce.graph import Stage
    from seqkd.reproduce.grid import makespan

    def st(name, inputs=(), solo=False):
        return Stage(name, "train", tuple(inputs), {}, solo=solo)

    chain = [st("a"), st("a+ft", ["a"]), st("b", ["a"]), st("c", ["a"]), st("c+ft", ["c"]), st("b+ft", ["b"]),
             st("pick", ["a+ft", "b+ft", "c+ft"], solo=True)]
    t = {"a": 50, "a+ft": 6, "b": 40, "c": 40, "c+ft": 6, "b+ft": 6, "pick": 5}
    assert makespan(chain, lambda s: t[s.name], 1) == sum(t.values()) == 153
    assert makespan(chain, lambda s: t[s.name], 2) == 50 + 6 + 40 + 6 + 5  # a+ft beside b, then c; c+ft; pick
    assert makespan(chain, lambda s: t[s.name], 3) == 50 + 40 + 6 + 5
    solo_first = [st("x", solo=True), st("y"), st("z")]
    assert makespan(solo_first, lambda s: 10, 2) == 20  # y and z wait for the solo x, then run side by side


def test_two_jobs_give_the_results_of_one(tiny_run, multi30k_dir, tmp_path):
    """Independent stages side by side (the int8 export, the evaluations, the speed measurement) in two worker
    processes, one thread each: the same results as the uninterrupted one-job run. (The stages whose weights the
    archive keeps: others would first retrain the models they evaluate.)"""
    out, _ = tiny_run
    best = _results(out)["best_student"]
    drop = ("best_int8", "eval_best_int8", f"eval_{best}", "eval_teacher", "speed")
    arch = _copy_archive(tiny_run, tmp_path / "archive", drop=drop)
    fresh = tmp_path / "fresh"
    cmd = reproduce_cmd(fresh, multi30k_dir, "--archive", str(arch), "--jobs", "2")
    cmd[cmd.index("--threads") + 1] = "2"  # two slots of one thread: the tiny run's evaluations had one too
    run = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert "Loading weights" not in run.stderr  # workers are as quiet as the main process under --quiet
    b = _results(fresh)
    assert sorted(b["stages_run_now"]) == sorted([*drop, "shortlist"])  # speed needs the shortlist: rebuilt
    assert b["stage_machines"]["eval_teacher"]["threads"] == 1
    assert b["stage_machines"]["speed"]["threads"] == 2  # a timing stage runs solo, with all the threads
    same_results(_results(out), b)
    assert "another stage running beside them" in (fresh / "report.md").read_text()  # contended columns said so
    assert "another stage running beside them" not in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_run_split_at_every_stage_boundary_equals_an_uninterrupted_one(tiny_run, multi30k_dir, tmp_path):
    """Each stage run in its own fresh run folder (a new machine each time), with only the archive carried over."""
    from seqkd.cli.main import main

    out, _ = tiny_run
    names = list(_results(out)["stage_seconds"])
    arch = tmp_path / "archive"
    for i, name in enumerate(names):
        part = tmp_path / f"part{i}"
        assert main(["reproduce", "--preset", "tiny", "--data-dir", str(multi30k_dir), "--out", str(part), "--quiet",
                     "--threads", "1", "--archive", str(arch), "--stop-after", name]) == 0, name
    last = tmp_path / "last"
    assert main(["reproduce", "--preset", "tiny", "--data-dir", str(multi30k_dir), "--out", str(last), "--quiet",
                 "--threads", "1", "--archive", str(arch)]) == 0
    b = _results(last)
    assert b["stages_run_now"] == []
    same_results(_results(out), b)


@pytest.mark.slow
def test_the_whole_grid_with_two_jobs_equals_one(multi30k_dir, tmp_path):
    """The whole tiny grid two stages at a time on 2 threads (the teacher and its data alone on both threads, every
    other stage on one) equals it one stage at a time with the same threads per stage: the teacher and its data
    on 2 threads, then the rest on 1. Every non-timing field. (A result depends on the threads a stage gets, in
    the last digits of PPL and, through training, in a few outputs: float sums in another order; not on how many
    stages run beside it.)"""
    one, two = tmp_path / "one", tmp_path / "two"
    cmd = reproduce_cmd(two, multi30k_dir, "--jobs", "2")
    cmd[cmd.index("--threads") + 1] = "2"
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    for threads, more in (("2", ["--stop-after", "data_seq_inter"]), ("1", [])):
        cmd = reproduce_cmd(one, multi30k_dir, "--jobs", "1", *more)
        cmd[cmd.index("--threads") + 1] = threads
        subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    assert _results(two)["stage_machines"]["teacher"]["threads"] == 2
    assert _results(two)["stage_machines"]["baseline"]["threads"] == 1
    same_results(_results(one), _results(two))
