"""Learning-rate schedules of every stage kind, and the stage cache's identity (what reruns, what not)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from seqkd.data.load import DataConfig
from seqkd.models.marian import ModelConfig
from seqkd.reproduce.graph import identity
from seqkd.reproduce.pipeline import load_preset
from seqkd.reproduce.runner import Runner
from seqkd.training.trainer import TrainConfig, lr_at
from seqkd.util.fsutil import SeqkdError


@pytest.mark.parametrize("preset", ["tiny", "quick", "multi30k", "multi30k-gpu"])
def test_every_preset_loads_and_names_valid_schedules(preset):
    cfg = load_preset(preset)
    for tc in (cfg.teacher_train, cfg.student_train, cfg.finetune_train, cfg.prune_train):
        assert tc.schedule in ("inverse_sqrt", "linear", "constant")
        assert tc.bf16 in ("off", "on", "auto")
    # fine-tuning never rides the from-scratch inverse-sqrt decay (a 10x drop within 100 steps)
    assert cfg.finetune_train.schedule in ("constant", "linear")
    assert cfg.prune_train.schedule in ("constant", "linear")


@pytest.mark.parametrize("preset", ["tiny", "quick", "multi30k"])
def test_cpu_presets_never_force_emulated_bf16(preset):
    """`bf16: on` on an AVX2-only CPU runs emulated autocast, measured 21-23x slower than float32."""
    cfg = load_preset(preset)
    assert all(tc.bf16 in ("off", "auto") for tc in (cfg.teacher_train, cfg.student_train,
                                                      cfg.finetune_train, cfg.prune_train))


def test_bf16_auto_follows_the_cpu_and_on_warns_without_native_bf16(monkeypatch, caplog):
    import torch

    from seqkd.reproduce.pipeline import runs_fp32_control
    from seqkd.training import precision

    cpu = torch.device("cpu")
    grid = replace(load_preset("multi30k"), fp32_control=True)
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not precision.bf16_autocast("auto", cpu) and not precision.bf16_autocast("off", cpu)
    assert not runs_fp32_control(grid)  # the students already train in float32: no duplicate baseline
    caplog.clear()
    assert precision.bf16_autocast("on", cpu)  # asked for explicitly: honoured, with a warning
    assert "20x slower" in caplog.text
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    caplog.clear()
    assert precision.bf16_autocast("auto", cpu) and precision.bf16_autocast("on", cpu)
    assert "slower" not in caplog.text
    assert runs_fp32_control(grid) and not runs_fp32_control(replace(grid, fp32_control=False))


def test_inverse_sqrt_for_training_from_scratch():
    c = TrainConfig(lr=1e-3, warmup_steps=400, schedule="inverse_sqrt")
    assert lr_at(1, c) == pytest.approx(1e-3 / 400)
    assert lr_at(200, c) == pytest.approx(5e-4)
    assert lr_at(400, c) == pytest.approx(1e-3)
    assert lr_at(1600, c) == pytest.approx(5e-4)  # sqrt(400 / 1600) = 1/2
    assert lr_at(40000, c) == pytest.approx(1e-4)


def test_constant_finetuning_rate_is_constant():
    """The multi30k preset's Seq-Inter fine-tuning: 1e-4 at every step, no warmup, no decay."""
    c = load_preset("multi30k").finetune_train
    assert (c.lr, c.warmup_steps, c.schedule) == (1e-4, 0, "constant")
    for step in (1, 2, 100, 1000, 10_000):
        assert lr_at(step, c, total_steps=1340) == pytest.approx(1e-4)
    # with warmup: linear ramp, then flat
    w = replace(c, warmup_steps=10)
    assert lr_at(5, w) == pytest.approx(5e-5) and lr_at(10, w) == pytest.approx(1e-4)
    assert lr_at(5000, w) == pytest.approx(1e-4)


