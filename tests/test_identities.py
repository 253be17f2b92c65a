"""Stage identities are pinned: a change to the code that alters the identity of any stage of any preset fails
here, so that orphaning committed run-archive entries (docs/results/*/archive) is always deliberate.

After a deliberate change: `python tests/test_identities.py --write`, and name the change in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seqkd.reproduce.graph import GraphInput, build, stage_hashes
from seqkd.reproduce.pipeline import load_preset

PINNED = Path(__file__).parent / "data" / "stage_identities.json"
PRESETS = ("tiny", "quick", "multi30k", "multi30k-large", "multi30k-gpu")


def current() -> dict[str, dict[str, str]]:
    """Every stage's identity in every preset, over fixed stand-ins for the data's and the test set's identity."""
    out = {}
    for preset in PRESETS:
        cfg = load_preset(preset)
        gi = GraphInput({"pairs": 1000, "sha": "data"}, {"beam": cfg.eval_beam, "test_sha": "test"},
                        fp32_control=cfg.fp32_control)
        out[preset] = stage_hashes(build(cfg, gi))
    return out


def test_stage_identities_are_pinned():
    pinned, now = json.loads(PINNED.read_text()), current()
    for preset in PRESETS:
        changed = {n: (pinned[preset].get(n), h) for n, h in now[preset].items() if pinned[preset].get(n) != h}
        gone = set(pinned[preset]) - set(now[preset])
        assert not changed and not gone, (f"{preset}: stage identities changed {changed} or stages gone {gone}; if "
                                          "deliberate, run `python tests/test_identities.py --write`")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    PINNED.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
