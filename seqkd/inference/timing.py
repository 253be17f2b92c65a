"""The one warm-up-and-timing loop of every speed measurement (`seqkd bench`, the decoding settings sweep,
the grid's `fast` pick and `speed` stage).

Systems (a translator and a beam size) are timed over the same lines: each is warmed up on the first few
lines, then every repetition times every system once, interleaved (A B C, B C A, C A B, ...: the order is
rotated per repetition, so a slow spell of the machine, or a system that runs after another, hits all of
them alike; never all repetitions of A before those of B). Each system gets the median and the min-max
range of its sentences/s over the repetitions, and keeps the translations of one repetition (the last) for
BLEU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from seqkd.inference.decode import Hypothesis, Translator

WARMUP_LINES = 32


@dataclass
class Timing:
    """One system's repetitions: `seconds` per repetition over `n` lines, and the last repetition's output."""

    n: int
    seconds: list[float] = field(default_factory=list)
    hyps: list[list[Hypothesis]] = field(default_factory=list)

    def rates(self) -> list[float]:
        """Sentences/s of each repetition, slowest first."""
        return sorted(self.n / s for s in self.seconds)

    @property
    def sent_per_s(self) -> float:
        """The median sentences/s over the repetitions."""
        return statistics.median(self.rates())

    @property
    def sent_per_s_min(self) -> float:
        return self.rates()[0]

    @property
    def sent_per_s_max(self) -> float:
        return self.rates()[-1]

    def texts(self) -> list[str]:
        """The best hypothesis of each line (of the kept repetition), for BLEU."""
        return [h[0].text for h in self.hyps]


def rotation(n: int, rep: int) -> list[int]:
    """The order of `n` systems in repetition `rep`: 0..n-1 rotated left by `rep`."""
    start = rep % n if n else 0
    return list(range(start, n)) + list(range(start))


def time_interleaved(systems: list[tuple[Translator, int]], src: list[str], repeats: int,
                     warmup: int = WARMUP_LINES) -> list[Timing]:
    """Time each (translator, beam) over `src`: a warm-up of each on `src[:warmup]`, then `repeats` (at least
    one) repetitions interleaved across the systems in `rotation` order. One `Timing` per system, in order."""
    for tr, beam in systems:
        tr.translate(src[:warmup], beam=beam)
    out = [Timing(len(src)) for _ in systems]
    for rep in range(max(1, repeats)):
        for i in rotation(len(systems), rep):
            tr, beam = systems[i]
            t = time.perf_counter()
            hyps = tr.translate(src, beam=beam)
            out[i].seconds.append(time.perf_counter() - t)
            out[i].hyps = hyps
    return out