def test_linear_decays_to_zero_at_the_planned_end():
    """Pruning retraining: warmup 25, then straight down to 0 at the stage's planned last step."""
    c = load_preset("multi30k").prune_train
    assert (c.lr, c.warmup_steps, c.schedule) == (5e-4, 25, "linear")
    total = 1000
    assert lr_at(1, c, total) == pytest.approx(5e-4 / 25)
    assert lr_at(25, c, total) == pytest.approx(5e-4)
    assert lr_at(25 + (total - 25) // 2, c, total) == pytest.approx(5e-4 * (total - 512) / (total - 25))
    assert lr_at(total, c, total) == 0.0
    assert lr_at(total + 10, c, total) == 0.0
    with pytest.raises(SeqkdError, match="planned steps"):
        lr_at(30, c, total_steps=20)  # a linear schedule with nothing planned is an error, not a constant


def test_warmup_zero_means_full_rate_from_step_one():
    c = TrainConfig(lr=3e-4, warmup_steps=0, schedule="constant")
    assert lr_at(1, c) == pytest.approx(3e-4)


# --- stage identity ------------------------------------------------------------------------------
def test_identity_ignores_cosmetic_fields_and_defaults():
    base = TrainConfig(lr=1e-3)
    assert identity(base) == {"lr": 1e-3}
    assert identity(replace(base, threads=2, log_every=7, ckpt_every=3, device="cpu")) == identity(base)
    assert identity(replace(base, lr=2e-3)) != identity(base)
    assert identity(replace(base, seed=2)) != identity(base)
    assert identity(replace(base, loss=replace(base.loss, label_smoothing=0.2))) != identity(base)
    assert identity(DataConfig(data_dir="/a")) == identity(DataConfig(data_dir="/b")) == {}
    assert identity(ModelConfig("tiny", {"d_model": 32})) != identity(ModelConfig("tiny", {"d_model": 64}))


def _runner_calls(out, params: dict, upstream: dict | None = None) -> list[str]:
    """Run stages 'a' (params) and 'b' (depends on 'a') with recording bodies; returns what ran."""
    ran: list[str] = []
    r = Runner(out, progress=False)

    def body(name):
        def fn(d):
            (d / "out.txt").write_text(name)
            ran.append(name)
        return fn

    r.stage("a", [], params, body("a"))
    r.stage("b", ["a"], upstream or {}, body("b"))
    return ran


def test_stage_reused_after_cosmetic_change_and_move_rerun_after_change_that_matters(tmp_path):
    out = tmp_path / "run"
    tc = TrainConfig(lr=1e-3, threads=2)
    assert _runner_calls(out, {"t": identity(tc)}) == ["a", "b"]
    assert _runner_calls(out, {"t": identity(replace(tc, threads=1, log_every=5))}) == []
    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))  # the run folder moved: nothing is recomputed
    assert _runner_calls(moved, {"t": identity(tc)}) == []
    # a change that matters reruns the stage and everything after it
    assert _runner_calls(moved, {"t": identity(replace(tc, lr=5e-4))}) == ["a", "b"]
    # a change to the downstream stage only reruns that one
    assert _runner_calls(moved, {"t": identity(replace(tc, lr=5e-4))}, {"k": 35}) == ["b"]


def test_stage_clock_sums_invocations_and_skips_stopped_time(tmp_path):
    import time

    from seqkd.reproduce.runner import StageClock

    path = tmp_path / "clock.json"
    with StageClock(path, every=0.05) as c:
        time.sleep(0.3)
    first = c.total
    assert 0.25 <= first < 1.0
    with StageClock(path, every=0.05) as c2:  # a resumed stage goes on from the saved total
        c2.last -= 100.0  # as if the process had been stopped for 100 s since the last tick
        time.sleep(0.01)
    assert first < c2.total < first + 0.5  # the gap counted as at most three ticks


def test_fast_pick_is_the_fastest_within_budget_else_the_best():
    from seqkd.reproduce.stages import choose_fast

    rows = {"a": {"val_bleu_greedy": 35.0, "val_sent_per_s_greedy": 900.0},
            "b": {"val_bleu_greedy": 36.5, "val_sent_per_s_greedy": 500.0},
            "c": {"val_bleu_greedy": 36.9, "val_sent_per_s_greedy": 300.0}}
    assert choose_fast(rows, teacher_val_beam=37.0, max_drop=1.0) == ("b", True)  # a is 2 BLEU down
    assert choose_fast(rows, teacher_val_beam=37.0, max_drop=2.0) == ("a", True)
    assert choose_fast(rows, teacher_val_beam=40.0, max_drop=1.0) == ("c", False)


