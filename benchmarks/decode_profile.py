"""Question: where does a model's decoding time go (encoder, decoder step, output layer, search), measured inside
CTranslate2 itself?

Decoding is forced to a fixed number of steps (min = max decoding length), so that every variant
does the same work whatever the model would have said:
- encoder (+ one step): 1 decoding step;
- one decoder step: (time of 1 + STEPS steps - time of 1 step) / STEPS, greedy and beam;
- the output layer's part of a step: the same fixed-length greedy decode with a vocabulary map that
  leaves SMALL target tokens (use_vmap) instead of the whole vocabulary;
- the search: beam B per step over greedy per step.
Then the real greedy and beam decodes of the same lines, for the totals. Every variant is timed
interleaved with the others, `--repeats` times; the median and the range are reported.

The committed figure (docs/results/decode-profile/README.md and decode_profile.json there; the models of a `quick`
run, `seqkd reproduce --preset quick --src de --tgt en --out runs/quick-de-en`) came from:

    python benchmarks/decode_profile.py --model runs/quick-de-en/teacher --model runs/quick-de-en/seq_kd \\
        --data-dir ../shared/data/multi30k --lines 300 --repeats 3 --threads 2 \\
        --out docs/results/decode-profile/decode_profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import ctranslate2

from seqkd.data.load import DataConfig, load_pairs
from seqkd.data.vocab import Vocab
from seqkd.inference.decode import ct2_dir
from seqkd.inference.shortlist import write_vmap


def variants(steps: int, beam: int) -> dict[str, dict]:
    """translate_batch keyword arguments per variant (fixed lengths: min = max)."""
    fixed = {"return_scores": False}
    return {
        "enc+1step": {**fixed, "beam_size": 1, "min_decoding_length": 1, "max_decoding_length": 1},
        f"greedy_{steps + 1}": {**fixed, "beam_size": 1, "min_decoding_length": steps + 1,
                                "max_decoding_length": steps + 1},
        f"greedy_{steps + 1}_vmap": {**fixed, "beam_size": 1, "min_decoding_length": steps + 1,
                                     "max_decoding_length": steps + 1, "use_vmap": True},
        f"beam{beam}_1": {**fixed, "beam_size": beam, "min_decoding_length": 1, "max_decoding_length": 1},
        f"beam{beam}_{steps + 1}": {**fixed, "beam_size": beam, "min_decoding_length": steps + 1,
                                    "max_decoding_length": steps + 1},
        "greedy_real": {"beam_size": 1, "return_scores": False},
        f"beam{beam}_real": {"beam_size": beam},
    }


def profile(model: str, src: list[str], a) -> dict:
    vocab = Vocab(model)
    small = sorted(vocab.token_to_id, key=vocab.token_to_id.get)[: a.small]
    vmap = write_vmap({"": small}, Path(a.work) / f"{Path(model).name}.small.vmap")
    path = ct2_dir(model, "int8" if a.compute_type.startswith("int8") else None, vmap)
    tr = ctranslate2.Translator(str(path), compute_type=a.compute_type, inter_threads=1, intra_threads=a.threads)
    tokens = [vocab.src_sp.encode([s], out_type=str)[0] + ["</s>"] for s in src]
    runs = variants(a.steps, a.beam)
    batch = {"max_batch_size": a.max_tokens, "batch_type": "tokens"}
    tr.translate_batch(tokens[:32], **batch)  # warm-up
    secs: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):
        for name, kw in runs.items():
            t = time.perf_counter()
            out = tr.translate_batch(tokens, **batch, **kw)
            secs[name].append(time.perf_counter() - t)
            if name == "greedy_real":
                steps_real = sum(len(r.hypotheses[0]) + 1 for r in out) / len(out)
    med = {k: statistics.median(v) for k, v in secs.items()}
    n, s, b = len(src), a.steps, a.beam
    step_greedy = (med[f"greedy_{s + 1}"] - med["enc+1step"]) / s
    step_vmap = (med[f"greedy_{s + 1}_vmap"] - med["enc+1step"]) / s
    step_beam = (med[f"beam{b}_{s + 1}"] - med[f"beam{b}_1"]) / s
    ms = 1000 / n  # seconds over the batch -> ms per sentence
    return {
        "model": model, "compute_type": a.compute_type, "threads": a.threads, "lines": n, "repeats": a.repeats,
        "seconds": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in secs.items()},
        "ms_per_sentence": {
            "encoder_and_first_step": med["enc+1step"] * ms,
            "decoder_step_greedy": step_greedy * ms,
            "decoder_step_greedy_small_vocab": step_vmap * ms,
            f"decoder_step_beam{b}": step_beam * ms,
            "greedy_real": med["greedy_real"] * ms,
            f"beam{b}_real": med[f"beam{b}_real"] * ms,
        },
        "output_layer_share_of_greedy_step": max(0.0, 1 - step_vmap / step_greedy) if step_greedy > 0 else None,
        "small_vocab": len(small), "vocab": len(vocab.token_to_id),
        f"beam{b}_step_over_greedy_step": step_beam / step_greedy if step_greedy > 0 else None,
        "mean_greedy_steps": steps_real,
        "encoder_share_of_greedy": med["enc+1step"] / med["greedy_real"],
        "sent_per_s": {"greedy": n / med["greedy_real"], f"beam{b}": n / med[f"beam{b}_real"]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="model folder (repeat)")
    p.add_argument("--data-dir", help="local corpus copy")
    p.add_argument("--split", default="val", help="lines to decode (default: validation)")
    p.add_argument("--lines", type=int, default=500)
    p.add_argument("--steps", type=int, default=20, help="fixed decoding steps beyond the first")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--small", type=int, default=64, help="target tokens left by the profiling vmap")
    p.add_argument("--compute-type", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (CTranslate2 batching)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="/tmp", help="folder for the profiling vmaps")
    p.add_argument("--out", help="write the results as JSON")
    a = p.parse_args()
    src, _ = load_pairs(DataConfig(data_dir=a.data_dir), a.split)
    rows = [profile(m, src[: a.lines], a) for m in a.model]
    for r in rows:
        print(json.dumps({k: r[k] for k in ("model", "ms_per_sentence", "output_layer_share_of_greedy_step",
                                            f"beam{a.beam}_step_over_greedy_step", "encoder_share_of_greedy",
                                            "mean_greedy_steps", "sent_per_s")}, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
