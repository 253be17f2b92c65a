"""Do the numbers move? The check for a change that should not change any result (a refactor, a move of code).

It runs the same small jobs with the code of a base revision and with the working tree, one after the other on
this machine, and compares what they wrote:

1. a tiny training run (`seqkd train --size tiny` on 2,000 Multi30k pairs, 3 epochs): every metrics row, train and
   validation, equal to the last digit (times, throughput and memory left out);
2. `seqkd distill --mode seq_kd` with that model over those pairs: train.src and train.tgt byte-identical;
3. the tiny grid (`seqkd reproduce --preset tiny`): results.json equal in every non-timing field
   (tests/conftest.py's `same_results`, the rule the resume tests use);
4. the identity of every stage of every preset (tests/test_identities.py's `current`).

    python tools/same_numbers.py --base b31bc1f --data-dir ../shared/data/multi30k [--skip-grid]

Both sides run with the same thread count (results depend on it in the last digits). The base is checked out into
a temporary git worktree; each side's `python -m seqkd` imports that side's code. Exit 0 when all agree, 1 with
the first difference of each job otherwise. About 5 minutes on 2 cores (the tiny grid is most of it).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from seqkd.util.fsutil import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("elapsed", "per_s", "rss", "ckpt_s", "seconds", "epoch_s")  # metrics keys that are times or memory


def run(tree: Path, args: list[str]) -> None:
    """`python -m seqkd ARGS` with `tree`'s code (the working directory comes first on sys.path)."""
    subprocess.run([sys.executable, "-m", "seqkd", *args], cwd=tree, check=True, capture_output=True, text=True)


def jobs(tree: Path, out: Path, data_dir: str, threads: str, grid: bool) -> None:
    """The three jobs with `tree`'s code, into `out`."""
    data = ["--src", "de", "--tgt", "en", "--data-dir", data_dir, "--threads", threads, "--quiet"]
    run(tree, ["train", "--size", "tiny", *data, "--epochs", "3", "--set", "data.max_train_pairs=2000",
               "--set", "train.seed=1", "--out", str(out / "train")])
    run(tree, ["distill", "--teacher", str(out / "train"), "--mode", "seq_kd", *data,
               "--set", "data.max_train_pairs=2000", "--out", str(out / "distill")])
    if grid:
        run(tree, ["reproduce", "--preset", "tiny", *data, "--out", str(out / "grid")])


def identities(tree: Path) -> dict:
    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_identities import current; "
            "print(json.dumps(current()))")
    return json.loads(subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True,
                                     text=True).stdout)


def metrics_rows(run_dir: Path) -> list[dict]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not any(s in k for s in SKIP)} for r in rows]


def compare(a: Path, b: Path, grid: bool) -> list[str]:
    """The differences between two sides' outputs, one line each; [] when the numbers did not move."""
    bad = []
    ra, rb = metrics_rows(a / "train"), metrics_rows(b / "train")
    if not ra or not any(r.get("type") == "val" for r in ra):
        bad.append("train: no training or validation rows to compare")
    elif ra != rb:
        first = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
        bad.append(f"train: metrics differ from row {first}: {ra[first:first + 1]} vs {rb[first:first + 1]}")
    for f in ("train.src", "train.tgt"):
        if not filecmp.cmp(a / "distill" / f, b / "distill" / f, shallow=False):
            bad.append(f"distill: {f} differs")
    if grid:
        spec = importlib.util.spec_from_file_location("conftest", ROOT / "tests" / "conftest.py")
        conftest = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conftest)
        try:
            conftest.same_results(json.loads((a / "grid" / "results.json").read_text()),
                                  json.loads((b / "grid" / "results.json").read_text()))
        except AssertionError as e:
            bad.append(f"tiny grid: results.json differs: {e}")
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the revision before the change (a commit, branch or tag)")
    p.add_argument("--data-dir", required=True, help="the local Multi30k copy")
    p.add_argument("--threads", default="2")
    p.add_argument("--skip-grid", action="store_true", help="leave out the tiny grid (about 4 of the 5 minutes)")
    a = p.parse_args()
    data_dir, grid = str(Path(a.data_dir).resolve()), not a.skip_grid
    with tempfile.TemporaryDirectory(prefix="same_numbers-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), a.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for tree, out in ((base, tmp / "base"), (ROOT, tmp / "head")):
                jobs(tree, out, data_dir, a.threads, grid)
            bad = compare(tmp / "base", tmp / "head", grid)
            if identities(base) != identities(ROOT):
                bad.append("stage identities differ (tests/test_identities.py)")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    for line in bad:
        print(line)
    print("the numbers moved" if bad else f"the numbers did not move ({a.base} -> working tree: training metrics, "
          f"distilled data{', tiny grid results' if grid else ''}, stage identities)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
