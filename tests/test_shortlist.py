"""Fast students: the lexical shortlist (CTranslate2 vmap) and the deep-encoder / shallow-decoder sizes."""

from __future__ import annotations

import pytest
from conftest import reverse_task

from seqkd.data.vocab import Vocab
from seqkd.inference.decode import DecodeConfig, Translator
from seqkd.inference.shortlist import ShortlistConfig, build_vmap, vmap_stats, write_vmap

SPECIAL = {"</s>", "<unk>", "<pad>"}


def _outputs(model_dir, lines, beam, vmap=None):
    tr = Translator(model_dir, DecodeConfig(engine="ct2", beam=beam, threads=2, vmap=vmap))
    return [h[0].pieces for h in tr.translate(lines, beam=beam)]


def test_vmap_restricts_output_to_its_tokens(tiny_reverse, tmp_path):
    model_dir, src, _, _ = tiny_reverse
    v = Vocab(model_dir)
    allowed = set(v.tgt_sp.encode(["1 2 3"], out_type=str)[0])
    path = write_vmap({"": sorted(allowed)}, tmp_path / "small.vmap")
    assert path.read_text(encoding="utf-8").startswith("\t")
    free = _outputs(model_dir, src, beam=1)
    restricted = _outputs(model_dir, src, beam=1, vmap=str(path))
    assert all(set(p) <= allowed | SPECIAL for p in restricted)
    assert sum(not set(p) <= allowed | SPECIAL for p in free) > len(src) // 2  # the restriction did bite


@pytest.mark.parametrize("beam", [1, 4])
def test_shortlist_with_every_token_changes_nothing(tiny_reverse, tmp_path, beam):
    model_dir, src, _, _ = tiny_reverse
    v = Vocab(model_dir)
    path = write_vmap({"": sorted(set(v.token_to_id) - SPECIAL)}, tmp_path / "all.vmap")
    assert _outputs(model_dir, src, beam, vmap=str(path)) == _outputs(model_dir, src, beam)


def test_built_shortlist_maps_pieces_to_their_translations(tiny_reverse, tmp_path):
    """On digit reversal each digit translates to itself: a 3-per-piece shortlist with no frequent
    set keeps every output as it was, while listing far fewer candidates than the vocabulary."""
    model_dir, src, _, _ = tiny_reverse
    v = Vocab(model_dir)
    train_src, train_tgt = reverse_task(2000, seed=1)
    vmap = build_vmap(train_src, train_tgt, v, ShortlistConfig(per_piece=3, frequent=0))
    for piece in v.tgt_sp.encode(["4"], out_type=str)[0]:
        if piece in vmap:
            assert vmap[piece][0] == piece
    stats = vmap_stats(vmap)
    assert stats["fixed"] == 0 and stats["mean_per_piece"] <= 4
    path = write_vmap(vmap, tmp_path / "built.vmap")
    assert _outputs(model_dir, src, 1, vmap=str(path)) == _outputs(model_dir, src, 1)


# 2-1 (shallow) and 6-1 (deep encoder) run by default; 4-1 and 6-2 add little and are among
# the slowest cases (marked slow)
@pytest.mark.parametrize("size", [pytest.param("student-2-1", marks=pytest.mark.slow), "student-6-1",
                                  pytest.param("student-4-1", marks=pytest.mark.slow),
                                  pytest.param("student-6-2", marks=pytest.mark.slow)])
