"""benchmarks/grid_progress.py replays early stopping by the training loop's rule: checked on the committed curves."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# copies of the faithful-size grid's committed run files (docs/results/multi30k-large-de-en/run2, run3): the
# test's own fixtures, so that moving the docs cannot break it
RUNS = Path(__file__).parent / "data" / "grid-runs"


def _grid_progress():
    spec = importlib.util.spec_from_file_location("grid_progress", ROOT / "benchmarks" / "grid_progress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replaying_the_trained_patience_gives_each_early_stop_epoch_and_best():
    gp = _grid_progress()
    # the patience each stage trained under: its committed train_config.json (grid_snapshot.sh copies it), else
    # (run 2, committed before that) the preset's of the time; students 5
    patience = {"run2": {"teacher": 4, "teacher+seq_inter": 2}}
    checked = 0
    for tr in sorted([*(RUNS / "run2").glob("*-train_result.json"), *(RUNS / "run3").glob("*-train_result.json")]):
        res = json.loads(tr.read_text())
        run, stage = tr.parent.name, tr.name.removesuffix("-train_result.json")
        curve = gp.val_curve(tr.with_name(f"{stage}-metrics.jsonl"))
        tc = tr.with_name(f"{stage}-train_config.json")
        trained = json.loads(tc.read_text())["patience"] if tc.exists() else patience[run].get(stage, 5)
        stop, kept, _ = gp.under_patience(curve, trained)
        # a stage that ran its whole budget: the replay must not stop it earlier (it returns the last epoch)
        assert res["stopped"] in ("early_stopping", "max_epochs"), tr.name
        assert (stop, round(kept, 6)) == (res["epochs"], round(res["best_metric"], 6)), tr.name
        checked += 1
    assert checked >= 10


def test_under_patience_on_a_scripted_curve():
    gp = _grid_progress()
    curve = {1: 10.0, 2: 12.0, 3: 11.0, 4: 12.0, 5: 11.5, 6: 13.0, 7: 12.0}  # a tie is not a new best
    assert gp.under_patience(curve, 3) == (5, 12.0, 2)
    assert gp.under_patience(curve, 4) == (7, 13.0, 6)  # ran out of curve: the last epoch
    assert gp.longest_stall(curve) == 3


def test_rss_by_hour_reads_the_last_sampler_run_with_and_without_the_heap_column(tmp_path):
    gp = _grid_progress()
    log = tmp_path / "rss.log"
    log.write_text("--- 2026-11-30 start 22:00\n22:01:00 9000000\n"  # an older run: ignored
                   "--- 2026-12-01 start 01:37\n01:38:00 2000000\n01:39:00 3000000\n"  # before the heap column
                   "02:00:00 7000000 6000000\n02:01:00 5000000 4000000\n")
    marker, peaks = gp.rss_by_hour(log)
    assert marker == "2026-12-01 start 01:37"
    assert peaks == {"01": (3.0, None), "02": (7.0, 6.0)}  # the heap at the hour's peak sample
    assert gp.rss_by_hour(log, "2026-11-30 start 22:00") == ("2026-11-30 start 22:00", {"22": (9.0, None)})
    assert gp.rss_by_hour(log, "2026-12-01 start 01:37") == (marker, peaks)
    with pytest.raises(SystemExit, match="no sampler run marked"):
        gp.rss_by_hour(log, "2026-12-02 start 00:00")