def test_grid_config_errors_surface_before_any_work():
    from seqkd.reproduce.pipeline import check_config

    cfg = load_preset("tiny")
    with pytest.raises(SeqkdError, match="pruned_80"):
        check_config(replace(cfg, prune=[{"scheme": "class-blind", "schedule": [0.5, 0.8]},
                                         {"scheme": "class-blind", "schedule": [0.8]}]))
    with pytest.raises(SeqkdError, match="seeds"):
        check_config(replace(cfg, seeds=()))
    with pytest.raises(SeqkdError, match="prune_train"):
        check_config(replace(cfg, prune_train=replace(cfg.prune_train, max_epochs=0, max_steps=0)))
    hot = replace(cfg.student_train, loss=replace(cfg.student_train.loss, temperature=2.0))
    with pytest.raises(SeqkdError, match="finetune_train.loss.temperature 1.0 differs"):
        check_config(replace(cfg, student_train=hot))
    for preset in ("tiny", "multi30k", "multi30k-gpu"):  # the shipped fast sizes grow from their first
        check_config(load_preset(preset))
    with pytest.raises(SeqkdError, match="must be the first of fast_sizes"):
        check_config(replace(cfg, fast_sizes=("student-4-1", "student-2-1")))
    with pytest.raises(SeqkdError, match="cannot grow from student-6-1"):  # fewer layers
        check_config(replace(cfg, fast_sizes=("student-6-1", "student-2-1"), fast_stack_from="student-6-1",
                             fast_overrides={}))
    wide = replace(cfg, fast_sizes=("student-2-1", "student-small"), fast_overrides={})
    with pytest.raises(SeqkdError, match="cannot grow from student-2-1: it needs the same width"):
        check_config(wide)


def test_collapsed_student_fails_the_stage_instead_of_being_cached(tmp_path):
    """A from-scratch student far under the teacher (the deep-encoder run that ended at 4.08 val BLEU
    against the teacher's 41.60) stops the grid, is not marked done, and fails again on rerun."""
    import json

    from seqkd.reproduce.stages import Stages

    cfg = replace(load_preset("multi30k"), min_student_fraction=0.5)
    r = Runner(tmp_path, progress=False)
    s = Stages(cfg, r, None, progress=False)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "train_result.json").write_text(json.dumps({"best_metric": 41.6}))

    def trained(score):
        def run(d):
            (d / "train_result.json").write_text(json.dumps({"best_metric": score}))
            s.check_learned(d)
        return run

    for _ in range(2):
        with pytest.raises(SeqkdError, match=r"fast_student-6-1_seq_kd: best validation BLEU 4.08 is under 50% of "
                                             r"the teacher's 41.60"):
            r.stage("fast_student-6-1_seq_kd", [], {"a": 1}, trained(4.08))
        assert not (tmp_path / "fast_student-6-1_seq_kd" / "stage.json").exists()
    r.stage("seq_kd", [], {"a": 1}, trained(40.28))
    assert (tmp_path / "seq_kd" / "stage.json").exists()
    off = Stages(replace(cfg, min_student_fraction=0.0), r, None, progress=False)
    off.check_learned(tmp_path / "fast_student-6-1_seq_kd")  # the check is off: nothing raised


