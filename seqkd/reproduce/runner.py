"""Running one stage of `seqkd reproduce` in its folder, once.

Each stage is a folder in the run directory with `stage_hash.txt` (its identity plus its inputs'
identities) written when it starts, `clock.json` (wall time so far, summed over invocations) and
`stage.json` (identity, clock, machine) written last. A rerun skips stages whose `stage.json` matches; a
changed setting changes the hash of that stage and of everything after it; a stage killed half-way
resumes inside its folder (training checkpoints, distillation shards); a training stage whose only change
is a larger budget (patience, max_epochs) trains on from its last checkpoint (`extends`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from seqkd.reproduce.graph import identity
from seqkd.reproduce.graph import stable_hash as _h
from seqkd.reproduce.machine import machine_info
from seqkd.training.trainer import TrainConfig
from seqkd.util import faults
from seqkd.util.fsutil import read_json, write_json, write_text

log = logging.getLogger(__name__)
_FIX = "delete it (or its stage folder) and rerun"


class StageClock:
    """A stage's wall time summed over invocations: a background tick adds the time since the last one
    to `path` every `every` seconds, so a killed run loses at most that much. Gaps longer than three
    ticks (the process was stopped, e.g. SIGSTOP) count as three ticks, not as work."""

    def __init__(self, path: Path, every: float = 15.0):
        self.path, self.every = path, every
        self.total = read_json(path, ["seconds"], _FIX)["seconds"] if path.exists() else 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        now = time.monotonic()
        self.total += min(now - self.last, 3 * self.every)
        self.last = now
        write_json(self.path, {"seconds": self.total})

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.tick()

    def __enter__(self) -> StageClock:
        self.last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.tick()


class StopAfter(Exception):
    """Raised after the stage named by --stop-after."""


# What `reproduce --plan` says of a stage.
DONE, PARTIAL, CHANGED, NEW, ARCHIVED = "done", "partial", "changed", "to run", "archived"
EXTENDS = "extends"  # its training goes on from its last checkpoint under a larger budget


def extends(d: Path, was_hash: Callable[[TrainConfig], str], train: TrainConfig) -> bool:
    """Whether stage folder `d` holds this stage's training under a smaller budget, so that going on from
    its last checkpoint with `train` ends where a fresh run with `train` would.

    `d/stage_hash.txt` must equal `was_hash(train with the recorded patience and max_epochs)` (the
    recorded ones are in `d/train_config.json`); nothing else may differ. Raising `patience` (or
    making it 0, never) only moves the stop. Raising `max_epochs` also needs per-epoch validation
    (`val_every: 0`; else the old last epoch validated off the grid) and a schedule that does not
    depend on the planned length (not `linear`).
    """
    if not all((d / f).exists() for f in ("stage_hash.txt", "train_config.json", "checkpoints/latest.json")):
        return False
    old = read_json(d / "train_config.json", ["patience", "max_epochs"], _FIX)
    p, e = old["patience"], old["max_epochs"]
    if (p, e) == (train.patience, train.max_epochs) or train.max_epochs < e:
        return False
    if train.patience and not (p and train.patience >= p):
        return False
    if train.max_epochs != e and (train.schedule == "linear" or train.val_every):
        return False
    return was_hash(replace(train, patience=p, max_epochs=e)) == (d / "stage_hash.txt").read_text()


class Runner:
    """Runs one stage at a time in its folder under `out`; `hashes` chains each stage's identity into its
    dependants, `seconds` holds each finished stage's clock and `machines` the machine it ran on.

    `plan`: run nothing and write nothing; `rows` gets each stage's (name, status, seconds so far), where
    status is DONE (reused as it is), PARTIAL (resumes in its folder), EXTENDS (its training, finished
    or not, goes on from its last checkpoint under a larger patience / max_epochs: `extends`), CHANGED
    (its folder holds another identity's work, which a run would discard), or NEW; the grid adds
    ARCHIVED (restored from the run archive).
    """

    def __init__(self, out: Path, progress: bool = True, stop_after: str = "", plan: bool = False):
        self.out, self.progress, self.stop_after, self.plan = out, progress, stop_after, plan
        self.stopped = False
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.machines: dict[str, dict] = {}
        self.ran: list[str] = []
        self.rows: list[tuple[str, str, float]] = []

    def status(self, name: str, h: str, was_hash: Callable[[TrainConfig], str] | None = None,
               train: TrainConfig | None = None) -> tuple[str, float]:
        """(status, clock seconds so far) of stage `name` under identity `h`, from its folder alone
        (`train`, `was_hash`: the stage's one training config and its identity under another config)."""
        d = self.out / name
        if (d / "stage.json").exists():
            m = read_json(d / "stage.json", ["hash", "seconds"], _FIX)
            if m["hash"] == h:
                return DONE, m["seconds"]
        if not d.exists():
            return NEW, 0.0
        seconds = read_json(d / "clock.json", ["seconds"], _FIX)["seconds"] if (d / "clock.json").exists() else 0.0
        same = (d / "stage_hash.txt").exists() and (d / "stage_hash.txt").read_text() == h
        if not same and train is not None and was_hash is not None and extends(d, was_hash, train):
            return EXTENDS, seconds
        return (PARTIAL if same else CHANGED), seconds

    def finish(self, name: str, h: str, seconds: float, machine: dict) -> None:
        """Mark stage `name` done under identity `h` (its folder complete): `stage.json`, written last."""
        write_json(self.out / name / "stage.json", {"hash": h, "seconds": seconds, "machine": machine})
        self.hashes[name], self.seconds[name], self.machines[name] = h, seconds, machine

    def stage(self, name: str, inputs: list[str], params, fn: Callable[[Path], None],
              train: TrainConfig | None = None) -> Path:
        """Run `fn(folder)` unless done under this identity. `train`: the config of the stage's one training
        run, whose identity is `params["t"]`; given, a larger budget extends the stage instead of discarding it."""
        self.stopped = name == self.stop_after
        ins = [self.hashes[i] for i in inputs]
        h = _h({"params": params, "inputs": ins})
        if train is not None and params.get("t") != identity(train):
            raise ValueError(f"stage {name}: params['t'] is not the identity of its training config")
        d = self.out / name

        def was_hash(tc: TrainConfig) -> str:
            return _h({"params": {**params, "t": identity(tc)}, "inputs": ins})

        status, seconds = self.status(name, h, was_hash, train)  # the one decision a plan reports and a run acts on
        if self.plan:
            self.hashes[name] = h
            self.rows.append((name, status, seconds))
            return d
        if status == DONE:
            self.hashes[name], self.seconds[name] = h, seconds
            self.machines[name] = read_json(d / "stage.json", fix=_FIX).get("machine", {})
            return d
        if status == CHANGED:
            log.info("stage %s: settings changed, recomputing", name)
            shutil.rmtree(d)
        if status == EXTENDS:  # in this order: a kill between the steps finds the stage extendable or partial
            log.info("stage %s: a larger budget (patience %d, max_epochs %d), going on from its last checkpoint",
                     name, train.patience, train.max_epochs)
            (d / "train_result.json").unlink(missing_ok=True)
            (d / "stage.json").unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        write_text(d / "stage_hash.txt", h)
        log.info("stage %s: running", name)
        machine = machine_info()  # taken before: a stage may change torch's threads (the speed measurement does)
        with StageClock(d / "clock.json") as clock:
            fn(d)
        self.finish(name, h, clock.total, machine)
        faults.point("stage_done")
        self.ran.append(name)
        return d
