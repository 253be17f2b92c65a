"""Command line: thin subcommands that parse arguments, call one function and print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from seqkd.cli.common import (
    config_args,
    data_args,
    data_cfg,
    decode_args,
    decode_cfg,
    read_input,
    run_args,
    status_args,
)
from seqkd.cli.train import cmd_distill, cmd_prune, cmd_train, cmd_vocab
from seqkd.data.corpus import read_parallel
from seqkd.data.load import DataConfig, load_pairs
from seqkd.util.fsutil import SeqkdError, is_no_space, no_space, write_json
from seqkd.util.logs import setup_logging

# Commands import what they run inside their function: those modules load torch, transformers and
# CTranslate2 (seconds), which `seqkd --help` and an argument error should not wait for. The light ones
# (corpus reading, data config, file helpers) are imported here.

log = logging.getLogger("seqkd")


def _ints(text: str | None, flag: str) -> list[int]:
    """A comma list of integers given to `flag` ([] when not given)."""
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",")]
    except ValueError as e:
        raise SeqkdError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,2") from e


def cmd_shrink(a) -> None:
    from seqkd.models.shrink import ShrinkConfig, shrink

    cfg = ShrinkConfig(_ints(a.keep_encoder_layers, "--keep-encoder-layers"),
                       _ints(a.keep_decoder_layers, "--keep-decoder-layers"))
    print(json.dumps(shrink(a.model, a.out, cfg), indent=2))


def cmd_stack(a) -> None:
    from seqkd.models.shrink import stack

    print(json.dumps(stack(a.model, a.out, a.encoder_layers, a.decoder_layers), indent=2))


def cmd_export(a) -> None:
    from seqkd.inference.export import export_ct2

    print(json.dumps(export_ct2(a.model, a.out, a.quantization, vmap=a.vmap), indent=2))


def print_plan(out: str, rows: list[tuple[str, str, float]]) -> None:
    """`reproduce --plan`'s table: one line per stage, then what a run would keep, resume and discard."""
    from seqkd.reproduce.runner import ARCHIVED, CHANGED, DONE, EXTENDS, PARTIAL

    print(f"{out}: what `seqkd reproduce` would do with these settings (nothing has run)")
    for name, status, seconds in rows:
        print(f"  {name:36s} {status:14s} {seconds / 60:8.1f} min so far" if seconds else f"  {name:36s} {status}")
    for status, what in ((DONE, "reused"), (ARCHIVED, "restored from the run archive"),
                         (PARTIAL, "resumed in its folder"),
                         (EXTENDS, "trained on from their last checkpoint under a larger patience / max_epochs"),
                         (CHANGED, "recomputed: their folders are discarded")):
        sel = [sec for _, st, sec in rows if st == status]
        if sel:
            print(f"{len(sel)} stage(s) {what} ({sum(sel) / 3600:.2f} h of stage time)")


STATUS_ONLY = ("curves", "compare", "ckpt", "stalls", "seconds_json")  # reproduce's flags that need --status


def print_status(a, out: str, seeds) -> None:
    """`reproduce --status`: where the run in `out` stands, with the analyses its flags ask for."""
    from seqkd.reproduce.status import StatusOptions, status

    opts = StatusOptions(curves=tuple(n for n in (a.curves or "").split(",") if n), metric=a.metric,
                         compare=tuple(n for n in (a.compare or "").split(",") if n), ckpt=a.ckpt or "",
                         stalls=a.stalls, patience=a.patience, seconds_json=a.seconds_json or "")
    print(status(out, seeds, opts), end="")


