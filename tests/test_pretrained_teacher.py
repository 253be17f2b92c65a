"""A local Hugging Face Marian folder (built here like an OPUS-MT download, with transformers and
sentencepiece only; nothing is downloaded) works as a teacher."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from conftest import reverse_task, write_lines
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

from seqkd.cli.main import main


@pytest.fixture(scope="module")
def opus_like(tmp_path_factory):
    d = tmp_path_factory.mktemp("opus") / "opus-mt-xx-yy"
    d.mkdir()
    src, tgt = reverse_task(500, seed=21)
    for name, lines in (("source", src), ("target", [t.replace("1", "one ") for t in tgt])):
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(d / name), vocab_size=30,
                                       hard_vocab_limit=False, minloglevel=2)
        (d / f"{name}.model").rename(d / f"{name}.spm")
    vocab = {"</s>": 0, "<unk>": 1}
    for name in ("source", "target"):
        sp = spm.SentencePieceProcessor(model_file=str(d / f"{name}.spm"))
        for i in range(sp.get_piece_size()):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    tok = MarianTokenizer(source_spm=str(d / "source.spm"), target_spm=str(d / "target.spm"),
                          vocab=str(d / "vocab.json"))
    tok.save_pretrained(str(d))
    V = len(vocab)
    cfg = MarianConfig(vocab_size=V, decoder_vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       pad_token_id=V - 1, eos_token_id=0, decoder_start_token_id=V - 1, max_position_embeddings=128)
    MarianMTModel(cfg).save_pretrained(str(d), safe_serialization=True)
    return d, src, tgt


def test_seq_kd_from_pretrained_marian_folder(tmp_path, opus_like, capsys):
    d, src, tgt = opus_like
    s, t = write_lines(tmp_path / "s.txt", src[:40]), write_lines(tmp_path / "t.txt", tgt[:40])
    code = main(["distill", "--teacher", str(d), "--set", f"data.train_src={s}", "--set", f"data.train_tgt={t}",
                 "--beam", "2", "--out", str(tmp_path / "kd")])
    assert code == 0, capsys.readouterr().err
    assert len((tmp_path / "kd" / "train.tgt").read_text().splitlines()) <= 40
    assert (tmp_path / "kd" / "train.src").read_text().splitlines()[0] == src[0]


def test_word_kd_needs_the_teachers_vocabulary(tmp_path, opus_like, capsys):
    from seqkd.data.vocab import Vocab
    from seqkd.training.kd import check_same_vocab

    d, src, tgt = opus_like
    s, t = write_lines(tmp_path / "s.txt", src[:100]), write_lines(tmp_path / "t.txt", tgt[:100])
    base = ["train", "--size", "tiny", "--teacher", str(d), "--word-kd", "0.5", "--set", f"data.train_src={s}",
            "--set", f"data.train_tgt={t}", "--set", f"data.val_src={s}", "--set", f"data.val_tgt={t}",
            "--set", "vocab.size=30"]
    assert main(base + ["--out", str(tmp_path / "own")]) == 2
    err = capsys.readouterr().err
    assert "differs from the student's" in err and "opus-mt-xx-yy" in err
    check_same_vocab(d, Vocab(d))  # a student built on the teacher's tokenizer is accepted
