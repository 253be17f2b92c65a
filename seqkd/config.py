"""Typed run configuration: nested dataclasses <-> YAML, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seqkd.data.load import DataConfig
from seqkd.data.vocab import VocabConfig
from seqkd.inference.decode import DecodeConfig
from seqkd.models.marian import ModelConfig
from seqkd.training.trainer import TrainConfig
from seqkd.util.fsutil import SeqkdError


@dataclass
class KDConfig:
    """Word-KD teacher: online (`teacher`, a model folder) or offline (`topk_cache`, from `seqkd distill --mode topk`).

    The loss weight and temperature live in train.loss (word_kd_alpha, temperature).
    """

    teacher: str | None = None
    topk_cache: str | None = None


@dataclass
class RunConfig:
    """Everything `seqkd train` needs; saved as seqkd.yaml beside the model it produced."""

    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    kd: KDConfig = field(default_factory=KDConfig)


class _Loader(yaml.SafeLoader):
    """YAML with the 1.2 booleans: only true / false. PyYAML's 1.1 reading would turn a language code `no`
    (Norwegian) into false and `bf16: on` into true; here they stay the strings they are."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def from_dict(cls, d: dict | None, where: str = ""):
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys raise."""
    d = d or {}
    if not isinstance(d, dict):
        raise SeqkdError(f"config {where or 'root'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise SeqkdError(f"config {where or 'root'}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if typing.get_origin(t) in (typing.Union, types.UnionType) and v is not None:  # X | None
            t = next(a for a in typing.get_args(t) if a is not type(None))
        kwargs[k] = _field_value(t, v, f"{where}.{k}".strip("."))
    return cls(**kwargs)


def _field_value(t, v, where: str):
    """`v` checked against (and converted to) the field type `t`; SeqkdError naming `where` if it does not fit."""
    if v is None or t is typing.Any:
        return v
    if dataclasses.is_dataclass(t):
        return from_dict(t, v, where)
    origin = typing.get_origin(t) or t
    if origin in (tuple, list, dict):
        want = dict if origin is dict else (list, tuple)
        if not isinstance(v, want):
            raise SeqkdError(f"config {where}: expected a {'mapping' if origin is dict else 'list'}, got {v!r}")
        return tuple(v) if origin is tuple else v
    if t is str and isinstance(v, bool):  # `bf16: true` means on
        return "on" if v else "off"
    if t is bool and isinstance(v, str) and v.lower() in _BOOL_WORDS:  # yes / no / on / off
        return _BOOL_WORDS[v.lower()]
    if t is bool and not isinstance(v, bool):
        raise SeqkdError(f"config {where}: expected true/false, got {v!r}")
    if t in (float, int):
        return _number(t, v, where)
    if t is str and not isinstance(v, str):
        raise SeqkdError(f"config {where}: expected a string, got {v!r}")
    return v


def _number(t: type, v, where: str):
    """An int or float field's value: numbers and numeric strings; an int field refuses fractions (1.7)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise SeqkdError(f"config {where}: expected {'an integer' if t is int else 'a number'}, got {v!r}")
    try:
        x = float(v) if t is float else _integer(v)
    except ValueError:
        raise SeqkdError(f"config {where}: expected {'an integer' if t is int else 'a number'}, got {v!r}") from None
    return x


def _integer(v) -> int:
    if isinstance(v, str):
        v = float(v) if any(c in v for c in ".eE") else int(v)
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(v)
    return int(v)


def to_dict(obj) -> dict:
    d = dataclasses.asdict(obj)

    def fix(x):
        if isinstance(x, tuple):
            return list(x)
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        return x

    return fix(d)


def dump(obj) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise SeqkdError(f"{p}: config file not found")
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise SeqkdError(f"{p}: invalid YAML ({e})") from e


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (value parsed as YAML) to a nested dict."""
    for ov in overrides:
        if "=" not in ov:
            raise SeqkdError(f"--set {ov!r}: expected section.key=value")
        key, value = ov.split("=", 1)
        cur = d
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = _parse_value(value)
    return d


def _parse_value(text: str):
    """YAML scalar, except that numbers YAML 1.1 reads as strings (`8e-4`) become floats."""
    v = yaml.load(text, Loader=_Loader)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def load_run_config(path: str | None, overrides: list[str] | None = None, cls=RunConfig):
    d = load_yaml(path) if path else {}
    cfg = from_dict(cls, apply_overrides(d, overrides or []))
    if getattr(cfg, "decode", None) not in (None, DecodeConfig()):  # kept in saved seqkd.yaml files, at defaults
        raise SeqkdError("config decode: the commands that read a config (vocab, train, distill, prune) do not "
                         "decode with it; give decoding settings as flags of translate, evaluate or bench "
                         "(and distill's own --beam / --engine ...)")
    return cfg