def cmd_reproduce(a) -> None:
    from seqkd.config import apply_overrides, from_dict, to_dict
    from seqkd.reproduce.grid import GridOptions
    from seqkd.reproduce.pipeline import ReproduceConfig, load_preset, reproduce

    if not a.status and (used := [f"--{k.replace('_', '-')}" for k in STATUS_ONLY if getattr(a, k)]):
        raise SeqkdError(f"{used[0]} goes with --status (it reads a run folder; nothing runs)")
    if a.status and a.plan:
        raise SeqkdError("--status and --plan: give one (--status reads the run folder, --plan compares the settings)")
    cfg = load_preset(a.preset)
    cfg = from_dict(ReproduceConfig, apply_overrides(to_dict(cfg), a.set))
    cfg.data = data_cfg(a, cfg.data)
    if a.threads:
        cfg.threads = a.threads
    out = a.out or f"runs/{cfg.preset}-{cfg.data.src}-{cfg.data.tgt}"
    if a.status:
        print_status(a, out, cfg.seeds)
        return
    jobs = a.jobs if a.jobs is not None else cfg.jobs
    if jobs < 1 or a.time_limit < 0:
        raise SeqkdError(f"--jobs must be >= 1 and --time-limit >= 0, got {jobs} and {a.time_limit}")
    opts = GridOptions(a.archive, a.time_limit, jobs)
    if a.plan:
        print_plan(out, reproduce(cfg, out, plan=True, opts=opts)["plan"])
        return
    res = reproduce(cfg, out, progress=not a.quiet, stop_after=a.stop_after or "", opts=opts)
    if "time_limit" in res:
        t = res["time_limit"]
        unknown = f" ({len(t['unknown'])} with no estimate)" if t["unknown"] else ""
        print(f"{out}: time limit: stopped at a stage boundary; {len(t['remaining'])} stages remain, about "
              f"{t['seconds'] / 3600:.1f} h{unknown}, next {t['remaining'][0]}; rerun to go on"
              + (f" (finished stages are in the archive {a.archive})" if a.archive else ""))
        return
    if not res:
        print(f"{out}: stopped after stage {a.stop_after}; rerun without --stop-after to continue")
        return
    print(f"{out}/report.md")
    for r in res["systems"]:
        print(f"{r['name']:28s} BLEU greedy {r['bleu_greedy']:6.2f}  beam {r['bleu_beam']:6.2f}  "
              f"non-zero {r['params_nonzero'] / 1e6:6.2f}M  {r['sent_per_s_greedy']:7.1f} sent/s greedy")


def cmd_translate(a) -> None:
    from seqkd.inference.decode import Translator, write_lines

    lines = read_input(a.input)
    tr = Translator(a.model, decode_cfg(a))
    hyps = tr.translate(lines, beam=a.beam, nbest=a.nbest, progress=a.output not in (None, "-") and not a.quiet)
    if a.nbest > 1:
        out = [f"{i} ||| {h.text} ||| {h.score:.4f}" for i, hs in enumerate(hyps) for h in hs]
    else:
        out = [hs[0].text for hs in hyps]
    write_lines(a.output, out)


def cmd_evaluate(a) -> None:
    from seqkd.inference.evaluate import evaluate

    if a.source or a.reference:
        if not (a.source and a.reference):
            raise SeqkdError("--source and --reference go together")
        src, ref = read_parallel(a.source, a.reference)
        if not src:
            raise SeqkdError(f"{a.source}: nothing to evaluate (the file is empty, and so is {a.reference})")
        test = a.source
    else:
        dc = data_cfg(a, DataConfig(test_split=a.split))
        src, ref = load_pairs(dc, "test")
        test = f"{dc.corpus}:{a.split}:{dc.src}-{dc.tgt}"
    res, greedy, beam = evaluate(a.model, src, ref, decode_cfg(a), progress=not a.quiet)
    d = {"model": a.model, "test_set": test, **res.as_dict()}
    print(json.dumps(d, indent=2))
    if a.out:
        write_json(a.out, d)
    if a.write_hyps:
        from seqkd.inference.decode import write_lines

        write_lines(f"{a.write_hyps}.greedy", greedy)
        write_lines(f"{a.write_hyps}.beam{a.beam}", beam)


def cmd_shortlist(a) -> None:
    from seqkd.data.vocab import Vocab
    from seqkd.inference.shortlist import ShortlistConfig, build_vmap, vmap_stats, write_vmap

    d = Path(a.distilled)
    src, tgt = read_parallel(d / "train.src", d / "train.tgt")
    vmap = build_vmap(src, tgt, Vocab(a.vocab), ShortlistConfig(a.per_piece, a.frequent, a.min_count))
    write_vmap(vmap, a.out)
    stats = vmap_stats(vmap)
    write_json(str(a.out) + ".json", {"corpus": str(d), "pairs": len(src), "per_piece": a.per_piece,
                                      "frequent": a.frequent, "min_count": a.min_count, **stats})
    print(f"{a.out}: {stats['rules']} rules, {stats['fixed']} fixed candidates, "
          f"{stats['mean_per_piece']:.1f} candidates per source piece")


