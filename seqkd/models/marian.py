"""Named Marian Transformer sizes: build from scratch, save and load as Hugging Face folders."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from transformers import MarianConfig, MarianMTModel

from seqkd.util import faults
from seqkd.util.fsutil import SeqkdError, finish_folder, read_json, sha256_file

try:
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # pragma: no cover - older huggingface_hub does not type-check config fields

    class StrictDataclassError(Exception):
        """Stand-in: never raised."""


log = logging.getLogger(__name__)
_FIX = "point to a model folder saved by seqkd or transformers"

# What a bad model folder makes transformers / safetensors / CTranslate2's converter raise, found by
# corrupting files (tests/test_security.py): garbage or truncated safetensors -> SafetensorError;
# unreadable files or invalid JSON -> OSError / ValueError (JSONDecodeError); a config field of the
# wrong type -> StrictDataclassError; an unknown activation or a vocab.json without `<unk>` -> KeyError;
# weights whose shapes do not match config.json (or a negative size) -> RuntimeError; heads that do
# not divide d_model -> ValueError. Anything else (TypeError, AttributeError, ...) is a bug: it propagates.
MODEL_LOAD_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, KeyError, RuntimeError, SafetensorError, StrictDataclassError)
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")

# Named sizes. "student"/"teacher" follow the issue (3+3 d256 / 6+6 d512); the CPU presets pick from
# these by measurement (docs/RESULTS.md). Every field can be overridden (ModelConfig.overrides).
def _size(d: int, enc: int, dec: int, heads: int, ffn: int, dropout: float = 0.1) -> dict:
    return dict(d_model=d, encoder_layers=enc, decoder_layers=dec, encoder_attention_heads=heads,
                decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, dropout=dropout)


SIZES: dict[str, dict] = {
    "tiny": _size(64, 2, 2, 4, 256, dropout=0.0),
    "student-small": _size(128, 2, 2, 4, 512),
    "student": _size(256, 3, 3, 4, 1024),
    # deep encoder, shallow decoder (Kasai et al. 2021; Bergamot's students): decoding time sits in the decoder
    "student-2-1": _size(256, 2, 1, 4, 1024),
    "student-6-1": _size(256, 6, 1, 4, 1024),
    "student-4-1": _size(256, 4, 1, 4, 1024),
    "student-6-2": _size(256, 6, 2, 4, 1024),
    # the `multi30k` grid, sized for 2 CPU cores (named d<width>-<encoder layers>-<decoder layers>): a 7.58M
    # teacher and students 2.6x and 4.7x smaller (the paper's 221M / 84M / 49M: 2.6x and 4.5x); fast students
    # at the main student's width with one decoder layer
    "d256-3-3": _size(256, 3, 3, 4, 1024),
    "d168-2-2": _size(168, 2, 2, 4, 672),
    "d112-2-2": _size(112, 2, 2, 4, 448),
    "d168-2-1": _size(168, 2, 1, 4, 672),
    "d168-4-1": _size(168, 4, 1, 4, 672),
    "d168-6-1": _size(168, 6, 1, 4, 672),
    "base": _size(384, 6, 6, 6, 1536),
    "medium": _size(512, 4, 4, 8, 2048),
    "teacher": _size(512, 6, 6, 8, 2048),
}


@dataclass
class ModelConfig:
    """A named size plus any MarianConfig field to override (e.g. {"decoder_layers": 1})."""

    size: str = "student"
    overrides: dict = field(default_factory=dict)


def check_size(size: str) -> None:
    """SeqkdError unless `size` is a named size (checked before any data is read)."""
    if size not in SIZES:
        raise SeqkdError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")


def marian_config(cfg: ModelConfig, vocab_size: int, pad_id: int, eos_id: int) -> MarianConfig:
    check_size(cfg.size)
    fields = dict(SIZES[cfg.size])
    fields.update(
        vocab_size=vocab_size, decoder_vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id,
        decoder_start_token_id=pad_id, forced_eos_token_id=eos_id, max_position_embeddings=512,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True, scale_embedding=True,
        activation_function="swish", attention_dropout=0.0, activation_dropout=0.0,
        num_beams=1, max_length=256, bad_words_ids=[[pad_id]],
    )
    unknown = set(cfg.overrides) - set(MarianConfig().to_dict()) - {"attn_implementation"}
    if unknown:
        raise SeqkdError(f"unknown MarianConfig field(s) in model overrides: {', '.join(sorted(unknown))}")
    # eager attention: 2x faster than SDPA's CPU flash kernel under bf16 autocast here (benchmarks/train_step.py)
    fields["attn_implementation"] = "eager"
    fields.update(cfg.overrides)
    return MarianConfig(**fields)


def build_model(cfg: ModelConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int = 1) -> MarianMTModel:
    """A freshly initialised MarianMTModel (the `<pad>` embedding row is zero: decoder start)."""
    torch.manual_seed(seed)
    model = MarianMTModel(marian_config(cfg, vocab_size, pad_id, eos_id))
    with torch.no_grad():
        model.get_input_embeddings().weight[pad_id].zero_()
    return model


def read_model_config(model_dir: Path) -> dict:
    """config.json of a model folder; SeqkdError unless it is the JSON object of a Marian model (and
    generation_config.json, when present, a JSON object). transformers would otherwise fail with a
    TypeError / AttributeError, or load another architecture's folder with random weights."""
    cfg = read_json(model_dir / "config.json", fix=_FIX)
    if (model_dir / "generation_config.json").exists():
        read_json(model_dir / "generation_config.json", fix=_FIX)
    if cfg.get("model_type") != "marian":
        raise SeqkdError(f"{model_dir / 'config.json'}: model_type {cfg.get('model_type')!r} is not supported "
                         "(only Marian models, model_type 'marian')")
    return cfg


