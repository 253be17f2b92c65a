"""benchmarks/grid_progress.py replays early stopping by the training loop's rule: checked on the committed curves."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "multi30k-de-en"


def _grid_progress():
    spec = importlib.util.spec_from_file_location("grid_progress", ROOT / "benchmarks" / "grid_progress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replaying_the_trained_patience_gives_each_early_stop_epoch_and_best():
    gp = _grid_progress()
    # the patience each committed run trained under (run 3's teacher: 5, after its extension); students 5
    patience = {"run2": {"teacher": 4, "teacher+seq_inter": 2}, "run3": {"teacher": 5}}
    checked = 0
    for tr in sorted([*RESULTS.glob("run2-*-train_result.json"), *RESULTS.glob("run3-*-train_result.json")]):
        res = json.loads(tr.read_text())
        run, _, rest = tr.name.partition("-")
        stage = rest.removesuffix("-train_result.json")
        curve = gp.val_curve(tr.with_name(f"{run}-{stage}-metrics.jsonl"))
        stop, kept, _ = gp.under_patience(curve, patience[run].get(stage, 5))
        assert res["stopped"] == "early_stopping", tr.name
        assert (stop, round(kept, 6)) == (res["epochs"], round(res["best_metric"], 6)), tr.name
        checked += 1
    assert checked >= 8


def test_under_patience_on_a_scripted_curve():
    gp = _grid_progress()
    curve = {1: 10.0, 2: 12.0, 3: 11.0, 4: 12.0, 5: 11.5, 6: 13.0, 7: 12.0}  # a tie is not a new best
    assert gp.under_patience(curve, 3) == (5, 12.0, 2)
    assert gp.under_patience(curve, 4) == (7, 13.0, 6)  # ran out of curve: the last epoch
    assert gp.longest_stall(curve) == 3