def cmd_bench(a) -> None:
    from seqkd.inference.bench import frontier_plot, read_rows, s1_lines, table

    if bool(a.model) == bool(a.from_json):
        raise SeqkdError("give --model (repeat for several) to measure, or --from-json FILE to read a bench's rows")
    if a.from_json and a.out:
        raise SeqkdError("--out writes measured rows; with --from-json nothing is measured")
    if a.teacher and a.model and a.teacher not in {Path(m).name for m in a.model}:
        raise SeqkdError(f"--teacher {a.teacher!r}: not the folder name of any --model "
                         f"({', '.join(Path(m).name for m in a.model)})")
    rows = read_rows(a.from_json) if a.from_json else bench_rows(a)
    print(table(rows))
    if a.out:
        write_json(a.out, rows)
    if a.teacher:
        print("\n".join(s1_lines(rows, a.teacher, a.s1_engine)
                        or [f"S1: no model besides the teacher {a.teacher!r} in the rows"]))
    if a.plot:
        frontier_plot(rows, a.plot)


def bench_rows(a) -> list[dict]:
    """`seqkd bench`'s measurement: every --model on the split (or its first --max-sents lines)."""
    from seqkd.inference.bench import bench

    if a.vmap_both and not a.vmap:
        raise SeqkdError("--vmap-both needs --vmap PATH")
    layouts = _ints(a.layouts, "--layouts")
    if any(n < 1 for n in layouts):
        raise SeqkdError(f"--layouts {a.layouts!r}: inter_threads values must be >= 1")
    src, refs = load_pairs(data_cfg(a, DataConfig(test_split=a.split)), "test")
    if a.max_sents:
        src, refs = src[: a.max_sents], refs[: a.max_sents]
    return bench(a.model, src, a.engines.split(","), beam=a.beam, threads=a.threads, cfg=decode_cfg(a),
                 repeats=a.repeats, latency_sents=a.latency, refs=refs, vmap_both=a.vmap_both,
                 layouts=layouts or None)


def cmd_tune_decode(a) -> None:
    import torch

    from seqkd.inference.decode_tune import sweep, sweep_table

    if len(a.model) != len(a.beam):
        raise SeqkdError(f"give one --beam per --model ({len(a.model)} --model, {len(a.beam)} --beam)")
    if min(a.beam) < 1 or a.repeats < 1:
        raise SeqkdError(f"--beam and --repeats must be >= 1, got {a.beam} and {a.repeats}")
    src, refs = load_pairs(data_cfg(a, DataConfig(test_split=a.split)), "test")
    if a.max_sents:
        src, refs = src[: a.max_sents], refs[: a.max_sents]
    threads = a.threads or torch.get_num_threads()
    rows = [sweep(m, b, src, refs, threads, a.vmap, a.repeats, a.max_bleu_drop) for m, b in zip(a.model, a.beam)]
    print(sweep_table(rows))
    if a.out:
        write_json(a.out, rows)


