"""Numerics against hand-worked cases (issue 12, part 3; the model-based cases: tests/test_numerics.py).

Word-KD with a temperature, the Seq-KD filters, learning-rate schedules, the paired bootstrap of the report
and class-distribution pruning, each against numbers worked out in the comments or an independent
implementation (numpy bootstrap, BLEU statistics from scratch).

Conventions pinned down here (seqkd's, where they differ from a paper):
- Word-KD: (1 - a) * label-smoothed NLL (at T = 1) + a * T^2 * CE(teacher_T, student_T); the logged `kd` is
  the CE without T^2; a top-k teacher's probabilities are used as stored (their temperature is the cache's);
- the Seq-KD filters measure length in characters + 1 and drop the floor of the fraction;
- class-distribution pruning divides |w| by torch's std (Bessel-corrected, around the class mean).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import reverse_task

from seqkd.data.batching import IGNORE
from seqkd.data.pairs import ListPairs
from seqkd.distill.config import DistillConfig
from seqkd.distill.shards import merge
from seqkd.training.losses import LossConfig, compute_loss
from seqkd.training.trainer import TrainConfig, lr_at
from seqkd.util.fsutil import SeqkdError

# --- 4. Word-KD with a temperature ---------------------------------------------------------------
# Three words + <pad> (id 3, its logit ignored whatever it is). Student logits [0, 2 ln 2, 2 ln 3]:
#   at T = 1, p = [1, 4, 9] / 14;  at T = 2, logits / 2 = [0, ln 2, ln 3], p_T = [1, 2, 3] / 6.
# Teacher logits [2 ln 3, 2 ln 2, 0]: at T = 2, q_T = [3, 2, 1] / 6.
STUDENT = [0.0, 2 * math.log(2), 2 * math.log(3)]
TEACHER = [2 * math.log(3), 2 * math.log(2), 0.0]
# label 2: nll = ln(14/9) = 0.4418328; smoothing term = (ln 14 + ln 3.5 + ln(14/9)) / 3 = 1.4445508;
# eps 0.1: 0.9 * 0.4418328 + 0.1 * 1.4445508 = 0.5421046
CE = 0.9 * math.log(14 / 9) + 0.1 * (math.log(14) + math.log(3.5) + math.log(14 / 9)) / 3
# full KD at T = 2: -sum q_T log p_T = 1/2 ln 6 + 1/3 ln 3 + 1/6 ln 2 = 1.3776084
KD_FULL = 0.5 * math.log(6) + math.log(3) / 3 + math.log(2) / 6
# top-2 (probs renormalised over the 2, as the cache stores them): ids [0, 1], probs [0.6, 0.4]:
# -(0.6 ln(1/6) + 0.4 ln(1/3)) = 0.6 ln 6 + 0.4 ln 3 = 1.5145006
KD_TOP2 = 0.6 * math.log(6) + 0.4 * math.log(3)


def _kd_batch(pad_logit: float, with_pad_column: bool = True):
    """Position 0 is the hand-worked one; position 1 is padding (labels -100) with arbitrary logits."""
    row = lambda xs: xs + [pad_logit] if with_pad_column else xs  # noqa: E731
    student = torch.tensor([[row(STUDENT), row([5.0, -3.0, 1.0])]])
    teacher = torch.tensor([[TEACHER + [pad_logit], [-4.0, 9.0, 0.5, pad_logit]]])
    return student, teacher, torch.tensor([[2, IGNORE]])


@pytest.mark.parametrize("pad_column", [True, False])  # student logits as (B, T, V) or training's (B, T, V - 1)
def test_word_kd_temperature_and_t_squared_full_teacher(pad_column):
    student, teacher, labels = _kd_batch(pad_logit=7.0, with_pad_column=pad_column)
    cfg = LossConfig(label_smoothing=0.1, word_kd_alpha=0.5, temperature=2.0)
    loss, logs = compute_loss(student, labels, cfg, 3, teacher)
    assert logs["kd"] == pytest.approx(KD_FULL, abs=1e-5)  # logged without the T^2 factor
    assert logs["ce"] == pytest.approx(CE, abs=1e-5)  # the NLL term stays at T = 1
    # (1 - a) * CE + a * T^2 * KD = 0.5 * 0.5421046 + 0.5 * 4 * 1.3776084 = 3.0262690
    assert loss.item() == pytest.approx(0.5 * CE + 0.5 * 4 * KD_FULL, abs=1e-5)
    assert loss.item() == pytest.approx(3.0262690, abs=1e-5)


def test_word_kd_temperature_and_t_squared_topk_teacher():
    student, _, labels = _kd_batch(pad_logit=-2.0)
    probs = torch.tensor([[[0.6, 0.4], [0.5, 0.5]]])
    ids = torch.tensor([[[0, 1], [2, 0]]])
    cfg = LossConfig(label_smoothing=0.1, word_kd_alpha=0.5, temperature=2.0)
    loss, logs = compute_loss(student, labels, cfg, 3, (probs, ids))
    assert logs["kd"] == pytest.approx(KD_TOP2, abs=1e-5)
    # 0.5 * 0.5421046 + 0.5 * 4 * 1.5145006 = 3.3000535
    assert loss.item() == pytest.approx(3.3000535, abs=1e-5)
    # at T = 1 the same top-k pair meets p = [1, 4, 9] / 14: -(0.6 ln(1/14) + 0.4 ln(4/14)), no factor
    t1, _ = compute_loss(student, labels, LossConfig(0.1, 0.5, 1.0), 3, (probs, ids))
    assert t1.item() == pytest.approx(0.5 * CE + 0.5 * (0.6 * math.log(14) + 0.4 * math.log(14 / 4)), abs=1e-5)


# --- 6. distillation filters ----------------------------------------------------------------------
def _merge(tmp_path, src, shards_rows, **kw) -> tuple[list[str], list[str], dict]:
    """Write hand-made shard files and merge them: (train.src, train.tgt, manifest)."""
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    shards, start = [], 0
    for k, rows in enumerate(shards_rows):
        shards.append(list(range(start, start + len(rows))))
        start += len(rows)
        lines = [json.dumps({"i": i, "hyp": h, "score": s}) + "\n" for i, (h, s) in zip(shards[-1], rows)]
        (out / "shards" / f"shard-{k:05d}.jsonl").write_text("".join(lines), encoding="utf-8")
    cfg = DistillConfig(shard_size=len(shards_rows[0]), **kw)
    m = merge(out, ListPairs(src, ["ref"] * len(src)), shards, {"config": asdict(cfg)}, cfg)
    read = lambda name: (out / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    return read("train.src"), read("train.tgt"), m


def test_filters_drop_exactly_the_pairs_they_should(tmp_path):
    """max_len_ratio 2.0 on (characters + 1), then filter_worst 0.4 of the 7 survivors = floor(2.8) = 2 lowest
    scores, a tie at the cut going to the earlier input. Hand-worked (src chars, hyp chars, ratio, score):"""
    src = ["a b c", "aaaa", "abc", "ab", "abcdefghij", "s5", "s6", "s7", "s8", "s9"]
    rows = [[("x y z", -0.1),     # 0: (5+1)/(5+1) = 1                     kept
             ("", -9.0),          # 1: empty hypothesis                    dropped (empty)
             ("abcdefg", -0.2),   # 2: (7+1)/(3+1) = 2.0, at the limit     kept
             ("abcdefgh", -9.0),  # 3: (8+1)/(2+1) = 3.0                   dropped (ratio)
             ("ab", -9.0)],       # 4: (10+1)/(2+1) = 3.67, the inverse    dropped (ratio)
            [("h5", -0.5),        # 5: kept
             ("h6", -2.0),        # 6: lowest of the survivors             dropped (score)
             ("h7", -0.3),        # 7: kept
             ("h8", -1.0),        # 8: tied second lowest, earlier input   dropped (score)
             ("h9", -1.0)]]       # 9: tied, later input                   kept
    s, t, m = _merge(tmp_path, src, rows, max_len_ratio=2.0, filter_worst=0.4)
    assert t == ["x y z", "abcdefg", "h5", "h7", "h9"]
    assert s == ["a b c", "abc", "s5", "s7", "s9"]
    assert m["dropped"] == {"empty": 1, "length_ratio": 2, "low_score": 2} and m["pairs"] == 5
    # the mean teacher score is over every row, the dropped ones too
    assert m["mean_teacher_score"] == pytest.approx((-0.1 - 9 - 0.2 - 9 - 9 - 0.5 - 2 - 0.3 - 1 - 1) / 10)
    # each filter alone
    s, t, m = _merge(tmp_path / "ratio", src, rows, max_len_ratio=2.0)
    assert t == ["x y z", "abcdefg", "h5", "h6", "h7", "h8", "h9"]
    s, t, m = _merge(tmp_path / "worst", src, rows, filter_worst=0.25)
    # 9 non-empty rows, floor(2.25) = 2 dropped: the two lowest scores in input order, rows 3 and 4 (-9.0)
    assert t == ["x y z", "abcdefg", "h5", "h6", "h7", "h8", "h9"]
    assert m["dropped"] == {"empty": 1, "length_ratio": 0, "low_score": 2}


def test_filter_worst_drops_the_stated_fraction(tmp_path):
    """Dropping 29% of 100 pairs should drop 29; 100 * 0.29 = 28.999999999999996 floors to 28."""
    src = [f"s{i}" for i in range(100)]
    rows = [[(f"h{i}", -i / 100) for i in range(k, k + 50)] for k in (0, 50)]
    _, t, m = _merge(tmp_path, src, rows, filter_worst=0.29)
    assert m["dropped"]["low_score"] == 29 and t == [f"h{i}" for i in range(71)]


# --- 7. learning-rate schedules -------------------------------------------------------------------
def test_schedules_without_warmup_and_at_the_warmup_boundary():
    """What tests/test_schedules_and_cache.py leaves out: no-warmup inverse-sqrt and linear, and the first
    step after warmup."""
    inv = TrainConfig(lr=1e-3, warmup_steps=0, schedule="inverse_sqrt")
    assert [lr_at(s, inv) for s in (1, 4, 100)] == pytest.approx([1e-3, 5e-4, 1e-4])  # lr * sqrt(1 / step)
    lin = TrainConfig(lr=1e-3, warmup_steps=0, schedule="linear")
    # lr * (total - step) / total with total 10: 0.9, 0.5, 0.1 and 0 of lr at steps 1, 5, 9, 10
    assert [lr_at(s, lin, 10) for s in (1, 5, 9, 10)] == pytest.approx([9e-4, 5e-4, 1e-4, 0.0])
    w = TrainConfig(lr=1e-3, warmup_steps=4, schedule="linear")
    # warmup 4 of 12: 1/4, ..., 4/4 of lr, then (12 - 5) / (12 - 4) = 7/8 at step 5
    assert [lr_at(s, w, 12) for s in (1, 4, 5, 8)] == pytest.approx([2.5e-4, 1e-3, 8.75e-4, 5e-4])
    inv_w = TrainConfig(lr=1e-3, warmup_steps=4, schedule="inverse_sqrt")
    assert lr_at(5, inv_w) == pytest.approx(1e-3 * math.sqrt(4 / 5))
    assert lr_at(3, TrainConfig(lr=2e-4, warmup_steps=0, schedule="constant"), 2) == pytest.approx(2e-4)
    with pytest.raises(SeqkdError, match="planned steps"):
        lr_at(1, lin, 0)


def test_training_loop_uses_the_schedule(tmp_path, tiny_reverse):
    """A 6-step run (warmup 2, linear): the logged rate per step is the hand value, Adam's first update is
    lr_1 in size (m / sqrt(v) = sign(g) at step 1; within 1e-3 relative) and the last (lr 0) changes nothing."""
    from seqkd.data.vocab import Vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainData, train

    vocab = Vocab(tiny_reverse[0])
    src, tgt = reverse_task(64, seed=9)
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=3)
    snaps = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    hook = lambda m: snaps.append({n: p.detach().clone() for n, p in m.named_parameters()})  # noqa: E731
    cfg = TrainConfig(max_tokens=128, lr=1e-3, warmup_steps=2, schedule="linear", max_epochs=50, max_steps=6,
                      log_every=1, ckpt_every=10_000, val_bleu=False, device="cpu")
    train(tmp_path / "run", cfg, model, vocab, TrainData(src, tgt, src[:8], tgt[:8]), after_step=hook,
          progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if r["type"] == "train"}
    # 1e-3 x: 1/2, 2/2, then (6 - s) / (6 - 2): 3/4, 2/4, 1/4, 0
    assert [lrs[s] for s in range(1, 7)] == pytest.approx([5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])
    assert len(snaps) == 7
    step1 = max(float((snaps[1][n] - snaps[0][n]).abs().max()) for n in snaps[0])
    assert step1 == pytest.approx(5e-4, rel=1e-3)
    assert all(torch.equal(snaps[6][n], snaps[5][n]) for n in snaps[0])
    assert any(not torch.equal(snaps[5][n], snaps[4][n]) for n in snaps[0])


# --- 8. paired bootstrap ---------------------------------------------------------------------------
def _stats(hyp: str, ref: str) -> list[int]:
    """[hyp len, ref len, correct 1-4, total 1-4] with clipped counts (whitespace tokens)."""
    h, r = hyp.split(), ref.split()
    correct, total = [], []
    for n in range(1, 5):
        hc = Counter(tuple(h[i: i + n]) for i in range(len(h) - n + 1))
        rc = Counter(tuple(r[i: i + n]) for i in range(len(r) - n + 1))
        correct.append(sum(min(c, rc[g]) for g, c in hc.items()))
        total.append(sum(hc.values()))
    return [len(h), len(r), *correct, *total]


def _bleu(s: np.ndarray) -> np.ndarray:
    """Corpus BLEU of summed statistics (..., 10), exp smoothing of zero precisions (none occur here)."""
    assert (s[..., 2:6] > 0).all()
    logp = np.log(s[..., 2:6] / s[..., 6:10]).mean(-1)
    bp = np.where(s[..., 0] < s[..., 1], np.exp(1 - s[..., 1] / s[..., 0]), 1.0)
    return 100 * bp * np.exp(logp)


def _paired_bootstrap(base: list[str], system: list[str], refs: list[str], samples: int, seed: int) -> float:
    """Koehn (2004) / Moses paired bootstrap as sacreBLEU documents it: resample sentences with replacement,
    the BLEU difference per resample, centred; p = (#{|d| - mean|d| > |real d|} + 1) / (samples + 1)."""
    sb = np.array([_stats(h, r) for h, r in zip(base, refs)], dtype=float)
    ss = np.array([_stats(h, r) for h, r in zip(system, refs)], dtype=float)
    real = abs(_bleu(sb.sum(0)) - _bleu(ss.sum(0)))
    idx = np.random.default_rng(seed).choice(len(refs), size=(samples, len(refs)), replace=True)
    d = np.abs(_bleu(ss[idx].sum(1)) - _bleu(sb[idx].sum(1)))
    return (int(((d - d.mean()) > real).sum()) + 1) / (samples + 1)


def _corrupt(lines: list[str], frac: float, digits: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for line in lines:
        d = line.split()
        if rng.random() < frac:
            for i in rng.sample(range(len(d)), min(digits, len(d))):
                d[i] = str((int(d[i]) + rng.randint(1, 9)) % 10)
        out.append(" ".join(d))
    return out


@pytest.fixture()
def systems(tmp_path, monkeypatch):
    """Beam outputs of hand-made systems in out/eval_<system>/beam.txt (the layout report._significance reads)."""
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)  # sacreBLEU's default seed, 12345
    refs = reverse_task(200, seed=21)[1]
    base = _corrupt(refs, 0.3, 1, seed=1)
    hyps = {"baseline": base, "much_worse": _corrupt(refs, 0.8, 3, seed=2),
            "close": [_corrupt([b], 1.0, 1, seed=i)[0] if i % 25 == 0 else b for i, b in enumerate(base)],
            "one_sentence": [_corrupt([b], 1.0, 1, seed=i)[0] if i == 7 else b for i, b in enumerate(base)],
            "same": list(base)}
    for name, lines in hyps.items():
        (tmp_path / f"eval_{name}").mkdir()
        (tmp_path / f"eval_{name}" / "beam.txt").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return tmp_path, refs, hyps


def test_paired_bootstrap_matches_an_independent_one(systems):
    """report._significance's p-values = this numpy bootstrap's with sacreBLEU's seed (within 2 / 1001: one or
    two resamples at the edge), and within 0.05 with another seed (Monte-Carlo error <= 0.016). Decisions at
    0.05: the clearly worse system is significant, one changed sentence of 200 is not."""
    from seqkd.reproduce.report import _significance

    out, refs, hyps = systems
    names = ("much_worse", "close", "one_sentence")
    sig = _significance(out, ["baseline", *names], refs, 1000)
    for name in names:
        same_seed = _paired_bootstrap(hyps["baseline"], hyps[name], refs, 1000, seed=12345)
        other_seed = _paired_bootstrap(hyps["baseline"], hyps[name], refs, 1000, seed=4321)
        print(f"{name}: seqkd p = {sig[name]['p_value']:.4f}, numpy p = {same_seed:.4f} (seed 12345), "
              f"{other_seed:.4f} (seed 4321)")
        assert sig[name]["p_value"] == pytest.approx(same_seed, abs=2 / 1001)
        assert sig[name]["p_value"] == pytest.approx(other_seed, abs=0.05)
        assert (other_seed < 0.05) == sig[name]["significant"]
    assert sig["much_worse"]["significant"] and sig["much_worse"]["p_value"] < 0.01
    assert not sig["one_sentence"]["significant"]


def test_identical_systems_are_not_significant(systems):
    """Two identical outputs: every resampled difference is 0, so nothing is more extreme than the real
    difference (0) and p should be 1; sacreBLEU's strict `>` on the centred statistic counts none and
    reports (0 + 1) / 1001 instead, which seqkd's report marks significant."""
    from seqkd.reproduce.report import _significance

    out, refs, _ = systems
    sig = _significance(out, ["baseline", "same"], refs, 1000)["same"]
    print(f"identical systems: p = {sig['p_value']:.4f}")
    assert not sig["significant"]


# --- 9. class-distribution pruning -----------------------------------------------------------------
class _Two(torch.nn.Module):
    def __init__(self, a: list[list[float]], b: list[list[float]]):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.b = torch.nn.Parameter(torch.tensor(b))


def _masks(module, sparsity: float, scheme: str = "class-distribution") -> dict[str, list]:
    from seqkd.compress.prune import PruneConfig, compute_masks

    return {n: m.int().tolist() for n, m in compute_masks(module, PruneConfig(sparsity, scheme)).items()}


def test_class_distribution_mask_hand_worked():
    """A = [[1, -2], [3, -4]]: mean -0.5, squared deviations 2.25 + 2.25 + 12.25 + 12.25 = 29, std sqrt(29/3)
    = 3.1091; |w| / std = 0.3216, 0.6433, 0.9649, 1.2866. B = [[0.1, 0.2, -0.3, 0.4]]: mean 0.1, squared
    deviations 0 + 0.01 + 0.16 + 0.09 = 0.26, std sqrt(0.26/3) = 0.2944; |w| / std = 0.3397, 0.6794, 1.0191,
    1.3587. One threshold lambda on |w| / std over both: ranked A1 B1 A2 B2 A3 B3 A4 B4."""
    two = _Two([[1.0, -2.0], [3.0, -4.0]], [[0.1, 0.2, -0.3, 0.4]])
    assert _masks(two, 0.25) == {"a": [[0, 1], [1, 1]], "b": [[0, 1, 1, 1]]}  # lambda in (0.3397, 0.6433)
    assert _masks(two, 0.5) == {"a": [[0, 0], [1, 1]], "b": [[0, 0, 1, 1]]}  # lambda in (0.6794, 0.9649)
    assert _masks(two, 0.75) == {"a": [[0, 0], [0, 1]], "b": [[0, 0, 0, 1]]}  # lambda in (1.0191, 1.2866)
    # a global threshold on |w| (class-blind) prunes all of B first: the schemes differ here
    assert _masks(two, 0.5, "class-blind") == {"a": [[1, 1], [1, 1]], "b": [[0, 0, 0, 0]]}


def test_class_distribution_uses_the_sample_std():
    """Classes of +-c: |w| / std is sqrt((n - 1) / n) with the Bessel-corrected std (torch's default), 1 with the
    population std. a (n = 4) -> 0.866, b (n = 2) -> 0.707: pruning a third (2 of 6) takes all of b. With the
    population std all six would tie at 1 and a's first two (earlier in the flat order) would go."""
    two = _Two([[0.5, -0.5, 0.5, -0.5]], [[2.0, -2.0]])  # module order: "a" has 4 weights, "b" has 2
    assert _masks(two, 1 / 3) == {"a": [[1, 1, 1, 1]], "b": [[0, 0]]}
