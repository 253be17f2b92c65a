"""Security basics (issue 12 part 4), part 2: weights only from safetensors. A folder with a
booby-trapped `pytorch_model.bin` is refused and never unpickled (nor opened by `torch.load` at all);
corrupt model folders are one SeqkdError; the narrowed `except` blocks let bugs through.

Parts 1, 3 and 4 (no pickle in the code, https + sha256 downloads, exit codes) are tests/test_security.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import reverse_task

from seqkd.compress import prune
from seqkd.inference import decode
from seqkd.models import marian
from seqkd.util.fsutil import SeqkdError

ROOT = Path(__file__).resolve().parents[1]

# --- 2 weights: safetensors only ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained `tiny` model folder with its tokenizer (built in about a second)."""
    from seqkd.data.vocab import VocabConfig, train_vocab

    root = tmp_path_factory.mktemp("security")
    src, tgt = reverse_task(200, seed=1)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    model = marian.build_model(marian.ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id)
    marian.save_model(model, root / "model")
    vocab.save_to(root / "model")
    return root / "model"


def copy_model(model_dir: Path, dest: Path) -> Path:
    """A private copy of the model folder (without cached CTranslate2 conversions)."""
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns("ct2*", ".ct2*"))
    return dest


class Bait:
    """Unpickling this creates the marker file (via `open`, nothing else): proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(folder: Path, marker: Path) -> Path:
    """A real torch pickle, `pytorch_model.bin`, that creates `marker` when it is unpickled."""
    path = folder / "pytorch_model.bin"
    torch.save({"model.shared.weight": torch.zeros(2), "bait": Bait(marker)}, path)
    return path


@pytest.fixture
def torch_loads(monkeypatch) -> list:
    """Every file passed to torch.load from now on (the call still goes through)."""
    calls: list = []
    real = torch.load

    def spy(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_the_bait_works(tmp_path):
    """Control: unpickling the planted file does create the marker (so its absence below means something)."""
    marker = tmp_path / "UNPICKLED"
    torch.load(plant_pickle(tmp_path, marker), weights_only=False)
    assert marker.exists()


def test_spy_sees_transformers_pickle_fallback(tmp_path, model_dir, torch_loads):
    """Control: transformers alone, without use_safetensors, does open pytorch_model.bin with torch.load."""
    from transformers import MarianMTModel

    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(model_dir / "config.json", d)
    bin_path = plant_pickle(d, tmp_path / "UNPICKLED")
    with pytest.raises(Exception, match="Weights only load failed"):  # torch's weights_only=True refuses it
        MarianMTModel.from_pretrained(str(d))
    assert str(bin_path) in torch_loads


def test_pickle_only_folder_refused_never_unpickled(tmp_path, model_dir, torch_loads):
    """A folder with config.json + pytorch_model.bin only: one-line SeqkdError naming the folder, from
    load_model (hf engine) and ct2_dir (ct2 engine); the pickle is never opened by torch.load."""
    d = copy_model(model_dir, tmp_path / "model")
    (d / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    plant_pickle(d, marker)
    messages = []
    for load in (marian.load_model, decode.ct2_dir):
        with pytest.raises(SeqkdError) as e:
            load(d)
        messages.append(str(e.value))
        assert str(d) in messages[-1] and "\n" not in messages[-1], messages[-1]
    assert messages[0] == f"{d}: holds pytorch_model.bin but no model.safetensors; pickled weights are never " \
                          "loaded (convert them to safetensors)"
    assert messages[1] == f"{d / 'model.safetensors'}: weights not found"
    with pytest.raises(OSError, match="no file named model.safetensors"):  # the converter ct2_dir uses, unguarded
        decode._safetensors_converter(d).convert(str(tmp_path / "ct2"))
    assert torch_loads == [] and not marker.exists()


def test_safetensors_chosen_over_a_planted_pickle(tmp_path, model_dir, torch_loads):
    """model.safetensors beside a booby-trapped pytorch_model.bin: both engines load the safetensors,
    the pickle is never touched."""
    d = copy_model(model_dir, tmp_path / "model")
    marker = tmp_path / "UNPICKLED"
    plant_pickle(d, marker)
    model = marian.load_model(d)
    assert model.config.d_model == marian.SIZES["tiny"]["d_model"]
    assert (decode.ct2_dir(d) / "model.bin").exists()
    assert torch_loads == [] and not marker.exists()


def _write_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _keep_three_tensors(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    save_file(dict(list(tensors.items())[:3]), str(d / "model.safetensors"), metadata={"format": "pt"})


def _truncate(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


# name -> (how to break a model folder, words the message must contain, also refused by ct2_dir)
CORRUPT = {
    "garbage weights": (lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"),
                        "SafetensorError", True),
    "truncated weights": (_truncate, "SafetensorError", True),
    "config not json": (lambda d: (d / "config.json").write_text("{not json"), "config.json", True),
    "config a json list": (lambda d: (d / "config.json").write_text("[1, 2]"), "JSON object", True),
    "bert config": (lambda d: _write_config(d, model_type="bert"), "model_type 'bert'", True),
    "shape mismatch": (lambda d: _write_config(d, d_model=128), "RuntimeError", True),
    "wrong-typed field": (lambda d: _write_config(d, d_model="abc"), "d_model", True),
    "unknown activation": (lambda d: _write_config(d, activation_function="nosuch"), "KeyError", True),
    "missing weights": (_keep_three_tensors, "weights missing", True),
}


@pytest.mark.parametrize("case", CORRUPT, ids=CORRUPT.keys())
def test_corrupt_model_folder_is_a_seqkd_error(tmp_path, model_dir, case):
    """Each corruption is one SeqkdError line naming the folder (the hf and, where it checks, ct2 path)."""
    breaks, words, ct2_too = CORRUPT[case]
    d = copy_model(model_dir, tmp_path / "model")
    (d / "saved.json").unlink(missing_ok=True)  # a folder another tool saved: the loaders' own checks (with the
    breaks(d)                                    # record, any changed file is refused first: test_reliability2.py)
    for load in (marian.load_model, decode.ct2_dir) if ct2_too else (marian.load_model,):
        with pytest.raises(SeqkdError) as e:
            load(d)
        assert str(d) in str(e.value) and words in str(e.value), e.value


# --- the narrowed except blocks: a bug propagates ---------------------------------------------------------
BUGS = (TypeError, AttributeError, NameError)


def _raiser(exc: type[Exception]):
    def boom(*args, **kwargs):
        raise exc("injected bug")

    return boom


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: e.__name__)
def test_load_model_lets_a_bug_through(tmp_path, model_dir, monkeypatch, exc):
    monkeypatch.setattr(marian.MarianMTModel, "from_pretrained", _raiser(exc))
    with pytest.raises(exc, match="injected bug"):
        marian.load_model(model_dir)


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: e.__name__)
def test_ct2_conversion_lets_a_bug_through(tmp_path, model_dir, monkeypatch, exc):
    from ctranslate2.converters import TransformersConverter

    d = copy_model(model_dir, tmp_path / "model")
    monkeypatch.setattr(TransformersConverter, "convert", _raiser(exc))
    with pytest.raises(exc, match="injected bug"):
        decode.ct2_dir(d)
    assert not [p for p in d.glob(".ct2*") if p.is_dir()] and not (d / "ct2").exists()  # temp folder removed


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: e.__name__)
def test_load_masks_lets_a_bug_through(tmp_path, monkeypatch, exc):
    path = tmp_path / "masks.safetensors"
    prune.save_masks({"w": torch.ones(2, 2, dtype=torch.bool)}, path)
    assert prune.load_masks(path)["w"].all()
    monkeypatch.setattr(prune, "load_file", _raiser(exc))
    with pytest.raises(exc, match="injected bug"):
        prune.load_masks(path)


@pytest.mark.parametrize("content", [b"", b"garbage", None], ids=["empty", "garbage", "missing"])
def test_bad_masks_file_is_a_seqkd_error(tmp_path, content):
    path = tmp_path / "masks.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SeqkdError, match="cannot read pruning masks"):
        prune.load_masks(path)


