"""The run archive's budget: students saved with float16-exact weights are archived in half the bytes and restored
bit-exactly, and a choice by validation BLEU keeps only the candidates it can still pick."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import reverse_task
from safetensors.torch import load_file, save_file

from seqkd.reproduce.archive import Archive
from seqkd.reproduce.compact import pack, unpack
from seqkd.training.precision import rounded
from seqkd.util.fsutil import SeqkdError


def _f16_exact(t: torch.Tensor) -> bool:
    return torch.equal(t.half().float(), t)


def _weights(path: Path, exact: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w = {"a.weight": torch.randn(64, 48, generator=g), "b.bias": torch.randn(48, generator=g),
         "pos": torch.randn(16, 8, generator=g), "ids": torch.arange(5, dtype=torch.int64), "zero": torch.zeros(8)}
    if exact:
        w = {k: v.half().float() if k in ("a.weight", "b.bias") else v for k, v in w.items()}
    save_file(w, str(path), metadata={"format": "pt"})


# --- rounding at validation and save -------------------------------------------------------------------------------
def test_rounded_gives_float16_values_inside_and_the_exact_weights_back_after():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    m[1].bias.requires_grad_(False)  # a constant (as the position tables): left as it is
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with rounded(m, "float16"):
        assert all(_f16_exact(p) for p in m.parameters() if p.requires_grad)
        assert torch.equal(m[1].bias, before["1.bias"])
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
    assert not all(_f16_exact(p.detach()) for p in m.parameters())  # float32 values, not float16 ones
    with pytest.raises(SeqkdError, match="round_to"):
        with rounded(m, "bfloat8"):
            pass


def test_training_with_round_to_saves_float16_values_and_trains_on_float32(tmp_path):
    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.models.marian import ModelConfig, build_model, load_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    src, tgt = reverse_task(300, seed=1)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), tmp_path / "vocab")
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    cfg = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=10, max_epochs=2, val_bleu=False, round_to="float16",
                      ckpt_every=10_000)
    res = train(tmp_path / "run", cfg, model, vocab, TrainData(src, tgt, src[:50], tgt[:50]), progress=False)
    saved = load_model(tmp_path / "run")
    trainable = [p for n, p in saved.named_parameters() if "embed_positions" not in n]
    assert all(_f16_exact(p.detach()) for p in trainable)
    assert not all(_f16_exact(p.detach()) for n, p in model.named_parameters() if "embed_positions" not in n)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_nll"] for r in rows if r["type"] == "val")
    assert res["best_metric"] == -best  # the metric of the weights it saved


# --- half-size, bit-exact storage ----------------------------------------------------------------------------------
def test_pack_halves_float16_exact_weights_and_unpacks_the_same_bytes(tmp_path):
    _weights(tmp_path / "exact.safetensors", exact=True)
    data = (tmp_path / "exact.safetensors").read_bytes()
    packed = pack(data)
    assert packed is not None and len(packed) < 0.6 * len(data)
    assert unpack(packed) == data
    _weights(tmp_path / "trained.safetensors", exact=False)
    assert pack((tmp_path / "trained.safetensors").read_bytes()) is None  # only a zero bias exact: stored as it is
    assert pack(b"not a safetensors file") is None


def test_the_archive_stores_float16_exact_weights_in_half_and_restores_them_bit_exact(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    _weights(stage / "model.safetensors", exact=True)
    (stage / "train_result.json").write_text("{}")
    a = Archive(tmp_path / "archive")
    a.save("student", "h1", "train", stage, 1.0, {}, payload=True)
    e = a.entry("student", "h1")["files"]["model.safetensors"]
    blob = a.blob_path(e["sha256"], e["gz"], e["enc"])
    assert e["enc"] == "f16" and blob.stat().st_size < 0.6 * e["size"]
    a.restore("student", "h1", tmp_path / "back")
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (stage / "model.safetensors").read_bytes()
    assert set(load_file(str(tmp_path / "back" / "model.safetensors"))) == {"a.weight", "b.bias", "pos", "ids", "zero"}
    body = gzip.decompress(blob.read_bytes()) if e["gz"] else blob.read_bytes()
    blob.write_bytes(body[:-40] + b"\0" * 40)  # a damaged blob: one line, nothing restored
    with pytest.raises(SeqkdError, match="corrupt"):
        a.restore("student", "h1", tmp_path / "again")
    assert not (tmp_path / "again").exists()


# --- a choice keeps only the candidates it can still pick ----------------------------------------------------------
class _Grid:
    """The multi30k grid over a run folder where the stages named in `done` have finished with those records."""

    def __init__(self, tmp_path: Path, done: dict[str, dict[str, dict]]):
        from seqkd.reproduce.graph import GraphInput, build
        from seqkd.reproduce.grid import Grid, GridOptions
        from seqkd.reproduce.pipeline import load_preset
        from seqkd.reproduce.runner import Runner

        cfg = load_preset("multi30k")
        graph = build(cfg, GraphInput({"pairs": 1, "sha": "d"}, {"beam": 5, "test_sha": "t"}, fp32_control=True))
        tmp_path.mkdir(exist_ok=True)
        self.g = Grid(graph, cfg, Runner(tmp_path), None, GridOptions())
        for name, files in done.items():
            d = tmp_path / name
            d.mkdir()
            (d / "stage.json").write_text(json.dumps({"hash": self.g.h[name]}))
            for rel, rec in files.items():
                (d / rel).write_text(json.dumps(rec))


def _val(bleu: float, total: int = 0) -> dict:
    return {"train_result.json": {"best_metric": bleu, "params": {"total": total}}}


def test_best_keeps_only_the_finished_students_it_can_still_pick(tmp_path):
    g = _Grid(tmp_path, {"baseline": _val(39.4), "seq_kd": _val(40.1), "word_kd": _val(40.1),
                         "baseline+seq_inter": _val(39.9)}).g
    live = g.live("best")
    assert "baseline" not in live and "baseline+seq_inter" not in live  # below the best finished one
    assert {"seq_kd", "word_kd", "seq_kd+seq_inter", "seq_kd+seq_inter+word_kd"} <= set(live)  # ties, unfinished
    # what a pruning round needs from the undecided `best`: the live candidates, not all eight
    assert "baseline" not in g.needs("pruned_50") and "seq_kd" in g.needs("pruned_50")
    assert {"fast_d168-2-1", "fast_d168-4-1"} <= g.needs("speed")  # `fast` measures speed: every candidate


def test_int8_pick_keeps_only_the_best_pruned_model_small_enough(tmp_path):
    teacher = _val(41.0, total=1300)
    prune = {n: {**_val(b), "prune_result.json": {"params_nonzero": nz}}
             for n, b, nz in (("pruned_0", 40.5, 1000), ("pruned_50", 40.4, 500), ("pruned_80", 40.2, 99),
                              ("pruned_90", 39.0, 50), ("pruned_50_class-distribution", 40.3, 500))}
    g = _Grid(tmp_path, {"teacher": teacher, **prune}).g
    live = g.live("int8_pick")
    assert "pruned_80" in live and "best" in live and "teacher" in live
    assert not {"pruned_0", "pruned_50", "pruned_90", "pruned_50_class-distribution"} & set(live)
    assert "pruned_80_class-distribution" in live  # not finished: it may still be picked


def test_a_stage_run_again_for_its_dropped_weights_archives_them_again(tmp_path):
    """A model whose weights left the archive, then were needed and trained again, is archived with them: else
    every later chapter would train it again."""
    from seqkd.reproduce.grid import GridOptions

    g = _Grid(tmp_path / "run", {"seq_kd": _val(40.1)}).g
    g.archive, g.opts = Archive(tmp_path / "archive"), GridOptions(archive=str(tmp_path / "archive"))
    _weights(tmp_path / "run" / "seq_kd" / "model.safetensors", exact=True)
    g.r.seconds["seq_kd"] = 60.0
    s = g.by["seq_kd"]
    g._archive(s)
    g.archive.drop_payload("seq_kd", g.h["seq_kd"])
    assert not g.archive.has_payload("seq_kd", g.h["seq_kd"])
    g._archive(s)  # its folder holds the weights again
    assert g.archive.has_payload("seq_kd", g.h["seq_kd"])
    (tmp_path / "run" / "seq_kd" / "model.safetensors").unlink()
    g.archive.drop_payload("seq_kd", g.h["seq_kd"])
    g._archive(s)  # restored with its records only: nothing to archive again
    assert not g.archive.has_payload("seq_kd", g.h["seq_kd"])
