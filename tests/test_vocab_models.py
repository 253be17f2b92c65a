"""Vocabularies and model folders: Marian layout, transformers-only loading, named sizes."""

from __future__ import annotations

import pytest
import torch
from conftest import reverse_task
from transformers import AutoTokenizer, MarianMTModel

from seqkd.data.vocab import Vocab, VocabConfig, train_vocab
from seqkd.models.marian import SIZES, ModelConfig, build_model, count_params, save_model
from seqkd.util.fsutil import SeqkdError


@pytest.mark.parametrize("joint,model_type", [(True, "unigram"), (False, "bpe")])
def test_vocab_layout_and_transformers_only_loading(tmp_path, joint, model_type):
    src, tgt = reverse_task(300, seed=1)
    tgt = [t.replace("7", "seven") for t in tgt]
    v = train_vocab(src, tgt, VocabConfig(size=40, joint=joint, model_type=model_type), tmp_path / "v")
    assert v.token_to_id["</s>"] == 0 and v.token_to_id["<unk>"] == 1 and v.pad_id == v.size - 1
    model = build_model(ModelConfig("tiny"), v.size, v.pad_id, v.eos_id)
    save_model(model, tmp_path / "m")
    v.save_to(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    loaded = MarianMTModel.from_pretrained(str(tmp_path / "m"))
    lines = ["1 2 3", "4 5 6 7"]
    assert tok(lines)["input_ids"] == v.encode_src(lines)
    assert tok(text_target=["7 1"])["input_ids"] == v.encode_tgt(["7 1"])
    assert v.decode_ids(v.encode_tgt(["seven 1 2"])[0]) == "seven 1 2"
    torch.testing.assert_close(loaded.model.shared.weight, model.model.shared.weight)
    from seqkd.models.marian import load_model

    ours = load_model(tmp_path / "m")  # position tables stay constants: not trained, not pruned, not counted
    assert not any(p.requires_grad for n, p in ours.named_parameters() if "embed_positions" in n)
    assert count_params(ours) == count_params(model)
    assert loaded.model.shared.weight[v.pad_id].abs().sum() == 0  # decoder start = zero embedding


def test_named_sizes_overrides_and_counts():
    sizes = ("tiny", "student", "teacher")
    counts = {s: count_params(build_model(ModelConfig(s), 8001, 8000, 0))["total"] for s in sizes}
    assert counts["tiny"] < counts["student"] < counts["teacher"]
    assert 7e6 < counts["student"] < 9e6 and counts["teacher"] > 4 * counts["student"]
    m = build_model(ModelConfig("student", {"decoder_layers": 1}), 8001, 8000, 0)
    assert m.config.decoder_layers == 1 and m.config.d_model == SIZES["student"]["d_model"]
    c = count_params(m)
    assert c["non_embedding"] == c["total"] - 8001 * 256 and c["nonzero"] <= c["total"]
    with pytest.raises(SeqkdError, match="unknown model size"):
        build_model(ModelConfig("huge"), 10, 9, 0)
    with pytest.raises(SeqkdError, match="unknown MarianConfig field"):
        build_model(ModelConfig("tiny", {"layerz": 2}), 10, 9, 0)


def test_vocab_missing_files(tmp_path):
    with pytest.raises(SeqkdError, match="tokenizer file not found"):
        Vocab(tmp_path)
