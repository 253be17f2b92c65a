"""Running the declared grid (`graph`): restore what the run archive holds, run what is missing (one stage
at a time, or `jobs` side by side), stop at a stage boundary inside a time limit, keep the archive small.

A stage is handled when its inputs are finished, in declaration order:
1. finished in the run folder under its identity: reused (and archived if the archive lacks it);
2. in the archive under its identity, with its payload or with no stage still to run needing it: restored;
3. otherwise run, if its estimated time fits what is left of `--time-limit`; then archived.
After each stage, archived weights that no stage still to run needs, and that no user needs, are dropped.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import signal
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from seqkd.reproduce.archive import Archive
from seqkd.reproduce.graph import KEEP, STANDS_FOR, Stage, stage_hashes
from seqkd.reproduce.machine import machine_gflops, machine_info, same_machine
from seqkd.reproduce.runner import ARCHIVED, Runner, StopAfter
from seqkd.reproduce.stages import Stages, small_enough
from seqkd.util.fsutil import read_json
from seqkd.util.logs import setup_logging

log = logging.getLogger(__name__)

USER_MODELS = ("teacher", "best_int8")  # kept in the archive for good, beside the choices' picks
USER_PICKS = ("best", "fast", "int8_pick")


def weight_chain(graph: list[Stage], s: Stage, finished: set[str]) -> list[Stage]:
    """The unfinished stages that read the weights stage `s` makes, and the weights those make, in turn (a
    student's evaluation and Seq-Inter fine-tuning, a pruning round's next round). Under a time limit `s` starts
    only if its chain fits too: a chapter that ended between a student and its fine-tuning would leave weights
    in the archive that only a stage still to run reads. The chain ends at a choice and at a model kept for
    users (the teacher), whose weights the archive keeps anyway."""
    out: list[Stage] = []
    stack = [s]
    while stack:
        p = stack.pop()
        if KEEP[p.kind] != "model" or p.name in USER_MODELS:
            continue
        for c in graph:
            reads = c.inputs if c.reads is None else c.reads
            if p.name in reads and c.name not in finished and c is not s and c not in out:
                out.append(c)
                stack.append(c)
    return out


def makespan(stages: list[Stage], seconds: Callable[[Stage], float], jobs: int) -> float:
    """Seconds until `stages` (in the graph's order; `seconds(stage)` each) are all finished on `jobs` slots, each
    started as soon as its inputs among them are finished and a slot is free, the earliest declared first, a `solo`
    stage alone: how `_submit` schedules them. With one job, the sum of their times."""
    names, solo = {s.name for s in stages}, {s.name for s in stages if s.solo}
    end: dict[str, float] = {}  # finish time of each started stage
    now = 0.0
    while len(end) < len(stages):
        running = [n for n, t in end.items() if t > now]
        started = len(end)
        for s in stages:
            if s.name in end or len(running) >= jobs or any(end.get(i, float("inf")) > now for i in s.inputs
                                                              if i in names):
                continue
            if s.solo and running or solo.intersection(running):
                break
            end[s.name] = now + seconds(s)
            running.append(s.name)
        later = [t for t in end.values() if t > now]
        if later:
            now = min(later)
        elif len(end) == started:
            raise RuntimeError("makespan: a stage waits for one that never starts")
    return max(end.values(), default=0.0)


class TimeLimitReached(Exception):
    """Raised when the next stage to run would not finish inside the time limit; `remaining`: the stages not
    finished, `seconds`: their estimated total (stages with no estimate count as 0), `unknown`: those."""

    def __init__(self, remaining: list[str], seconds: float, unknown: list[str]):
        super().__init__(f"{len(remaining)} stages remain")
        self.remaining, self.seconds, self.unknown = remaining, seconds, unknown


@dataclass
class GridOptions:
    archive: str | None = None
    time_limit_min: float = 0.0
    jobs: int = 1


class Grid:
    def __init__(self, graph: list[Stage], cfg, runner: Runner, stages, opts: GridOptions):
        self.graph, self.cfg, self.r, self.S, self.opts = graph, cfg, runner, stages, opts
        self.by = {s.name: s for s in graph}
        self.h = stage_hashes(graph)
        self.r.hashes.update(self.h)
        self.archive = Archive(opts.archive) if opts.archive else None
        self.deadline = time.time() + 60 * opts.time_limit_min if opts.time_limit_min else None
        self.finished: set[str] = set()
        self._picks: dict[str, str] = {}  # decided choices (a pick never changes within a run)
        self._passed_over: set[str] = set()  # stages that did not fit in the time limit (logged once)
        self._records: dict[tuple[str, str], dict] = {}  # finished stages' JSON records (`record`)

    # --- where each stage's work is --------------------------------------------------------------
    def local_done(self, name: str) -> bool:
        p = self.r.out / name / "stage.json"
        return p.exists() and read_json(p, ["hash"]).get("hash") == self.h[name]

    def entry(self, name: str) -> dict | None:
        return self.archive.entry(name, self.h[name]) if self.archive else None

    def pick(self, name: str) -> str | None:
        """The stage a finished choice stage chose, else None (read once: `needs` asks after every stage)."""
        if name not in self._picks:
            if self.local_done(name):
                self._picks[name] = read_json(self.r.out / name / "pick.json", ["model"])["model"]
            elif self.entry(name):
                self._picks[name] = json.loads(self.archive.read(name, self.h[name], "pick.json"))["model"]
        return self._picks.get(name)

    def needs(self, name: str) -> set[str]:
        """The stages whose payload stage `name` reads (`Stage.reads`), and for one that stands for another's
        model (a choice, an export), that model's stage: the pick, or while undecided every candidate that can
        still be picked (`live`)."""
        s = self.by[name]
        out: set[str] = set()
        stack = list(s.inputs if s.reads is None else s.reads)
        while stack:
            i = stack.pop()
            out.add(i)
            if self.by[i].kind == "choice":
                p = self.pick(i)
                stack += [p] if p else self.live(i)
            elif self.by[i].kind in STANDS_FOR:
                stack += list(self.by[i].inputs)
        return out

    def record(self, name: str, rel: str) -> dict | None:
        """File `rel` (JSON) of finished stage `name`, from its folder or its archive entry; None when the stage
        is not finished or lacks the file. Read once: a finished stage's records do not change."""
        key = (name, rel)
        if key not in self._records:
            if self.local_done(name) and (self.r.out / name / rel).exists():
                self._records[key] = read_json(self.r.out / name / rel)
            elif (e := self.entry(name)) and rel in e["files"]:
                self._records[key] = json.loads(self.archive.read(name, self.h[name], rel))
            else:
                return None
        return self._records[key]

    def live(self, choice: str) -> list[str]:
        """The candidates of undecided choice `choice` that it can still pick. A choice by validation BLEU
        (`best`, and `int8_pick` among the pruned models small enough) can no longer pick a finished candidate
        below the best finished one, nor `int8_pick` one with too few zeros: their weights need not wait for
        the choice (in the archive: one student's weights at a time, not eight). Every other candidate, and
        every candidate of another choice (`fast` measures speed), stays."""
        c = self.by[choice]
        method, cands = c.body[0], list(c.inputs)
        if method not in ("best_student", "int8_pick"):
            return cands
        scores = {n: r["best_metric"] for n in cands if (r := self.record(n, "train_result.json"))}
        if method == "int8_pick":
            teacher = self.record("teacher", "train_result.json")
            pruned = set(c.body[1][0])
            for n in list(scores):
                res = self.record(n, "prune_result.json") if n in pruned else None
                if n not in pruned or teacher is None or res is None:
                    scores.pop(n)  # the teacher, the best student: kept anyway (users, fallback)
                elif not small_enough(teacher["params"]["total"], res["params_nonzero"], self.cfg.int8_min_ratio):
                    scores[n] = float("-inf")
        top = max(scores.values(), default=float("-inf"))
        return [n for n in cands if n not in scores or (scores[n] >= top and scores[n] > float("-inf"))]

    def to_run(self) -> set[str]:
        """The stages that must run: those neither finished here nor archived, and archived ones whose payload
        is not archived while a stage to run needs it (a dropped model, a top-k cache)."""
        todo = {s.name for s in self.graph if not self.local_done(s.name) and not self.entry(s.name)}
        while True:
            needed = set().union(*(self.needs(n) for n in todo)) if todo else set()
            more = {n for n in needed - todo if not self.local_done(n) and KEEP[self.by[n].kind] != "record"
                    and not self.entry(n).get("payload", True)}
            if not more:
                return todo
            todo |= more

    # --- estimates -----------------------------------------------------------------------------------
    def estimate(self, s: Stage) -> float | None:
        """Seconds stage `s` will take here: the median of its clocks measured on this kind of machine (the
        archive's entries of any identity), else the preset's estimate (by stage name, else by what the stage does:
        `Stage.body`'s method such as `finetune`, else by kind) scaled by this machine's speed; minus
        the clock its folder already holds."""
        here = machine_info(self.cfg.threads)
        clocks = [e["seconds"] for e in self.archive.clocks() if e["name"] == s.name
                  and same_machine(e.get("machine", {}), here)] if self.archive else []
        if clocks:
            est = statistics.median(clocks)
        elif key := next((k for k in (s.name, s.body[0], s.kind) if k in self.cfg.estimates), None):
            est = 60 * float(self.cfg.estimates[key])
            if self.cfg.estimate_gflops:
                est *= self.cfg.estimate_gflops / machine_gflops()
        else:
            return None
        clock = self.r.out / s.name / "clock.json"
        spent = read_json(clock, ["seconds"])["seconds"] if clock.exists() else 0.0
        return max(0.0, est - spent)

    def _stop(self) -> TimeLimitReached:
        rest = [s for s in self.graph if s.name not in self.finished]
        ests = {s.name: self.estimate(s) for s in rest}
        return TimeLimitReached([s.name for s in rest], sum(e or 0.0 for e in ests.values()),
                                [n for n, e in ests.items() if e is None])

    # --- handling one stage ----------------------------------------------------------------------------
    def _reuse_or_restore(self, s: Stage, todo: set[str]) -> bool:
        """Finish stage `s` without running it when its work is here or in the archive; whether it was."""
        if self.local_done(s.name):
            self.r.stage(s.name, list(s.inputs), s.params, s.fn(self.S), s.train)
            self._archive(s)
            return True
        e = self.entry(s.name)
        if e is None or s.name in todo:
            return False
        self.archive.restore(s.name, self.h[s.name], self.r.out / s.name)
        self.r.finish(s.name, self.h[s.name], e["seconds"], e.get("machine", {}))
        log.info("stage %s: restored from the archive", s.name)
        return True

    def _archive(self, s: Stage) -> None:
        """Archive finished stage `s`: once; again when its entry lost its payload (dropped, then needed and
        run again) and its folder has it now."""
        if not self.archive:
            return
        e, folder = self.entry(s.name), self.r.out / s.name
        payload = KEEP[s.kind] != "never"
        if e is None or (payload and not e.get("payload", True) and self.archive.payload_files(folder, s.kind)):
            self.archive.save(s.name, self.h[s.name], s.kind, folder, self.r.seconds[s.name],
                              self.r.machines.get(s.name, {}), payload=payload)

    def _finished(self, s: Stage, todo: set[str]) -> None:
        self.finished.add(s.name)
        todo.discard(s.name)
        if self.archive:
            self._tidy(todo)
        if s.name == self.r.stop_after:
            raise StopAfter(s.name)

    def _tidy(self, todo: set[str]) -> None:
        """Drop archived weights that no stage still to run needs and no user needs."""
        needed = set().union(*(self.needs(n) for n in todo)) if todo else set()
        keep = set(USER_MODELS) | {self.pick(c) for c in USER_PICKS if c in self.by}
        for s in self.graph:
            drop = KEEP[s.kind] == "model" and s.name not in needed | keep
            if drop and self.archive.has_payload(s.name, self.h[s.name]):
                self.archive.drop_payload(s.name, self.h[s.name])

    # --- the walk ----------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, str, float]]:
        """Each stage's (name, status, seconds so far) under these settings; runs and writes nothing."""
        todo = self.to_run()
        for s in self.graph:
            e = self.entry(s.name)
            if not self.local_done(s.name) and e is not None and s.name not in todo:
                self.r.rows.append((s.name, ARCHIVED, e["seconds"]))
            else:
                self.r.stage(s.name, list(s.inputs), s.params, s.fn(self.S), s.train)
        return self.r.rows

    def run(self) -> None:
        """Run the grid to its end (or to `stop_after`, or to the time limit: TimeLimitReached)."""
        todo = self.to_run()
        log.info("grid: %d stages, %d to run", len(self.graph), len(todo))
        if self.opts.jobs > 1:
            return self._run_parallel(todo)
        stop: TimeLimitReached | None = None
        for s in self.graph:
            if not self.finished.issuperset(s.inputs):
                continue  # an input did not fit in the time limit
            if not self._reuse_or_restore(s, todo):
                try:
                    self._check_time(s)
                except TimeLimitReached as e:
                    stop = stop or e  # a later stage that fits may still run
                    continue
                self.r.stage(s.name, list(s.inputs), s.params, s.fn(self.S), s.train)
                self._archive(s)
            self._finished(s, todo)
        if stop:
            raise self._stop()

    def _check_time(self, s: Stage) -> None:
        """TimeLimitReached unless stage `s` and its `chain` fit in the time left (by their estimates, scheduled on
        `jobs` slots as `_submit` would: `makespan`)."""
        if self.deadline is None:
            return
        est = self.estimate(s)
        if est is None:
            return
        chain = weight_chain(self.graph, s, self.finished)
        total = makespan([s, *chain], lambda c: est if c is s else self.estimate(c) or 0.0, self.opts.jobs)
        if time.time() + total > self.deadline:
            if s.name in self._passed_over:
                raise self._stop()
            self._passed_over.add(s.name)
            log.info("stage %s%s: about %.1f min, more than the %.1f min left", s.name,
                     f" and the {len(chain)} stages that read its weights" if chain else "", total / 60,
                     (self.deadline - time.time()) / 60)
            raise self._stop()

    def _run_parallel(self, todo: set[str]) -> None:
        """Up to `jobs` stages at once, each in its own process with threads / jobs threads; a `solo` stage
        waits for the running ones to end, then runs alone with all the threads."""
        jobs = self.opts.jobs
        every = self.cfg.threads or os.cpu_count() or 1
        running: dict[Future, Stage] = {}
        stop: TimeLimitReached | None = None
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
            while len(self.finished) < len(self.graph):
                stop = self._submit(pool, running, todo, jobs, every)
                if not running:
                    if stop:
                        raise self._stop()
                    if len(self.finished) < len(self.graph):
                        raise RuntimeError("grid: no stage can run (a cycle in the declarations?)")
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    s = running.pop(f)
                    seconds, machine = f.result()
                    self.r.seconds[s.name], self.r.machines[s.name] = seconds, machine
                    self.r.ran.append(s.name)
                    self._archive(s)
                    self._finished(s, todo)

    def _submit(self, pool, running: dict, todo: set[str], jobs: int, every: int) -> TimeLimitReached | None:
        """Start the stages that can start now, in the graph's order; a stage that does not fit in the time limit
        is passed over (a later one that fits still starts); the time limit's stop if one was passed over."""
        stop = None
        for s in self.graph:
            if any(r.solo for r in running.values()):
                return stop
            if s.name in self.finished or s in running.values() or not self.finished.issuperset(s.inputs):
                continue
            if self._reuse_or_restore(s, todo):
                self._finished(s, todo)
                continue
            if s.solo and running:
                return stop  # nothing after it in the graph's order starts before it
            if len(running) >= jobs:
                continue
            try:
                self._check_time(s)
            except TimeLimitReached as e:
                stop = stop or e
                continue
            threads = every if s.solo else max(1, every // jobs)
            log.info("stage %s: running (%d thread%s)", s.name, threads, "" if threads == 1 else "s")
            running[pool.submit(_work, self.cfg, self.r.out, s, self.h, threads, self.S.refs, self.S.test,
                                self.r.progress)] = s
        return stop


def _worker_init(level: int) -> None:
    """A worker process starts: it dies with the grid (`_die_with_parent`) and logs as the main process does, at
    its `level` (`setup_logging`: no transformers progress bars, no sacremoses hint)."""
    _die_with_parent()
    setup_logging(level)


def _die_with_parent() -> None:
    """A worker is killed with the grid's process (Linux: PR_SET_PDEATHSIG), so a `kill -9` of the grid leaves no
    stage running on beside its rerun."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their stage does
        pass


def _work(cfg, out: Path, s: Stage, hashes: dict, threads: int, refs, test, progress: bool) -> tuple[float, dict]:
    """Run one stage in a worker process with `threads` threads; (its clock seconds, its machine)."""
    torch.set_num_threads(threads)
    cfg = replace(cfg, threads=threads)
    r = Runner(out, progress)
    r.hashes.update(hashes)
    r.stage(s.name, list(s.inputs), s.params, s.fn(Stages(cfg, r, refs, progress, test)), s.train)
    return r.seconds[s.name], r.machines[s.name]