def check_model_folder(model_dir: Path) -> None:
    """SeqkdError unless `model_dir` holds a Marian config.json and model.safetensors. Pickled
    weights (pytorch_model.bin) are refused by name and never opened."""
    if not model_dir.is_dir():
        raise SeqkdError(f"{model_dir}: model folder does not exist")
    if not (model_dir / "config.json").exists():
        raise SeqkdError(f"{model_dir}: not a model folder (config.json not found)")
    if not (model_dir / "model.safetensors").is_file():
        pickled = [name for name in PICKLED_WEIGHTS if (model_dir / name).exists()]
        if pickled:
            raise SeqkdError(f"{model_dir}: holds {pickled[0]} but no model.safetensors; pickled weights are "
                             "never loaded (convert them to safetensors)")
        raise SeqkdError(f"{model_dir / 'model.safetensors'}: weights not found (only safetensors are loaded)")
    read_model_config(model_dir)
    check_saved_whole(model_dir)


# `save_model` writes this last: the sha256 of every file of the save. A kill between the renames of a save
# leaves files of two saves under their final names; the files then disagree with this record.
SAVED = "saved.json"


def check_saved_whole(model_dir: Path) -> None:
    """SeqkdError if the files of `model_dir` are not those of one complete `save_model` (a save interrupted
    between its renames). A folder without the record (Hugging Face's, an older seqkd's) is not checked."""
    record = model_dir / SAVED
    if not record.exists():
        return
    files = read_json(record)
    for name, sha in files.items():
        if not (model_dir / name).is_file() or sha256_file(model_dir / name) != sha:
            raise SeqkdError(f"{model_dir / name}: not the file {SAVED} records (a save of this model was "
                             "interrupted); rerun the command that made it")


def load_model(model_dir: str | Path) -> MarianMTModel:
    """Load a Hugging Face Marian folder (safetensors only; never unpickles).

    A corrupt or incomplete folder is a SeqkdError (MODEL_LOAD_ERRORS); any other exception is a bug
    and propagates."""
    model_dir = Path(model_dir)
    check_model_folder(model_dir)
    weights = model_dir / "model.safetensors"
    try:
        model, info = MarianMTModel.from_pretrained(str(model_dir), use_safetensors=True, attn_implementation="eager",
                                                    output_loading_info=True)
    except MODEL_LOAD_ERRORS as e:
        raise SeqkdError(f"{weights}: cannot load model ({type(e).__name__}: {e})") from e
    missing = sorted(info["missing_keys"])
    if missing:  # transformers would start these from random values
        raise SeqkdError(f"{weights}: {len(missing)} weights missing (e.g. {missing[0]}); "
                         "not a complete model for its config.json")
    _freeze_positions(model)
    return model.eval()