# --- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqkd", description="Sequence-level knowledge distillation for NMT.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("vocab", help="train a SentencePiece vocabulary on the training split")
    data_args(s)
    config_args(s, "YAML run config", "override, e.g. vocab.size=16000")
    s.add_argument("--out", required=True, help="output folder")
    run_args(s)
    s.set_defaults(func=cmd_vocab)

    s = sub.add_parser("train", help="train a model (resumes when --out holds an unfinished run)")
    data_args(s)
    config_args(s, "YAML run config (see `seqkd/reproduce/presets/`)", "override, e.g. train.lr=5e-4")
    s.add_argument("--size", help="named model size: tiny, student-small, student, student-2-1, student-6-1, "
                                  "student-4-1, student-6-2, base, medium, teacher")
    s.add_argument("--vocab", help="existing vocabulary folder (default: train one into OUT/vocab)")
    s.add_argument("--init-from", help="fine-tune this model folder instead of starting from scratch")
    s.add_argument("--minutes", type=float, help="training-time budget")
    s.add_argument("--epochs", type=int, help="maximum epochs")
    s.add_argument("--distilled", help="train on this `seqkd distill` folder (Seq-KD / Seq-Inter data)")
    s.add_argument("--teacher", help="Word-KD teacher model folder (online: teacher forward in the loop)")
    s.add_argument("--topk-cache", help="Word-KD from a cached teacher top-k (`seqkd distill --mode topk`)")
    s.add_argument("--word-kd", type=float, help="Word-KD weight a in (1 - a) NLL + a KD (paper: 0.5)")
    s.add_argument("--out", required=True, help="run folder (the best model is saved there)")
    run_args(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("distill", help="teacher outputs for the training set: Seq-KD, Seq-Inter, or Word-KD top-k")
    data_args(s)
    s.add_argument("--teacher", required=True, help="teacher model folder (seqkd or a local HF Marian/OPUS-MT)")
    s.add_argument("--mode", choices=["seq_kd", "seq_inter", "topk"], default="seq_kd",
                   help="seq_kd: beam output; seq_inter: n-best pick closest to the reference; topk: Word-KD cache")
    config_args(s, "YAML run config (its data section is used)", "override a config field")
    s.add_argument("--distilled", help="distil the pairs of this folder instead (e.g. top-k over Seq-KD data)")
    s.add_argument("--beam", type=int, default=None, help="beam / n-best size (default 5; seq_inter 35)")
    s.add_argument("--metric", choices=["bleu", "chrf"], default="bleu", help="Seq-Inter similarity")
    s.add_argument("--fraction", type=float, default=1.0, help="Seq-Inter: fraction of the corpus")
    s.add_argument("--filter-worst", type=float, default=0.0, help="drop this fraction with the lowest teacher score")
    s.add_argument("--max-len-ratio", type=float, default=0.0, help="drop pairs with a larger length ratio")
    s.add_argument("--shard-size", type=int, default=2000, help="pairs per resumable shard")
    s.add_argument("--topk", type=int, default=8, help="top-k size for --mode topk")
    s.add_argument("--temperature", type=float, default=1.0, help="teacher temperature for --mode topk")
    s.add_argument("--engine", choices=["ct2", "hf"], default="ct2", help="decoding engine")
    s.add_argument("--int8", action="store_true", help="CTranslate2 int8 teacher")
    s.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch")
    s.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
    s.add_argument("--inter-threads", type=int, default=0,
                   help="CTranslate2 batches decoded in parallel (0 = auto: 2 for seq_inter, 1 for seq_kd)")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="decode on cpu or cuda (GPU LOCAL_RANK modulo the GPUs seen; no GPU is an error)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--out", required=True, help="output folder (resumable)")
    g = s.add_argument_group(
        "workers", "Any number of workers may share one --out (torchrun ranks, independent processes, machines "
        "on a shared folder): each claims unfinished shards atomically, takes over a dead worker's, and the "
        "one that finds every shard finished writes the result. Same bytes whatever the number of workers "
        "(with the same --threads / --inter-threads).")
    g.add_argument("--shard-index", type=int, default=0, metavar="I",
                   help="Slurm-array style: take only the shards k with k %% N == I (e.g. $SLURM_ARRAY_TASK_ID)")
    g.add_argument("--num-shards", type=int, default=1, metavar="N",
                   help="the number of array tasks splitting the shards (default 1: every shard)")
    g.add_argument("--merge-only", action="store_true",
                   help="translate nothing: check that every shard is present, complete and aligned, then write "
                        "train.src / train.tgt / manifest.json (e.g. after a Slurm array)")
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser("prune", help="magnitude pruning to a target sparsity, then retraining with masks")
    data_args(s)
    s.add_argument("--model", required=True, help="trained model folder")
    s.add_argument("--sparsity", type=float, required=True, help="fraction of prunable weights set to zero")
    s.add_argument("--scheme", choices=["class-blind", "class-uniform", "class-distribution"], default="class-blind")
    s.add_argument("--no-embeddings", action="store_true", help="leave the embedding / output matrix dense")
    s.add_argument("--rounds", type=int, default=1, help="gradual pruning rounds (each retrains)")
    s.add_argument("--schedule", help="sparsity per round, e.g. 0.5,0.8,0.85,0.9 (rounds kept in OUT/round-k)")
    s.add_argument("--epochs", type=int, default=2, help="retraining epochs per round (0 = prune only)")
    s.add_argument("--steps", type=int, help="retraining steps per round (instead of whole epochs)")
    s.add_argument("--minutes", type=float, help="retraining-time budget per round")
    s.add_argument("--distilled", help="retrain on this `seqkd distill` folder (the data the model was trained on)")
    s.add_argument("--finetune-distilled", help="then fine-tune each round on this folder (paper: Seq-Inter data)")
    s.add_argument("--finetune-lr", type=float, default=1e-4,
                   help="constant learning rate of that fine-tuning, no warmup (default 1e-4)")
    s.add_argument("--finetune-epochs", type=int, default=1, help="epochs of that fine-tuning (default 1)")
    config_args(s, "YAML run config (data and train sections are used)", "override, e.g. train.lr=2e-4")
    s.add_argument("--out", required=True, help="output folder (the pruned, retrained model)")
    run_args(s)
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("shrink", help="drop whole layers (faster on dense kernels); retrain with `train --init-from`")
    s.add_argument("--model", required=True, help="trained model folder")
    s.add_argument("--keep-encoder-layers", help="0-based encoder layers to keep, e.g. 0,2 (default all)")
    s.add_argument("--keep-decoder-layers", help="0-based decoder layers to keep, e.g. 0 (default all)")
    s.add_argument("--out", required=True, help="output model folder")
    run_args(s)
    s.set_defaults(func=cmd_shrink)

    s = sub.add_parser("stack", help="grow a deeper model by repeating a trained one's layers (shallow-to-deep); "
                                     "train it with `train --init-from`")
    s.add_argument("--model", required=True, help="trained model folder")
    s.add_argument("--encoder-layers", type=int, required=True, help="encoder layers of the grown model")
    s.add_argument("--decoder-layers", type=int, required=True, help="decoder layers of the grown model")
    s.add_argument("--out", required=True, help="output model folder")
    run_args(s)
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser("export", help="CTranslate2 export (int8 by default) with sizes on disk")
    s.add_argument("--model", required=True, help="model folder")
    s.add_argument("--quantization", default="int8", help="int8 | int8_float32 | float16 | float32")
    s.add_argument("--vmap", help="include this shortlist (`seqkd shortlist`): decode with use_vmap=True")
    s.add_argument("--out", required=True, help="output folder")
    run_args(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("reproduce", help="the paper's grid on Multi30k: teacher, students, KD variants, pruning, int8")
    data_args(s)
    s.add_argument("--preset", default="multi30k", help="tiny | quick | multi30k | multi30k-gpu | a YAML file")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. seq_inter_k=10")
    s.add_argument("--threads", type=int, default=0, help="CPU threads for training and decoding (0 = all)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--out", help="run folder (default runs/PRESET-SRC-TGT); rerun to resume")
    s.add_argument("--stop-after", metavar="STAGE", help="end after this stage (e.g. teacher); rerun to go on")
    s.add_argument("--archive", metavar="DIR", help="the run archive: every finished stage's portable record is "
                   "kept here, and a run (on any machine) restores what it holds and runs only what is missing")
    s.add_argument("--time-limit", type=float, default=0.0, metavar="MINUTES", help="start no stage that cannot "
                   "finish in the time left (by its estimate); stop at a stage boundary and exit 0 (0 = none)")
    s.add_argument("--jobs", type=int, help="run up to N independent stages at once, each with threads / N "
                   "threads (default: the preset's `jobs`)")
    s.add_argument("--plan", action="store_true", help="run nothing: list each stage as done, archived, partial, "
                   "extends "
                   "(trains on from its last checkpoint: only patience / max_epochs were raised), changed (a run "
                   "would discard its folder) or to run, under these settings; safe beside a running grid")
    s.add_argument("--status", action="store_true", help="run nothing: where the run folder stands (every started "
                   "stage's clock, epochs, minutes per epoch, best val BLEU, fine-tuning gains; the seeds' mean ± sd "
                   "of baseline and seq_kd; total hours); reads only, safe beside a running grid")
    status_args(s)
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("translate", help="translate a file or stdin, one output line per input line")
    s.add_argument("--model", required=True, help="model folder")
    s.add_argument("--input", "-i", default="-", help="input file (plain or .gz; default stdin)")
    s.add_argument("--output", "-o", default="-", help="output file (default stdout)")
    s.add_argument("--nbest", type=int, default=1, help="hypotheses per line ('i ||| text ||| score' when > 1)")
    decode_args(s)
    run_args(s, threads=False)
    s.set_defaults(func=cmd_translate)

    s = sub.add_parser("evaluate", help="BLEU/chrF greedy and beam, perplexity, p(t = y_hat)")
    s.add_argument("--model", required=True, help="model folder")
    data_args(s, split="test_2016_flickr")
    s.add_argument("--source", help="source file (instead of a corpus split)")
    s.add_argument("--reference", help="reference file")
    s.add_argument("--out", help="write the scores as JSON")
    s.add_argument("--write-hyps", metavar="PREFIX", help="write PREFIX.greedy and PREFIX.beamK")
    decode_args(s)
    run_args(s, threads=False)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("shortlist", help="a lexical shortlist (CTranslate2 vocabulary map) from a parallel corpus")
    s.add_argument("--distilled", required=True, help="a folder with train.src / train.tgt (e.g. the Seq-KD data)")
    s.add_argument("--vocab", required=True, help="the model (or vocabulary) folder whose tokenizer to use")
    s.add_argument("--per-piece", type=int, default=50, help="target candidates per source piece")
    s.add_argument("--frequent", type=int, default=100, help="most frequent target pieces, always candidates")
    s.add_argument("--min-count", type=int, default=1, help="ignore pairs seen in fewer sentences")
    s.add_argument("--out", required=True, help="the vmap file to write (stats beside it as FILE.json)")
    run_args(s)
    s.set_defaults(func=cmd_shortlist)

    s = sub.add_parser("bench", help="sentences/s, tokens/s and latency per model and engine, greedy and beam "
                                     "(interleaved repetitions); S1 with --teacher")
    s.add_argument("--model", action="append", help="model folder (repeat for several)")
    s.add_argument("--from-json", metavar="FILE", help="measure nothing: read the rows of an earlier `bench --out` "
                   "(for its table, --teacher and --plot)")
    data_args(s, split="test_2016_flickr")
    s.add_argument("--engines", default="hf,ct2,ct2-int8", help="comma list of hf, ct2, ct2-int8")
    s.add_argument("--plot", help="write the BLEU / speed / latency frontier of every row to this PNG")
    s.add_argument("--max-sents", type=int, default=0, help="use only the first N sentences")
    s.add_argument("--repeats", type=int, default=3, help="report the median (and range) of N timings")
    s.add_argument("--latency", type=int, default=0, metavar="N",
                   help="also translate the first N sentences one at a time: p50/p95 ms per sentence")
    s.add_argument("--out", help="write the rows as JSON")
    s.add_argument("--vmap-both", action="store_true",
                   help="with --vmap: measure every CTranslate2 engine both without and with the shortlist")
    s.add_argument("--layouts", metavar="N,N",
                   help="CTranslate2 inter_threads values to compare in the same run, e.g. 1,2 (default: "
                        "--inter-threads alone)")
    s.add_argument("--teacher", metavar="NAME", help="after the table, S1 best against best for every other model: "
                   "its fastest greedy row over the fastest beam row of the model whose folder name is NAME (median "
                   "ratio, range from the two rows' extremes, BLEU gap)")
    s.add_argument("--s1-engine", metavar="ENGINE", help="S1 over this engine's rows only, on both sides: hf, ct2 "
                   "(float32) or ct2-int8 (default: any engine)")
    decode_args(s)
    run_args(s, threads=False)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("tune-decode", help="each model's fastest CTranslate2 decoding settings, by measurement one "
                                           "factor at a time (thread layout, batching, scores, int8, shortlist)")
    s.add_argument("--model", required=True, action="append", help="model folder (repeat for several)")
    s.add_argument("--beam", required=True, action="append", type=int,
                   help="its beam size (repeat, in the order of --model)")
    s.add_argument("--vmap", help="also try this shortlist (`seqkd shortlist`)")
    data_args(s, split="val")
    s.add_argument("--max-sents", type=int, default=0, help="use only the first N sentences")
    s.add_argument("--repeats", type=int, default=3,
                   help="timings per candidate, interleaved with the current best's (median and range)")
    s.add_argument("--max-bleu-drop", type=float, default=0.2,
                   help="keep a setting only within this much BLEU of the default settings' (default 0.2)")
    s.add_argument("--out", help="write every model's trials and best settings as JSON")
    run_args(s)
    s.set_defaults(func=cmd_tune_decode)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if a.verbose else logging.INFO)
    if getattr(a, "threads", 0):  # commands pass it on too (CTranslate2, training); torch ops use this
        import torch

        torch.set_num_threads(a.threads)
    try:
        a.func(a)
    except SeqkdError as e:
        print("seqkd: error: " + "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()), file=sys.stderr)
        return 2
    except Exception as e:  # a full disk is the environment's fault, not a bug: one line, exit 2
        if not is_no_space(e):
            raise
        print("seqkd: error: " + str(no_space(getattr(e, "filename", None))), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqkd: interrupted; rerun the same command to resume (finished work and checkpoints are kept)",
              file=sys.stderr)
        return 130
    return 0