# (6-1 in the default suite: the multi30k grid's deepest fast student; the tiny grid trains and exports 2-1 and 4-1)
def test_deep_shallow_sizes_train_export_and_match_hf(tmp_path, size):
    """The named layer layouts (at a toy width) train, and their CTranslate2 conversion scores and
    translates exactly as the HF model does."""
    import json
    import math

    from seqkd.data.vocab import VocabConfig, train_vocab
    from seqkd.models.marian import ModelConfig, build_model
    from seqkd.training.trainer import TrainConfig, TrainData, train

    src, tgt = reverse_task(3000, seed=1)
    vs, vt = reverse_task(100, seed=2)
    v = train_vocab(src, tgt, VocabConfig(size=40), tmp_path / "v")
    cfg = ModelConfig(size, {"d_model": 64, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "dropout": 0.0})
    model = build_model(cfg, v.size, v.pad_id, v.eos_id, seed=1)
    assert (model.config.encoder_layers, model.config.decoder_layers) == {
        "student-2-1": (2, 1), "student-6-1": (6, 1), "student-4-1": (4, 1), "student-6-2": (6, 2)}[size]
    tc = TrainConfig(max_tokens=512, lr=1e-3, warmup_steps=50, max_epochs=10, max_steps=100, val_bleu=False,
                     log_every=20, ckpt_every=10_000)
    train(tmp_path / "m", tc, model, v, TrainData(src, tgt, vs, vt), progress=False)
    nll = [r["nll"] for r in map(json.loads, (tmp_path / "m" / "metrics.jsonl").read_text().splitlines())
           if r["type"] == "train"]
    # learnt: from about a uniform guess to well below it (at this toy width the 6-layer post-norm
    # encoders need far more steps than 2+2 models to learn the reversal itself)
    assert nll[0] > 0.9 * math.log(v.size - 1) and nll[-1] < nll[0] - 0.5
    test_src, test_tgt = reverse_task(100, seed=3)
    ct2 = Translator(tmp_path / "m", DecodeConfig(engine="ct2", beam=1, threads=2))
    hf = Translator(tmp_path / "m", DecodeConfig(engine="hf", beam=1, threads=2))
    assert [h[0].text for h in ct2.translate(test_src, beam=1)] == [h[0].text for h in hf.translate(test_src, beam=1)]
    for (a, n), (b, m) in zip(ct2.score(test_src, test_tgt), hf.score(test_src, test_tgt)):
        assert n == m and a == pytest.approx(b, rel=1e-3, abs=1e-3)


