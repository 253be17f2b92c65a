"""sacreBLEU BLEU/chrF (with signatures), perplexity and p(t = y_hat) for a model folder."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from sacrebleu.metrics import BLEU, CHRF

from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.util.fsutil import SeqkdError


@dataclass
class Score:
    score: float
    signature: str


def bleu(hyps: list[str], refs: list[str]) -> Score:
    """Corpus BLEU on detokenized text (sacreBLEU defaults: 13a tokenization, exp smoothing)."""
    if len(hyps) != len(refs):
        raise SeqkdError(f"{len(hyps)} hypotheses but {len(refs)} references")
    m = BLEU()
    return Score(m.corpus_score(hyps, [refs]).score, str(m.get_signature()))


def chrf(hyps: list[str], refs: list[str]) -> Score:
    m = CHRF()
    return Score(m.corpus_score(hyps, [refs]).score, str(m.get_signature()))


def paired_significance(hyps: dict[str, list[str]], refs: list[str], samples: int,
                        baseline: str = "baseline") -> dict[str, dict]:
    """sacreBLEU's paired bootstrap resampling of each system's BLEU against `baseline`'s: p-value and p < 0.05.

    Two systems with the same per-sentence BLEU statistics (identical outputs, or texts that differ with equal
    n-gram matches and lengths) get p = 1: every resampled difference is 0 and nothing is more extreme than the
    real difference 0, but sacreBLEU's strict '>' on the centred statistic counts none and gives 1 / (samples + 1).
    """
    from sacrebleu.significance import PairedTest

    others = [s for s in hyps if s != baseline]
    named = [(baseline, hyps[baseline])] + [(s, hyps[s]) for s in others]
    _, scores = PairedTest(named, {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=samples)()
    stats = {s: BLEU()._extract_corpus_statistics(h, [refs]) for s, h in hyps.items()}
    res = {}
    for i, s in enumerate(others):
        p = 1.0 if stats[s] == stats[baseline] else scores["BLEU"][i + 1].p_value
        res[s] = {"p_value": p, "significant": p < 0.05}
    return res


@dataclass
class EvalResult:
    n: int
    bleu_greedy: float
    bleu_beam: float
    chrf_greedy: float
    chrf_beam: float
    ppl: float  # perplexity of the references (per target token, incl. </s>)
    p_beam: float  # mean probability the model gives its own beam output, p(t = y_hat)
    beam: int
    engine: str
    bleu_signature: str
    chrf_signature: str
    seconds_greedy: float
    seconds_beam: float

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(model_dir: str, src: list[str], ref: list[str], cfg: DecodeConfig | None = None,
             progress: bool = True, translator: Translator | None = None) -> tuple[EvalResult, list[str], list[str]]:
    """Greedy and beam translation of `src`, scored against `ref`; also PPL and p(t = y_hat).

    Returns the result and the greedy and beam outputs (for writing or significance tests). `translator`:
    an already loaded `Translator(model_dir, cfg)` (the caller times it further).
    """
    cfg = cfg or DecodeConfig()
    if len(src) != len(ref):
        raise SeqkdError(f"source has {len(src)} lines but reference has {len(ref)}")
    if not src:
        raise SeqkdError("nothing to evaluate: the source and reference are empty (0 lines)")
    tr = translator or Translator(model_dir, cfg)
    tr.translate(src[:16], beam=cfg.beam)  # warm-up: first-call allocations are not throughput
    t = time.perf_counter()
    greedy = [h[0].text for h in tr.translate(src, beam=1, nbest=1, progress=progress)]
    t_greedy = time.perf_counter() - t
    t = time.perf_counter()
    beam_h = [h[0] for h in tr.translate(src, beam=cfg.beam, nbest=1, progress=progress)]
    t_beam = time.perf_counter() - t
    beam = [h.text for h in beam_h]
    ref_scores = tr.score(src, ref)
    ppl = math.exp(-sum(s for s, _ in ref_scores) / max(1, sum(n for _, n in ref_scores)))
    own = tr.score(src, beam)
    p_beam = sum(math.exp(s) for s, _ in own) / max(1, len(own))
    bg, bb, cg, cb = bleu(greedy, ref), bleu(beam, ref), chrf(greedy, ref), chrf(beam, ref)
    res = EvalResult(len(src), bg.score, bb.score, cg.score, cb.score, ppl, p_beam, cfg.beam, cfg.engine,
                     bg.signature, cg.signature, t_greedy, t_beam)
    return res, greedy, beam
