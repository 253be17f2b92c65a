"""Named fault-injection points, used by the kill tests (tests/test_faults.py).

With `SEQKD_FAULT=NAME[:N]` in the environment, the process sends itself SIGKILL the N-th time
(default the first) it passes `point(NAME)`: a kill at an exact, repeatable place (half-way
through a checkpoint, a shard, a merge, a conversion) instead of a timing race. Unset, as it
always is outside the tests, `point` returns at once.

Points: atomic_write (a temp file written, not yet renamed), checkpoint_write (a checkpoint's
weights written, its optimizer state not), checkpoint_rename (a checkpoint renamed into place,
latest.json not yet updated), model_save (a model's files half renamed;
saved.json, renamed last, then disagrees with them), shard_row (one
row of a distillation shard written), merge_write (one shard merged into train.src/train.tgt),
topk_shard (a top-k cache shard written under its temp name), stage_done (a reproduce stage
finished and marked), ct2_convert (a CTranslate2 conversion written, not yet renamed),
export_copy (an export folder copied, not yet renamed).

With `SEQKD_FAULT_NO_RESUME=1`, every resumable job starts over instead of resuming (training ignores its
checkpoints, distillation decodes its finished shards again): the switch the resume tests are run under to
show that they catch a rerun that does not resume (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("SEQKD_FAULT", "")
_NAME, _, _N = _SPEC.partition(":")
_seen = 0


def point(name: str) -> None:
    """SIGKILL this process if `name` is the armed point and this is its N-th pass."""
    global _seen
    if not _SPEC or name != _NAME:
        return
    _seen += 1
    if _seen == int(_N or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def resume_disabled() -> bool:
    """Whether resuming is switched off (`SEQKD_FAULT_NO_RESUME=1`; tests only)."""
    return os.environ.get("SEQKD_FAULT_NO_RESUME") == "1"