def test_fast_train_is_the_fast_students_recipe(tmp_path, monkeypatch):
    """`fast_train` parses from a preset mapping and is the recipe a student stage given it trains with."""
    from seqkd.config import from_dict
    from seqkd.reproduce.pipeline import ReproduceConfig
    from seqkd.reproduce.stages import Stages

    cfg = from_dict(ReproduceConfig, {"fast_train": {"lr": 5e-4, "warmup_steps": 1000},
                                      "student_train": {"lr": 1.2e-3, "warmup_steps": 300}})
    assert isinstance(cfg.fast_train, TrainConfig) and cfg.fast_train.warmup_steps == 1000
    seen = []
    s = Stages(cfg, Runner(tmp_path, progress=False), None, progress=False)
    monkeypatch.setattr(s, "_data", lambda folder: None)
    monkeypatch.setattr(s, "_train", lambda d, m, tc, data, teacher_fn=None: seen.append(tc))
    s.student(ModelConfig("student-2-1"), 7, "refs", train_cfg=cfg.fast_train)(tmp_path)
    s.student(ModelConfig("student"), 7, "refs")(tmp_path)
    assert [(t.lr, t.warmup_steps, t.seed) for t in seen] == [(5e-4, 1000, 7), (1.2e-3, 300, 7)]


def test_stacked_fast_stage_grows_from_its_parent_stage(tmp_path, monkeypatch, tiny_reverse):
    """A deeper fast size starts from the parent stage's trained model, its layers repeated, and trains on
    the fast recipe; the grown starting point is not left in the stage folder."""
    import shutil

    from seqkd.models.marian import load_model
    from seqkd.reproduce.stages import Stages

    cfg = replace(load_preset("tiny"), min_student_fraction=0.0)
    s = Stages(cfg, Runner(tmp_path, progress=False), None, progress=False)
    shutil.copytree(tiny_reverse[0], tmp_path / "fast_student-2-1_seq_kd")  # a trained 2+2 tiny model
    parent = load_model(tmp_path / "fast_student-2-1_seq_kd")
    seen = []

    def fake_train(d, model_cfg, tc, data, init_from=None, teacher_fn=None):
        m = load_model(init_from)
        seen.append((m.config.encoder_layers, m.config.decoder_layers, tc.lr, data))
        assert m.model.encoder.layers[4].fc2.weight.equal(parent.model.encoder.layers[0].fc2.weight)

    monkeypatch.setattr(s, "_data", lambda folder: folder)
    monkeypatch.setattr(s, "_train", fake_train)
    d = tmp_path / "fast_student-6-2_seq_kd"
    d.mkdir()
    s.stacked_student(ModelConfig("student-6-2"), "fast_student-2-1_seq_kd", "data_seq_kd", cfg.student_train)(d)
    assert seen == [(6, 2, cfg.student_train.lr, "data_seq_kd")]
    assert not (d / "stacked_init").exists()


def test_val_bleu_on_a_gpu_ctranslate2_cannot_use_falls_back_to_hf_on_that_gpu(monkeypatch, tmp_path):
    """The CTranslate2 wheel needs CUDA 12's cuBLAS: on a CUDA 13 machine validation decodes with HF on the GPU."""
    from types import SimpleNamespace

    from seqkd.training import validation

    engines = []

    class FakeTranslator:
        def __init__(self, path, cfg):
            engines.append((cfg.engine, cfg.device))
            self.cfg = cfg

        def translate(self, src, beam=1):
            if self.cfg.engine == "ct2" and self.cfg.device == "cuda":
                raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
            return [[SimpleNamespace(text=s)] for s in src]

    monkeypatch.setattr(validation, "Translator", FakeTranslator)
    monkeypatch.setattr(validation, "save_model", lambda model, path: None)
    vocab = SimpleNamespace(save_to=lambda path: None)
    on_gpu = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(is_cuda=True)]))
    ref = ["a man rides a bike .", "two dogs play ."]
    monkeypatch.setattr(validation, "_CT2_CUDA", {"ok": True})  # CTranslate2 claims a GPU, then fails on it
    assert validation.val_bleu(tmp_path, on_gpu, vocab, ref, ref) == pytest.approx(100.0)
    assert engines == [("ct2", "cuda"), ("hf", "cuda")]
    engines.clear()  # the failure is remembered: the next validation goes to HF at once
    validation.val_bleu(tmp_path, on_gpu, vocab, ref, ref)
    assert engines == [("hf", "cuda")]
    engines.clear()  # a model on the CPU always validates with CTranslate2
    on_cpu = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(is_cuda=False)]))
    validation.val_bleu(tmp_path, on_cpu, vocab, ref, ref)
    assert engines == [("ct2", "cpu")]
