"""Training curves, read from a stage's metrics.jsonl: the per-epoch validation metrics, and which curves the
report draws together (`panels`)."""

from __future__ import annotations

from pathlib import Path

from seqkd.reproduce.graph import Stage
from seqkd.util.fsutil import read_jsonl

# A curve's panel in the report, in the report's order; `panels` puts every training stage in one of them.
TEACHER, SCRATCH, FINETUNE, SEEDS, FAST, PRUNED = (
    "teacher", "students from scratch", "students fine-tuned on Seq-Inter data", "seeds and float32",
    "fast students (Seq-KD, then Seq-Inter)", "pruning rounds (Seq-Inter fine-tuning with masks)")
SECOND = " (second size)"


def metrics_file(stage: Path) -> Path:
    """A stage folder's metrics.jsonl, or `stage` itself when it names a metrics .jsonl file."""
    return stage if stage.suffix == ".jsonl" else stage / "metrics.jsonl"


def val_curve(stage: Path, key: str = "val_bleu") -> dict[int, float]:
    """epoch -> validation `key` (greedy BLEU, val_ppl, or epoch_s: the seconds since the previous validation, a
    pause in between included; the last validation of an epoch run more than once); {} if none. A line torn by a
    writer still appending is skipped, and so is a validation row without `key`."""
    val = [r for r in read_jsonl(metrics_file(stage)) if r.get("type") == "val"]
    if key == "epoch_s":
        return {b["epoch"]: b["elapsed"] - a["elapsed"] for a, b in zip(val, val[1:])}
    return {r["epoch"]: r[key] for r in val if key in r}


def panels(graph: list[Stage], small_suffix: str) -> dict[str, list[str]]:
    """Every training stage of `graph` (kinds train and prune) in one panel, by what it is: the teacher's, the
    students' from scratch and their Seq-Inter fine-tunings (the second size, whose names end in `small_suffix`,
    in panels of its own), the seeds and the float32 control, the fast students, the pruning rounds. Panels in
    the report's order, stages in the grid's; empty panels left out."""
    out: dict[str, list[str]] = {}
    for s in graph:
        if s.kind == "prune":
            panel = PRUNED
        elif s.kind != "train":
            continue
        elif s.group == "teacher":
            panel = TEACHER
        elif s.group == "seed":
            panel = SEEDS
        elif s.group in ("fast", ""):  # a fast student's Seq-KD training is no system of its own
            panel = FAST
        else:
            panel = FINETUNE if s.body[0] == "finetune" else SCRATCH
            if small_suffix and s.name.endswith(small_suffix):
                panel += SECOND
        out.setdefault(panel, []).append(s.name)
    order = [TEACHER, SCRATCH, FINETUNE, SEEDS, FAST, PRUNED, SCRATCH + SECOND, FINETUNE + SECOND]
    return {p: out[p] for p in order if p in out}


def training_curves(out: Path, graph: list[Stage], small_suffix: str) -> tuple[dict, dict]:
    """Every training stage's validation curve ({stage: {"epoch": [...], "val_bleu": [...]}}, greedy BLEU per
    validated epoch, from its metrics.jsonl; a pruning round's is its Seq-Inter fine-tuning's) and the report's
    panels of them (`panels`, stages without a curve left out)."""
    curves, by_panel = {}, {}
    for panel, names in panels(graph, small_suffix).items():
        for name in names:
            if c := val_curve(out / name):
                curves[name] = {"epoch": sorted(c), "val_bleu": [c[e] for e in sorted(c)]}
                by_panel.setdefault(panel, []).append(name)
    return curves, by_panel