def _freeze_positions(model: MarianMTModel) -> None:
    """The sinusoidal position tables are constants: from_pretrained marks them trainable, which would
    let fine-tuning move them, pruning zero them and parameter counts include them."""
    for name, p in model.named_parameters():
        if "embed_positions" in name:
            p.requires_grad_(False)


def save_model(model: MarianMTModel, model_dir: str | Path, extra_files: dict[str, str] | None = None) -> None:
    """Write config.json + model.safetensors (+ extra text files) atomically into `model_dir`.

    The files are written into a temporary folder first, then each is renamed into place, `saved.json`
    (their sha256) last: a kill between two renames leaves a folder that `check_model_folder` refuses with
    one line. A folder holding tokenizer files keeps them.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save.", dir=model_dir))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / SAVED).write_text(json.dumps({f.name: sha256_file(f) for f in sorted(tmp.iterdir())}, indent=1))
        finish_folder(tmp)
        for f in sorted(tmp.iterdir(), key=lambda f: (f.name == SAVED, f.name)):
            f.replace(model_dir / f.name)
            faults.point("model_save")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def training_logits(model: MarianMTModel, batch: dict[str, torch.Tensor], pad_id: int | None = None) -> torch.Tensor:
    """Teacher-forced output logits: the one forward pass of training, validation, scoring and teachers.

    batch: input_ids / attention_mask (B, S), decoder_input_ids (B, T). Returns (B, T, V - 1) when
    pad_id == V - 1 (seqkd's and Marian's layout: no `<pad>` column), else (B, T, V) (all of them, as
    `model(...).logits`, when pad_id is None). Projecting with the weight rows
    [:-1] equals slicing the full logits, but the backward pass no longer builds a zero-filled
    (B, T, V) gradient to scatter the slice into (measured: benchmarks/train_step.py, mode suffix
    "-full" for the old path).
    """
    out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      decoder_input_ids=batch["decoder_input_ids"])
    w, bias = model.lm_head.weight, model.final_logits_bias
    if pad_id == w.size(0) - 1:
        w, bias = w[:-1], bias[..., :-1]
    return torch.nn.functional.linear(out.last_hidden_state, w) + bias


def is_embedding(name: str) -> bool:
    """True for the token embedding / output projection parameters (tied in seqkd models)."""
    return "embed" in name or name.endswith("shared.weight") or "lm_head" in name


def count_params(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts: total, non-embedding (without token/position embeddings), non-zero.

    Tied weights are counted once; fixed sinusoidal position tables are not parameters.
    """
    seen: set[int] = set()
    total = nonzero = embedding = 0
    for name, p in model.named_parameters(remove_duplicate=True):
        if id(p) in seen or not p.requires_grad:  # sinusoidal position tables are frozen constants
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
        if is_embedding(name):
            embedding += p.numel()
    return {"total": total, "non_embedding": total - embedding, "nonzero": nonzero}


def model_summary(model_dir: str | Path) -> dict:
    cfg = read_json(Path(model_dir) / "config.json", fix=_FIX)
    return {k: cfg.get(k) for k in ("d_model", "encoder_layers", "decoder_layers", "vocab_size")}


def log_probs(logits: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """log_softmax over the vocabulary in float32, without `<pad>` (never a target, never predicted).

    logits (B, T, V - 1) from `training_logits` (pad column never computed) are used as they
    are; logits (B, T, V) -> (B, T, V - 1) when `<pad>` is the last id (seqkd's and Marian's layout:
    dropping the column is a free view, so the pad row of the tied embedding gets no gradient and
    stays zero); other layouts get the pad logit set to -inf instead.
    """
    if pad_id is not None and pad_id == logits.size(-1):  # already without the pad column (training_logits)
        return F.log_softmax(logits.float(), dim=-1)
    if pad_id is not None and pad_id == logits.size(-1) - 1:
        return F.log_softmax(logits[..., :-1].float(), dim=-1)
    logits = logits.float()
    if pad_id is not None:
        logits = logits.clone()
        logits[..., pad_id] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def weights_hash(model_dir: str | Path) -> str:
    """The identity of a model's weights: sha256 (16 hex) of its model.safetensors (a missing or incomplete
    model folder is a one-line SeqkdError naming it)."""
    check_model_folder(Path(model_dir))
    return sha256_file(Path(model_dir) / "model.safetensors")[:16]
