"""Lexical shortlist for fast decoding: CTranslate2's vocabulary map (`use_vmap`).

For every source piece, the target pieces a translation of it is likely to contain, plus a fixed
set of frequent target pieces that are always candidates. At decoding time CTranslate2 restricts
the output layer to the union of the candidates of the pieces in the batch, so the 8k-way softmax
(which dominates a small student's decoding) shrinks to a few hundred columns.

Scores come from sentence-level co-occurrence in a parallel corpus (use the Seq-KD corpus: it is
what the student learnt to produce), ranked by the Dice coefficient 2 c(s, t) / (c(s) + c(t)),
which does not favour frequent target pieces the way raw counts do (those are in the fixed set
anyway). Every source piece also maps to itself when the target vocabulary has it, so copied
names and numbers are never cut off: a missing candidate is what makes a shortlisted model emit
`<unk>` or a wrong word.

File format (CTranslate2 `VocabularyMap`): one rule per line, `source piece<TAB>t1 t2 ...`; the
line with an empty key lists the fixed candidates (CTranslate2 adds `<unk>`, BOS and EOS itself).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from seqkd.data.vocab import Vocab
from seqkd.util.fsutil import atomic_open, sha256_file

log = logging.getLogger(__name__)


@dataclass
class ShortlistConfig:
    per_piece: int = 50  # target candidates per source piece (Bergamot's lex.50.50 keeps 50)
    frequent: int = 100  # most frequent target pieces, always candidates
    min_count: int = 1  # ignore (source, target) pairs seen in fewer sentences


def build_vmap(src: list[str], tgt: list[str], vocab: Vocab, cfg: ShortlistConfig) -> dict[str, list[str]]:
    """{source piece: target pieces, best first}; the key "" holds the fixed frequent candidates."""
    src_p = [set(p[:-1]) for p in vocab.src_pieces(src)]  # drop the </s> the encoder input ends with
    tgt_p = [set(p) for p in vocab.tgt_sp.encode(list(tgt), out_type=str)]
    c_s: Counter[str] = Counter()
    c_t: Counter[str] = Counter()
    c_st: Counter[tuple[str, str]] = Counter()
    for s, t in zip(src_p, tgt_p):
        c_s.update(s)
        c_t.update(t)
        c_st.update((a, b) for a in s for b in t)
    by_src: dict[str, list[tuple[float, str]]] = {}
    for (a, b), n in c_st.items():
        if n >= cfg.min_count:
            by_src.setdefault(a, []).append((2.0 * n / (c_s[a] + c_t[b]), b))
    known = vocab.token_to_id
    vmap: dict[str, list[str]] = {"": [t for t, _ in c_t.most_common(cfg.frequent)]}
    for a, cands in by_src.items():
        best = [b for _, b in sorted(cands, key=lambda x: (-x[0], x[1]))[: cfg.per_piece]]
        if a in known and a not in best:
            best.append(a)  # copying: names, numbers
        vmap[a] = best
    return vmap


def write_vmap(vmap: dict[str, list[str]], path: str | Path) -> Path:
    """Write the rules (the fixed line first), atomically; returns the path."""
    path = Path(path)
    with atomic_open(path) as f:
        for key in sorted(vmap, key=lambda k: (k != "", k)):
            f.write(f"{key}\t{' '.join(vmap[key])}\n")
    return path


def vmap_stats(vmap: dict[str, list[str]]) -> dict:
    """How big the shortlist is: rules, fixed candidates, candidates per rule."""
    rules = [v for k, v in vmap.items() if k]
    return {"rules": len(rules), "fixed": len(vmap.get("", [])),
            "mean_per_piece": sum(map(len, rules)) / max(1, len(rules))}


def file_hash(path: str | Path) -> str:
    return sha256_file(path)[:16]
