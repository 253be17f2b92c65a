"""Layer surgery: drop whole encoder/decoder layers from a trained model, or repeat them (then retrain it).

Unlike magnitude pruning, a model with fewer layers is smaller and faster on dense kernels. The kept
layers keep their trained weights (renumbered), so retraining starts from a good point; the
embeddings, final projection and tokenizer are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqkd.data.vocab import Vocab
from seqkd.models.marian import count_params, load_model, save_model
from seqkd.util.fsutil import SeqkdError, write_json


@dataclass
class ShrinkConfig:
    keep_encoder_layers: list[int] = field(default_factory=list)  # 0-based layer indices to keep; [] = all
    keep_decoder_layers: list[int] = field(default_factory=list)


def _check(keep: list[int], n: int, side: str) -> list[int]:
    keep = list(keep) if keep else list(range(n))
    if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= n or keep != sorted(keep):
        raise SeqkdError(f"{side} layers to keep {keep}: need distinct increasing indices in 0..{n - 1}")
    return keep


def _relayer(model_dir: str | Path, out: str | Path, pick, name: str, keys: tuple[str, str]) -> dict:
    """Write `model_dir` with encoder / decoder layers `pick(config) -> (enc, dec)` (indices of its layers, each
    copied with its trained weights) into `out`, with the tokenizer and `name`.json; returns that report. Only the
    saved folder is used: loading it numbers the layers (HF's `layer_idx`) afresh."""
    import copy

    from torch import nn

    model = load_model(model_dir)
    enc, dec = pick(model.config)
    new = copy.deepcopy(model)
    new.model.encoder.layers = nn.ModuleList([copy.deepcopy(model.model.encoder.layers[i]) for i in enc])
    new.model.decoder.layers = nn.ModuleList([copy.deepcopy(model.model.decoder.layers[i]) for i in dec])
    new.config.encoder_layers, new.config.decoder_layers = len(enc), len(dec)
    new.config.num_hidden_layers = len(enc)
    save_model(new, out)
    Vocab(model_dir).save_to(out)
    report = {"parent": str(model_dir), keys[0]: enc, keys[1]: dec,
              "parent_params": count_params(model), "params": count_params(new)}
    write_json(Path(out) / f"{name}.json", report)
    return report


def shrink(model_dir: str | Path, out: str | Path, cfg: ShrinkConfig) -> dict:
    """Write a copy of `model_dir` with only the chosen layers into `out`; returns parameter counts."""
    return _relayer(model_dir, out, lambda c: (_check(cfg.keep_encoder_layers, c.encoder_layers, "encoder"),
                                               _check(cfg.keep_decoder_layers, c.decoder_layers, "decoder")),
                    "shrink_result", ("keep_encoder_layers", "keep_decoder_layers"))


def stack(model_dir: str | Path, out: str | Path, encoder_layers: int, decoder_layers: int) -> dict:
    """Write a deeper copy of `model_dir` into `out`: its layers repeated in order, cyclically.

    Shallow-to-deep training (Gong et al. 2019; Li et al. 2020): a 2+1 model grown to 6+1 has
    encoder layers [0, 1, 0, 1, 0, 1] and decoder layer [0], each a trained copy; the embeddings,
    output projection and tokenizer are unchanged. Deep post-norm encoders under a one-layer decoder
    that do not train from scratch (docs/RESULTS.md, section 6) start here from a working model.
    """

    def pick(c):
        if encoder_layers < c.encoder_layers or decoder_layers < c.decoder_layers:
            raise SeqkdError(f"{model_dir}: cannot stack {c.encoder_layers}+{c.decoder_layers} layers into "
                             f"{encoder_layers}+{decoder_layers} (fewer layers: use shrink)")
        return ([i % c.encoder_layers for i in range(encoder_layers)],
                [i % c.decoder_layers for i in range(decoder_layers)])

    return _relayer(model_dir, out, pick, "stack_result", ("encoder_layers_from", "decoder_layers_from"))
