"""Distillation: Word-KD losses, Seq-Inter pick, resumable Seq-KD data, vocabulary checks, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import multimodal_task, write_lines

from seqkd.distill.workers import _pick
from seqkd.models.marian import log_probs
from seqkd.training.losses import LossConfig, compute_loss, word_kd
from seqkd.util.fsutil import SeqkdError


def test_topk_with_full_k_equals_full_word_kd():
    torch.manual_seed(0)
    V, pad = 7, 6
    student, teacher = torch.randn(2, 3, V), torch.randn(2, 3, V)
    labels = torch.tensor([[1, 2, -100], [0, 3, 4]])
    lp = log_probs(student, pad)
    full = word_kd(lp, labels, teacher, 1.0, pad)
    q = log_probs(teacher, pad).exp()
    probs, ids = q.topk(V - 1, dim=-1)
    topk = word_kd(lp, labels, (probs, ids), 1.0, pad)
    torch.testing.assert_close(full, topk)
    smaller = word_kd(lp, labels, (probs[..., :3] / probs[..., :3].sum(-1, keepdim=True), ids[..., :3]), 1.0, pad)
    assert not torch.isclose(full, smaller)


def test_word_kd_mix_hand_computed_and_alpha_zero_is_nll():
    # student log-probs over 3 words: [-2.407606, -1.407606, -0.407606]; teacher q = [0.2, 0.3, 0.5]
    logits = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]])
    teacher = torch.log(torch.tensor([[[0.2, 0.3, 0.5, 1e-9]]]))
    labels = torch.tensor([[0]])
    plain, _ = compute_loss(logits, labels, LossConfig(label_smoothing=0.1), 3)
    a0, _ = compute_loss(logits, labels, LossConfig(label_smoothing=0.1, word_kd_alpha=0.0), 3, teacher)
    assert a0.item() == pytest.approx(plain.item())
    mixed, logs = compute_loss(logits, labels, LossConfig(label_smoothing=0.1, word_kd_alpha=0.5), 3, teacher)
    # KD = 0.2*2.407606 + 0.3*1.407606 + 0.5*0.407606 = 1.107606; 0.5*2.307606 + 0.5*1.107606 = 1.707606
    assert logs["kd"] == pytest.approx(1.107606, abs=1e-5)
    assert mixed.item() == pytest.approx(1.707606, abs=1e-5)


def test_seq_inter_pick_three_candidates():
    ref = "a man rides a bike down the street"
    cands = ["a dog runs in the park", "a man rides a bicycle down the street", "man bike street"]
    assert _pick(cands, ref, "bleu")[0] == 1
    assert _pick(cands, ref, "chrf")[0] == 1
    assert _pick(["x y", "x y"], "x y", "bleu")[0] == 0  # ties keep the teacher's better rank


def _distill_cmd(teacher, s, t, out, engine="hf"):
    return [sys.executable, "-m", "seqkd", "distill", "--teacher", str(teacher), "--set", f"data.train_src={s}",
            "--set", f"data.train_tgt={t}", "--shard-size", "60", "--engine", engine, "--beam", "3", "--out", str(out)]


@pytest.mark.slow  # the default suite kills distillation at each of its fault points (test_faults.py, seq_kd)
def test_killed_distill_resumes_byte_identical(tmp_path, multimodal_teacher):
    """A SIGKILL from outside, at whatever point the third shard appears: the rerun decodes only the rest."""
    _, _, teacher, src, tgt = multimodal_teacher
    s, t = write_lines(tmp_path / "s.txt", src[:600]), write_lines(tmp_path / "t.txt", tgt[:600])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_distill_cmd(teacher, s, t, full), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(_distill_cmd(teacher, s, t, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (killed / "shards" / "shard-00002.jsonl").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "distillation finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.tgt").exists()
    finished = len(list((killed / "shards").glob("shard-*.jsonl")))
    log = subprocess.run(_distill_cmd(teacher, s, t, killed), check=True, env=env, capture_output=True, text=True,
                         timeout=600).stderr
    total = len(list((full / "shards").glob("shard-*.jsonl")))
    # the rerun went on: the shards finished before the kill were not decoded again
    assert finished >= 2 and f"{finished} of {total} shards already finished: not decoded again" in log, log[-2000:]
    assert f"{total - finished} shards decoded in this run" in log, log[-2000:]
    assert (full / "train.tgt").read_bytes() == (killed / "train.tgt").read_bytes()
    assert (full / "train.src").read_bytes() == (killed / "train.src").read_bytes()
    assert len((killed / "train.tgt").read_text().splitlines()) == 600
    m = json.loads((killed / "manifest.json").read_text())
    assert m["config"]["beam"] == 3 and m["input_pairs"] == 600 and m["teacher_weights"]


def test_mismatched_vocabulary_teacher_refused(tmp_path, multimodal_teacher, tiny_reverse):
    from seqkd.data.vocab import Vocab, VocabConfig, train_vocab
    from seqkd.training.kd import check_same_vocab, online_teacher

    _, vocab_dir, teacher, src, tgt = multimodal_teacher
    other = train_vocab([s + " x" for s in src[:500]], tgt[:500], VocabConfig(size=30), tmp_path / "other")
    with pytest.raises(SeqkdError, match="differs from the student's"):
        online_teacher(teacher, other)
    check_same_vocab(teacher, Vocab(vocab_dir))  # same vocabulary: accepted


def test_offline_topk_teacher_matches_online(tmp_path, multimodal_teacher):
    from seqkd.data.batching import collate
    from seqkd.data.tokdata import hash_pairs
    from seqkd.data.vocab import Vocab
    from seqkd.training.kd import build_topk_cache, offline_teacher, online_teacher

    _, vocab_dir, teacher, src, tgt = multimodal_teacher
    vocab = Vocab(vocab_dir)
    cache = build_topk_cache(teacher, src[:50], tgt[:50], tmp_path / "cache", k=vocab.size - 1, shard_size=20,
                             progress=False)
    idx = [3, 25, 49]
    b = collate(vocab.encode_src([src[i] for i in idx]), vocab.encode_tgt([tgt[i] for i in idx]), vocab.pad_id)
    student = torch.randn(*b["labels"].shape, vocab.size)
    cfg = LossConfig(word_kd_alpha=0.5)
    on, _ = compute_loss(student, b["labels"], cfg, vocab.pad_id, online_teacher(teacher, vocab)(idx, b))
    offline = offline_teacher(cache, vocab, hash_pairs(lambda: zip(src[:50], tgt[:50])))
    off, _ = compute_loss(student, b["labels"], cfg, vocab.pad_id, offline(idx, b))
    assert off.item() == pytest.approx(on.item(), rel=2e-3)
    with pytest.raises(SeqkdError, match="other training data"):
        offline_teacher(cache, vocab, hash_pairs(lambda: zip(src[:50], tgt[1:51])))


def test_seq_kd_student_agrees_with_teacher_more_than_baseline(tmp_path, multimodal_teacher):
    """The paper's mechanism on a two-mode task: a student trained on the teacher's beam output
    reproduces the teacher's beam output far more often than a student trained on the references."""
    from seqkd.data.vocab import Vocab
    from seqkd.distill.config import DistillConfig
    from seqkd.distill.workers import distill
    from seqkd.inference.decode import DecodeConfig, Translator
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    _, vocab_dir, teacher, src, tgt = multimodal_teacher
    vocab = Vocab(vocab_dir)
    distill(teacher, src, tgt, tmp_path / "seqkd", DistillConfig(beam=5), progress=False)
    kd_tgt = (tmp_path / "seqkd" / "train.tgt").read_text().splitlines()
    vs, vt = multimodal_task(100, seed=12)
    small = ModelConfig("tiny", {"d_model": 32, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128})
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=50, max_epochs=6, ckpt_every=10_000, val_bleu=False)
    test_src, _ = multimodal_task(300, seed=13)
    teacher_out = [h[0].text for h in Translator(teacher, DecodeConfig(beam=5)).translate(test_src)]
    agree = {}
    for name, targets in (("baseline", tgt), ("seq_kd", kd_tgt)):
        model = build_model(small, vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
        train(tmp_path / name, cfg, model, vocab, TrainData(src, targets, vs, vt), progress=False)
        out = [h[0].text for h in Translator(tmp_path / name, DecodeConfig(beam=5)).translate(test_src)]
        agree[name] = sum(a == b for a, b in zip(out, teacher_out)) / len(test_src)
    print("exact match with the teacher's beam output:", agree)
    # measured on the dev machine: baseline 0.00, Seq-KD 0.18 (a weak student on a hard two-mode task)
    assert agree["seq_kd"] >= agree["baseline"] + 0.1 and agree["seq_kd"] >= 2 * agree["baseline"], agree