def test_bench_reports_median_spread_and_latency(tiny_reverse, tmp_path):
    from seqkd.inference.bench import bench, frontier_plot, percentile, table

    model_dir, src, tgt, _ = tiny_reverse
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    v = Vocab(model_dir)
    vmap = write_vmap({"": sorted(set(v.token_to_id) - SPECIAL)}, tmp_path / "all.vmap")
    cfg = DecodeConfig(inter_threads=2, engine_batching=True, return_scores=False, vmap=str(vmap))
    rows = bench([str(model_dir)], src[:60], ["hf", "ct2", "ct2-int8"], beam=3, threads=2, cfg=cfg, repeats=3,
                 latency_sents=10, refs=tgt[:60], vmap_both=True, layouts=[1, 2])
    assert [(r["engine"], r["vmap"], r["inter_threads"], r["search"]) for r in rows] == [
        ("hf", False, 1, "greedy"), ("hf", False, 1, "beam3"),  # hf: no shortlist (a CTranslate2 feature), no layouts
        *((e, v, n, s) for e in ("ct2", "ct2-int8") for v in (False, True) for n in (1, 2)
          for s in ("greedy", "beam3"))]
    for r in rows:
        assert r["repeats"] == 3
        assert r["sent_per_s_min"] <= r["sent_per_s"] <= r["sent_per_s_max"]
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["latency_sentences"] == 10
        assert r["bleu"] > 50 and "nrefs:1" in r["bleu_signature"]
    by = {(r["engine"], r["vmap"], r["inter_threads"], r["search"]): r["bleu"] for r in rows}
    for e in ("ct2", "ct2-int8"):  # neither a shortlist of every token nor the thread layout changes the output
        for s in ("greedy", "beam3"):
            assert by[e, True, 1, s] == by[e, False, 1, s] == by[e, False, 2, s] == by[e, True, 2, s], (e, s)
    assert by["ct2", False, 1, "greedy"] == pytest.approx(by["hf", False, 1, "greedy"], abs=0.5)
    assert "+vmap" in table(rows) and "| 2x1 |" in table(rows) and "| 1x2 |" in table(rows)
    frontier_plot(rows, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_frontier_series_best_layout_per_panel_and_s1_best_against_best():
    """One series per model x engine (marker = model, colour = engine), one point per search: the most
    sentences/s and the least p50 over the thread layouts, which may come from different layouts."""
    from seqkd.inference.bench import frontier_series

    def row(model, engine, vmap, inter, search, sps, p50, bleu):
        return {"model": f"runs/x/{model}", "engine": engine, "vmap": vmap, "threads": 2, "inter_threads": inter,
                "search": search, "sent_per_s": sps, "p50_ms": p50, "bleu": bleu}

    rows = [row("teacher", "ct2", False, 1, "greedy", 100, 60, 38.0),
            row("teacher", "ct2", False, 2, "greedy", 120, 90, 38.0),
            row("teacher", "ct2", False, 1, "beam5", 40, 110, 39.5),
            row("teacher", "ct2", False, 2, "beam5", 45, 150, 39.5),
            row("student", "ct2", True, 2, "greedy", 900, 7, 36.3),
            row("student", "ct2-int8", False, 2, "greedy", 1600, 8, 36.2),
            {"model": "runs/x/student", "engine": "ct2", "vmap": False, "threads": 2, "inter_threads": 2,
             "search": "greedy", "sent_per_s": 5.0}]  # no BLEU (no references): not plotted
    s = {x.label: x for x in frontier_series(rows)}
    assert sorted(s) == ["student ct2 +vmap", "student ct2-int8", "teacher ct2"]
    greedy, beam = s["teacher ct2"].points
    assert (greedy.x, greedy.filled, greedy.bleu) == ({"sent_per_s": 120, "p50_ms": 60}, True, 38.0)
    assert (beam.x, beam.filled) == ({"sent_per_s": 45, "p50_ms": 110}, False)
    assert s["teacher ct2"].style[1] != s["student ct2-int8"].style[1]  # markers tell the models apart
    assert s["teacher ct2"].style[0] != s["student ct2-int8"].style[0]  # colours tell the engines apart
    assert s["student ct2 +vmap"].style[1] == s["student ct2-int8"].style[1]

    from seqkd.inference.bench import best_against_best  # S1: fastest student greedy over fastest teacher beam

    for r in rows:
        r.update(sent_per_s_min=r["sent_per_s"] * 0.9, sent_per_s_max=r["sent_per_s"] * 1.1)
    s1 = best_against_best(rows, "teacher", "student")
    assert s1["speedup"] == pytest.approx(1600 / 45) and s1["bleu_gap"] == pytest.approx(36.2 - 39.5)
    assert s1["speedup_range"] == pytest.approx([1440 / 49.5, 1760 / 40.5])
    assert s1["student"] == "student ct2-int8 2x1 greedy" and s1["teacher"] == "teacher ct2 2x1 beam5"
    assert best_against_best(rows, "teacher", "student", engine="ct2")["speedup"] == pytest.approx(900 / 45)


def test_pareto_front():
    from seqkd.inference.plots import pareto

    pts = [(1, 10), (2, 9), (3, 5), (1.5, 8), (3, 4)]  # (speed, BLEU): (1.5, 8) and (3, 4) are dominated
    assert pareto(pts) == [0, 1, 2]


def test_export_carries_the_shortlist(tiny_reverse, tmp_path):
    """`seqkd export --vmap`: the exported CTranslate2 folder carries the shortlist as vmap.txt, and decoding
    that folder alone (CTranslate2 only, no seqkd) with use_vmap=True restricts the output to it. This
    test runs after the bench test above on purpose: an earlier version of the conversion cache, keyed
    without the shortlist, reused a conversion made without it."""
    import ctranslate2

    from seqkd.inference.export import export_ct2

    model_dir, src, _, _ = tiny_reverse
    v = Vocab(model_dir)
    allowed = set(v.tgt_sp.encode(["1 2 3"], out_type=str)[0])
    vmap = write_vmap({"": sorted(allowed)}, tmp_path / "small.vmap")
    rep = export_ct2(model_dir, tmp_path / "exp", "int8", vmap=str(vmap))
    assert rep["vmap"] and (tmp_path / "exp" / "vmap.txt").exists()
    assert (tmp_path / "exp" / "vmap.txt").read_text(encoding="utf-8").split() == sorted(allowed)
    tr = ctranslate2.Translator(str(tmp_path / "exp"), compute_type="int8", intra_threads=2)
    tokens = [v.src_sp.encode([s], out_type=str)[0] + ["</s>"] for s in src]
    restricted = [r.hypotheses[0] for r in tr.translate_batch(tokens, beam_size=1, use_vmap=True)]
    free = [r.hypotheses[0] for r in tr.translate_batch(tokens, beam_size=1)]
    assert all(set(h) <= allowed | SPECIAL for h in restricted)
    assert sum(not set(h) <= allowed | SPECIAL for h in free) > len(src) // 2  # the restriction did bite
