"""The subcommands that train or distil: vocab, train, distill, prune."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from seqkd.cli.common import data_cfg
from seqkd.data.load import load_pairs, stream_train_pairs
from seqkd.data.pairs import training_pairs
from seqkd.util.fsutil import SeqkdError

# Each command imports the modules it runs inside its function: they load torch, transformers and CTranslate2
# (seconds), which `seqkd --help` and argument errors should not wait for (seqkd.cli.main).


def cmd_vocab(a) -> None:
    from seqkd.config import load_run_config
    from seqkd.data.vocab import train_vocab

    cfg = load_run_config(a.config, a.set)
    cfg.data = data_cfg(a, cfg.data)
    src, tgt = load_pairs(cfg.data, "train")
    v = train_vocab(src, tgt, cfg.vocab, a.out, threads=a.threads or 2)
    print(f"{a.out}: {v.size} ids")


def _train_config(a):
    """The run config of `seqkd train`: --config / --set, then the flags."""
    from seqkd.config import load_run_config

    cfg = load_run_config(a.config, a.set)
    cfg.data = data_cfg(a, cfg.data)
    if a.size:
        cfg.model.size = a.size
    if a.minutes is not None:
        cfg.train.max_minutes = a.minutes
    if a.epochs is not None:
        cfg.train.max_epochs = a.epochs
    if a.init_from:
        cfg.train.init_from = a.init_from
    if a.distilled:
        cfg.data.distilled = a.distilled
    if a.teacher:
        cfg.kd.teacher = a.teacher
    if a.topk_cache:
        cfg.kd.topk_cache = a.topk_cache
    if a.word_kd is not None:
        cfg.train.loss.word_kd_alpha = a.word_kd
    if cfg.train.loss.word_kd_alpha > 0 and not (cfg.kd.teacher or cfg.kd.topk_cache):
        raise SeqkdError("Word-KD (word_kd_alpha > 0) needs --teacher DIR or --topk-cache DIR")
    return cfg


def cmd_train(a) -> None:
    from seqkd.config import dump
    from seqkd.models.marian import check_size
    from seqkd.training import dist
    from seqkd.training.kd import word_kd_teacher
    from seqkd.training.run import train_run
    from seqkd.training.trainer import TrainData

    cfg = _train_config(a)
    check_size(cfg.model.size)  # before any data is read or downloaded
    out = Path(a.out)
    text = dump(cfg)
    saved = out / "seqkd.yaml"
    if saved.exists() and saved.read_text() != text and not (out / "train_result.json").exists():
        raise SeqkdError(f"{saved}: this folder holds a run with a different config; use another --out")
    d = dist.setup(cfg.train.device)  # under torchrun: the process group, before any collective work
    vocab = cfg.train.init_from or a.vocab  # the starting model's vocabulary, else the given one, else trained
    if vocab:  # the training text is streamed from disk, never held in memory
        train_pairs = (None, None, stream_train_pairs(cfg.data))
    else:  # the vocabulary is learnt from the text first (rank 0 only)
        train_pairs = (*load_pairs(cfg.data, "train"), None)
    val = load_pairs(cfg.data, "val")
    data = TrainData(train_pairs[0], train_pairs[1], *val, pairs=train_pairs[2])
    res = train_run(out, cfg.train, cfg.model, data, vocab=vocab, init_from=cfg.train.init_from,
                    teacher=lambda v: word_kd_teacher(cfg, v, data), vocab_cfg=cfg.vocab,
                    vocab_threads=a.threads or 2, config_text=text, progress=not a.quiet)
    if not d.main:
        return
    print(json.dumps(res, indent=2))


def cmd_distill(a) -> None:
    from seqkd.config import RunConfig, load_run_config
    from seqkd.distill.config import DistillConfig
    from seqkd.distill.workers import Worker, distill_worker

    _check_distill_args(a)
    cfg = load_run_config(a.config, a.set, cls=RunConfig)
    cfg.data = data_cfg(a, cfg.data)
    if a.distilled:
        cfg.data.distilled = a.distilled
    if a.mode == "topk":
        from seqkd.training.kd import build_topk_cache

        if a.merge_only or a.num_shards != 1 or a.shard_index or a.device != "cpu":
            raise SeqkdError("--shard-index, --num-shards, --merge-only and --device are for seq_kd and seq_inter")
        src, tgt = load_pairs(cfg.data, "train")
        build_topk_cache(a.teacher, src, tgt, a.out, k=a.topk, temperature=a.temperature, max_tokens=a.max_tokens,
                         shard_size=a.shard_size, progress=not a.quiet)
        print(f"{a.out}: top-{a.topk} teacher probabilities for {len(src)} pairs")
        return
    beam = a.beam if a.beam is not None else (35 if a.mode == "seq_inter" else 5)
    dc = DistillConfig(mode=a.mode, beam=beam, metric=a.metric,
                       fraction=a.fraction, filter_worst=a.filter_worst, max_len_ratio=a.max_len_ratio,
                       engine=a.engine, compute_type="int8" if a.int8 else "float32", max_tokens=a.max_tokens,
                       shard_size=a.shard_size, threads=a.threads, inter_threads=a.inter_threads, device=a.device)
    worker = Worker.from_env(shard_index=a.shard_index, num_shards=a.num_shards, merge_only=a.merge_only)
    res = distill_worker(a.teacher, training_pairs(cfg.data, cache_dir=a.out), a.out, dc, worker,
                         progress=not a.quiet)
    if res.manifest is None:
        print(f"{a.out}: this worker is done ({res.translated} shards translated); {res.remaining} of "
              f"{res.shards} shards remain for other workers (the last to finish merges; after array tasks "
              "run with --shard-index, run --merge-only)")
        return
    print(json.dumps({k: res.manifest[k] for k in ("pairs", "dropped", "mean_teacher_score")}, indent=2))


def _check_distill_args(a) -> None:
    """Argument errors before any data or teacher is loaded."""
    for flag, v in (("--beam", a.beam), ("--shard-size", a.shard_size), ("--topk", a.topk)):
        if v is not None and v < 1:
            raise SeqkdError(f"{flag} {v}: must be at least 1")


def cmd_prune(a) -> None:
    from seqkd.compress.prune import PruneConfig, prune_and_retrain
    from seqkd.config import load_run_config
    from seqkd.training.trainer import TrainData

    cfg = load_run_config(a.config, a.set)
    cfg.data = data_cfg(a, cfg.data)
    if a.distilled:
        cfg.data.distilled = a.distilled
    cfg.train.max_epochs = a.epochs
    if a.steps is not None:
        cfg.train.max_steps = a.steps
    if a.minutes is not None:
        cfg.train.max_minutes = a.minutes
    try:
        sched = tuple(float(x) for x in a.schedule.split(",")) if a.schedule else ()
    except ValueError as e:
        raise SeqkdError(f"--schedule {a.schedule!r}: expected comma-separated sparsities, e.g. 0.5,0.8") from e
    pc = PruneConfig(sparsity=a.sparsity, scheme=a.scheme, include_embeddings=not a.no_embeddings, rounds=a.rounds,
                     schedule=sched)
    retrain = a.epochs > 0 or (a.steps or 0) > 0
    val = load_pairs(cfg.data, "val") if retrain else None
    data = TrainData(*load_pairs(cfg.data, "train"), *val) if retrain else None
    finetune = None
    if a.finetune_distilled and retrain:
        ft_data = TrainData(*load_pairs(replace(cfg.data, distilled=a.finetune_distilled), "train"), *val)
        finetune = (replace(cfg.train, lr=a.finetune_lr, warmup_steps=0, schedule="constant",  # exactly finetune_lr
                            max_epochs=a.finetune_epochs, max_steps=0, max_minutes=0.0), ft_data)
    print(json.dumps(prune_and_retrain(a.model, a.out, pc, cfg.train, data, finetune=finetune,
                                       progress=not a.quiet), indent=2))
