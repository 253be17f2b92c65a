"""SentencePiece vocabularies saved as Marian tokenizer files (source.spm, target.spm, vocab.json).

Id layout (what OPUS-MT and CTranslate2's Marian converter expect): `</s>` = 0, `<unk>` = 1, the
pieces, and `<pad>` last. `<pad>` is also the decoder start token (its embedding stays zero), and
CTranslate2 drops it on conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from seqkd.util.fsutil import SeqkdError, atomic_open, check_new_folder, finish_folder, write_json

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json")


@dataclass
class VocabConfig:
    """How to build the SentencePiece model(s) from the training split."""

    size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    joint: bool = True  # one model for both sides; else one per side with a joint vocab.json
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000  # SentencePiece input_sentence_size


class Vocab:
    """Tokenizer files in a folder: encode to ids with `</s>`, decode pieces back to text."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SeqkdError(f"{self.folder}: model or vocabulary folder does not exist")
        for name in TOKENIZER_FILES:
            if not (self.folder / name).exists():
                raise SeqkdError(f"{self.folder / name}: tokenizer file not found (need {', '.join(TOKENIZER_FILES)})")
        self.src_sp = spm.SentencePieceProcessor(model_file=str(self.folder / "source.spm"))
        self.tgt_sp = spm.SentencePieceProcessor(model_file=str(self.folder / "target.spm"))
        self.token_to_id: dict[str, int] = json.loads((self.folder / "vocab.json").read_text(encoding="utf-8"))
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}
        self.eos_id = self.token_to_id["</s>"]
        self.unk_id = self.token_to_id["<unk>"]
        self.pad_id = self.token_to_id["<pad>"]
        self.size = len(self.token_to_id)
        if self.pad_id != self.size - 1:
            raise SeqkdError(f"{self.folder / 'vocab.json'}: <pad> must be the last id ({self.size - 1}), "
                             f"found {self.pad_id}")

    # --- text -> pieces / ids ------------------------------------------------------------------
    def src_pieces(self, lines: list[str]) -> list[list[str]]:
        """Source pieces ending with `</s>` (the form CTranslate2 takes)."""
        return [p + ["</s>"] for p in self.src_sp.encode(list(lines), out_type=str)]

    def _ids(self, pieces: list[list[str]]) -> list[list[int]]:
        get, unk = self.token_to_id.get, self.unk_id
        return [[get(p, unk) for p in seq] for seq in pieces]

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        """Source ids, each ending with eos."""
        return self._ids(self.src_pieces(lines))

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        """Target ids, each ending with eos (the labels)."""
        return self._ids([p + ["</s>"] for p in self.tgt_sp.encode(list(lines), out_type=str)])

    # --- ids / pieces -> text ------------------------------------------------------------------
    def ids_to_pieces(self, ids: list[int]) -> list[str]:
        specials = (self.eos_id, self.pad_id)
        return [self.id_to_token.get(i, "<unk>") for i in ids if i not in specials]

    def decode_pieces(self, pieces: list[str]) -> str:
        return self.tgt_sp.decode_pieces([p for p in pieces if p not in ("</s>", "<pad>")])

    def decode_ids(self, ids: list[int]) -> str:
        return self.decode_pieces(self.ids_to_pieces(ids))

    # --- identity ------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 over vocab.json and both spm models: equal fingerprints mean interchangeable ids."""
        h = hashlib.sha256()
        for name in TOKENIZER_FILES:
            h.update((self.folder / name).read_bytes())
        return h.hexdigest()[:16]

    def save_to(self, model_dir: str | Path, src_lang: str = "src", tgt_lang: str = "tgt") -> None:
        """Write the Marian tokenizer files into `model_dir` so `AutoTokenizer` loads it."""
        save_tokenizer(self.folder, model_dir, src_lang, tgt_lang)


def save_tokenizer(vocab_dir: str | Path, model_dir: str | Path, src_lang: str = "src", tgt_lang: str = "tgt") -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        src = Path(vocab_dir) / name
        if src.resolve() != (model_dir / name).resolve():
            with atomic_open(model_dir / name, "wb", encoding=None) as f:
                f.write(src.read_bytes())
    write_json(
        model_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "MarianTokenizer",
            "source_lang": src_lang,
            "target_lang": tgt_lang,
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "model_max_length": 512,
            "separate_vocabs": False,
        },
    )


def train_vocab(src_lines: list[str], tgt_lines: list[str], cfg: VocabConfig, out_dir: str | Path,
                threads: int = 2) -> Vocab:
    """Train SentencePiece on the training split and write source.spm, target.spm, vocab.json.

    The folder is built in a temporary directory and renamed into place, so it is complete or absent.
    """
    out_dir = Path(out_dir)
    if (out_dir / "vocab.json").exists():
        return Vocab(out_dir)
    check_new_folder(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        sides = {"joint": src_lines + tgt_lines} if cfg.joint else {"source": src_lines, "target": tgt_lines}
        for name, lines in sides.items():
            _train_spm([ln for ln in lines if ln.strip()], cfg, tmp / name, threads)
        if cfg.joint:
            shutil.copy(tmp / "joint.model", tmp / "source.spm")
            shutil.copy(tmp / "joint.model", tmp / "target.spm")
        else:
            shutil.copy(tmp / "source.model", tmp / "source.spm")
            shutil.copy(tmp / "target.model", tmp / "target.spm")
        vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
        for name in ("source.spm", "target.spm"):
            sp = spm.SentencePieceProcessor(model_file=str(tmp / name))
            for i in range(sp.get_piece_size()):
                vocab.setdefault(sp.id_to_piece(i), len(vocab))
        vocab["<pad>"] = len(vocab)
        write_json(tmp / "vocab.json", vocab)
        write_json(tmp / "vocab_config.json", cfg.__dict__)
        for f in tmp.glob("*.model"):
            f.unlink()
        for f in tmp.glob("*.vocab"):
            f.unlink()
        finish_folder(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    v = Vocab(out_dir)
    log.info("vocabulary: %d ids (%s, %s) in %s", v.size, cfg.model_type, "joint" if cfg.joint else "separate", out_dir)
    return v


def _train_spm(lines: list[str], cfg: VocabConfig, prefix: Path, threads: int = 2) -> None:
    if not lines:
        raise SeqkdError("cannot train a vocabulary on an empty training split")
    # SentencePiece caps the vocabulary by what the text supports; small corpora need hard_vocab_limit off.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=cfg.size,
        model_type=cfg.model_type,
        character_coverage=cfg.character_coverage,
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,
        eos_id=0,
        unk_id=1,
        bos_id=-1,
        pad_id=-1,
        num_threads=threads,
        minloglevel=2,
    )
