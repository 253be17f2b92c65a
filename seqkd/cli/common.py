"""Argument groups and config helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys

from seqkd.data.corpus import read_lines, read_stream
from seqkd.data.load import DataConfig


# --- shared argument groups ---------------------------------------------------------------------
def data_args(p: argparse.ArgumentParser, split: str | None = None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--corpus", default=None, help="named corpus (default: multi30k)")
    g.add_argument("--src", default=None, help="source language (default de)")
    g.add_argument("--tgt", default=None, help="target language (default en)")
    g.add_argument("--data-dir", default=None, help="local copy of the corpus files (else $SEQKD_DATA, else download)")
    if split:
        g.add_argument("--split", default=split, help=f"corpus split (default {split})")


def config_args(p: argparse.ArgumentParser, config_help: str, set_help: str) -> None:
    """--config FILE and --set KEY=VALUE (repeatable), on the commands that read a run config."""
    p.add_argument("--config", help=config_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def run_args(p: argparse.ArgumentParser, threads: bool = True) -> None:
    """--quiet and --threads, on every command that computes (decoding commands get --threads from
    decode_args)."""
    g = p.add_argument_group("run")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    if threads:
        g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")


def decode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--engine", choices=["ct2", "hf"], default="ct2", help="CTranslate2 (default) or HF generate")
    g.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    g.add_argument("--int8", action="store_true", help="CTranslate2 int8 weights")
    g.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
    g.add_argument("--inter-threads", type=int, default=1, help="CTranslate2: batches decoded in parallel")
    g.add_argument("--engine-batching", action="store_true",
                   help="CTranslate2 sorts and splits the input itself (with --max-batch-size / --batch-type)")
    g.add_argument("--max-batch-size", type=int, default=0, help="with --engine-batching (0 = --max-tokens)")
    g.add_argument("--batch-type", choices=["tokens", "examples"], default="tokens", help="unit of --max-batch-size")
    g.add_argument("--no-scores", action="store_true", help="greedy search without scores (skips the softmax)")
    g.add_argument("--vmap", help="vocabulary map file (`seqkd shortlist`): restrict the output layer to it")


def decode_cfg(a):
    from seqkd.inference.decode import DecodeConfig  # here, not above: it loads torch (seqkd.cli.main)

    return DecodeConfig(engine=a.engine, beam=a.beam, compute_type="int8" if a.int8 else "float32",
                        max_tokens=a.max_tokens, threads=a.threads, inter_threads=a.inter_threads,
                        engine_batching=a.engine_batching, max_batch_size=a.max_batch_size,
                        batch_type=a.batch_type, return_scores=not a.no_scores, vmap=a.vmap)


def data_cfg(a, base=None):
    dc = base or DataConfig()
    for k in ("corpus", "src", "tgt", "data_dir"):
        if getattr(a, k, None) is not None:
            setattr(dc, k, getattr(a, k))
    return dc


def read_input(path: str | None) -> list[str]:
    """The lines of a file or of stdin ("-"): they end at \\n (or \\r\\n) only; NUL bytes and invalid UTF-8 are
    one-line errors naming the input and line."""
    if path in (None, "-"):
        return read_stream(sys.stdin.buffer, "<stdin>")
    return read_lines(path)


# --- commands -----------------------------------------------------------------------------------


# the read-only analyses `seqkd reproduce --status` adds to its table: (flag, argparse keywords)
STATUS_OPTIONS = (
    ("--curves", dict(metavar="A,B", help="the per-epoch --metric of these stages (or metrics .jsonl files, "
                      "relative to the run folder) as a markdown table")),
    ("--metric", dict(default="val_bleu", choices=["val_bleu", "val_ppl", "epoch_s"],
                      help="what --curves tabulates (epoch_s: seconds between validations)")),
    ("--compare", dict(metavar="A,B", help="B's validation BLEU minus A's, per epoch and best")),
    ("--ckpt", dict(metavar="STAGE", help="the share of STAGE's training time (or a metrics .jsonl file's) spent "
                    "writing checkpoints")),
    ("--stalls", dict(action="store_true", help="per training curve, the longest run of validations without a new "
                      "best that a later best ended, and what --patience would have kept")),
    ("--patience", dict(type=int, default=3, help="with --stalls: the patience to replay on each curve")),
    ("--seconds-json", dict(metavar="FILE", help="write {stage: seconds} of the finished stages to FILE")),
)


def status_args(p) -> None:
    """`reproduce --status`'s analysis options, as one argument group (each is an error without --status)."""
    g = p.add_argument_group("with --status")
    for flag, kw in STATUS_OPTIONS:
        g.add_argument(flag, **kw)

