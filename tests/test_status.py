"""`seqkd reproduce --status` (seqkd/reproduce/status.py): where a run stands, read from its folder alone; it
replays early stopping by the training loop's rule, checked on the committed curves."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from seqkd.cli.main import main
from seqkd.reproduce import status as st

# copies of the faithful-size grid's committed run files (docs/results/multi30k-large-de-en/run2, run3): the
# test's own fixtures, so that moving the docs cannot break it
RUNS = Path(__file__).parent / "data" / "grid-runs"


def test_replaying_the_trained_patience_gives_each_early_stop_epoch_and_best():
    # the patience each stage trained under: its committed train_config.json, else (run 2, committed before the
    # snapshots copied it) the preset's of the time; students 5
    patience = {"run2": {"teacher": 4, "teacher+seq_inter": 2}}
    checked = 0
    for tr in sorted([*(RUNS / "run2").glob("*-train_result.json"), *(RUNS / "run3").glob("*-train_result.json")]):
        res = json.loads(tr.read_text())
        run, stage = tr.parent.name, tr.name.removesuffix("-train_result.json")
        curve = st.val_curve(tr.with_name(f"{stage}-metrics.jsonl"))
        tc = tr.with_name(f"{stage}-train_config.json")
        trained = json.loads(tc.read_text())["patience"] if tc.exists() else patience[run].get(stage, 5)
        stop, kept, _ = st.under_patience(curve, trained)
        # a stage that ran its whole budget: the replay must not stop it earlier (it returns the last epoch)
        assert res["stopped"] in ("early_stopping", "max_epochs"), tr.name
        assert (stop, round(kept, 6)) == (res["epochs"], round(res["best_metric"], 6)), tr.name
        checked += 1
    assert checked >= 10


def test_under_patience_on_a_scripted_curve():
    curve = {1: 10.0, 2: 12.0, 3: 11.0, 4: 12.0, 5: 11.5, 6: 13.0, 7: 12.0}  # a tie is not a new best
    assert st.under_patience(curve, 3) == (5, 12.0, 2)
    assert st.under_patience(curve, 4) == (7, 13.0, 6)  # ran out of curve: the last epoch
    assert st.longest_stall(curve) == 3


def test_a_torn_last_line_of_a_running_stage_is_skipped(tmp_path):
    rows = [json.loads(ln) for ln in (RUNS / "run3" / "teacher-metrics.jsonl").read_text().splitlines()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"type": "val", "ep')
    assert st.val_curve(tmp_path) == st.val_curve(RUNS / "run3" / "teacher-metrics.jsonl")


def _run_folder(run: Path) -> dict[str, dict]:
    """A run folder of stage folders made from run 3's committed files: each finished training (it has a
    train_result.json) a folder with metrics.jsonl, train_config.json and a stage.json whose clock is its training
    seconds; seq_kd-seed3, still training when run 3 ended, a clock.json of 30 minutes only. Returns the results."""
    results = {}
    for m in sorted((RUNS / "run3").glob("*-metrics.jsonl")):
        name = m.name.removesuffix("-metrics.jsonl")
        d = run / name
        d.mkdir(parents=True)
        shutil.copy(m, d / "metrics.jsonl")
        shutil.copy(m.with_name(f"{name}-train_config.json"), d / "train_config.json")
        if (res := m.with_name(f"{name}-train_result.json")).exists():
            results[name] = json.loads(res.read_text())
            (d / "stage.json").write_text(json.dumps({"hash": "h", "seconds": results[name]["train_seconds"]}))
        else:
            (d / "clock.json").write_text(json.dumps({"seconds": 1800.0}))
    (run / "vocab").mkdir()  # a stage not started: no clock, not listed
    return results


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_reproduce_status_prints_where_the_run_stands_and_writes_nothing(tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "multi30k-de-en"  # the default run folder of the default preset
    res = _run_folder(run)
    before = _files(run)
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--status", "--seconds-json", str(tmp_path / "seconds.json")]) == 0
    out = capsys.readouterr().out
    assert _files(run) == before  # read only
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in out.splitlines() if ln.startswith("| ")}
    assert "vocab" not in lines and "seq_kd-seed3 | 30.0 (running) | 5 |" in lines["seq_kd-seed3"]
    b = res["baseline"]
    assert (f"| baseline | {b['train_seconds'] / 60:.1f} | {b['epochs']} | {b['train_seconds'] / b['epochs'] / 60:.1f}"
            f" | {b['best_metric']:.2f} (") in lines["baseline"]
    gain = res["teacher+seq_inter"]["best_metric"] - res["teacher"]["best_metric"]
    assert lines["teacher+seq_inter"].endswith(f"| teacher ({gain:+.2f}) |")  # the fine-tuning's gain
    assert f"finished stages: {len(res)}, {sum(r['train_seconds'] for r in res.values()) / 3600:.2f} h" in out
    base = [res[n]["best_metric"] for n in ("baseline", "baseline-seed2", "baseline-seed3")]
    kd = [res[n]["best_metric"] for n in ("seq_kd", "seq_kd-seed2")]  # the running seed 3 is no result yet
    assert (f"baseline: best val BLEU over 3 seeds {' / '.join(f'{x:.2f}' for x in base)}, "
            f"mean {statistics.mean(base):.2f} ± {statistics.stdev(base):.2f} (sd)") in out
    assert (f"seq_kd: best val BLEU over 2 seeds {' / '.join(f'{x:.2f}' for x in kd)}, "
            f"mean {statistics.mean(kd):.2f} ± {statistics.stdev(kd):.2f} (sd)") in out
    assert f"seq_kd - baseline, means: {statistics.mean(kd) - statistics.mean(base):+.2f}" in out
    seconds = json.loads((tmp_path / "seconds.json").read_text())
    assert seconds == {n: round(r["train_seconds"], 1) for n, r in res.items()}


def test_reproduce_status_analyses(tmp_path, capsys):
    run = tmp_path / "run"
    res = _run_folder(run)
    assert main(["reproduce", "--status", "--out", str(run), "--curves", "baseline,seq_kd", "--compare",
                 "baseline,seq_kd", "--stalls", "--patience", "5", "--ckpt", "teacher"]) == 0
    out = capsys.readouterr().out
    curve = st.val_curve(run / "seq_kd")
    assert "| seq_kd | " + " | ".join(f"{v:.2f}" for _, v in sorted(curve.items())) in out
    assert "seq_kd - baseline, val BLEU at epochs 1-" in out
    assert f"{res['seq_kd']['best_metric'] - res['baseline']['best_metric']:+.2f}\n" in out
    stalls = [ln for ln in out.splitlines() if ln.startswith("| baseline-seed2 | ")]
    assert stalls[-1].split(" | ")[4].startswith(f"{res['baseline-seed2']['epochs']}, ")  # trained with patience 5
    assert "checkpoints of teacher, steps " in out and "% of the training time" in out
    # the committed copies' layout (NAME-metrics.jsonl) reads as well
    assert main(["reproduce", "--status", "--out", str(RUNS / "run2"), "--curves", "teacher-metrics.jsonl"]) == 0
    assert "no stage folders here" in (out := capsys.readouterr().out) and "| teacher-metrics.jsonl | " in out


@pytest.mark.parametrize("argv, message", [
    (["--stalls"], "--stalls goes with --status"),
    (["--status", "--plan"], "--status and --plan: give one"),
    (["--status", "--out", "nowhere"], "nowhere: no run folder there"),
    (["--status", "--compare", "baseline"], "expected two stages A,B"),
    (["--status", "--curves", "nothing"], "--curves: no validation rows"),
])
def test_reproduce_status_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    _run_folder(tmp_path / "runs" / "multi30k-de-en")
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", *argv]) == 2
    assert message in capsys.readouterr().err
