"""Question: what does sparsity buy on disk? For each model folder, non-zero parameters and sizes of the fp32
safetensors and CTranslate2 int8 files, raw and gzip-compressed (dense kernels store zeros, so the
raw size does not shrink; compression shows what a sparse format could save).

The committed figure (docs/results/prune-study/README.md, "On disk, zeros pay only under compression") came from the
study's parent and its 80% / 90% class-blind rounds (made by the commands in that README; the exact command line was
not kept):

    python benchmarks/prune_sizes.py PARENT PRUNED_80 PRUNED_90
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from seqkd.inference.decode import ct2_dir
from seqkd.models.marian import count_params, load_model


def _mb(n: int) -> float:
    return n / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--out", help="write the rows as JSON")
    a = p.parse_args()
    rows = []
    for m in a.models:
        d = Path(m)
        st = (d / "model.safetensors").read_bytes()
        int8 = (ct2_dir(d, "int8") / "model.bin").read_bytes()
        c = count_params(load_model(d))
        rows.append({"model": str(d), "params_total": c["total"], "params_nonzero": c["nonzero"],
                     "fp32_mb": _mb(len(st)), "fp32_gzip_mb": _mb(len(gzip.compress(st, 6))),
                     "int8_mb": _mb(len(int8)), "int8_gzip_mb": _mb(len(gzip.compress(int8, 6)))})
    print("| model | non-zero | fp32 MB | fp32 gzip MB | int8 MB | int8 gzip MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['model']).name} | {r['params_nonzero'] / 1e6:.2f}M | {r['fp32_mb']:.1f} | "
              f"{r['fp32_gzip_mb']:.1f} | {r['int8_mb']:.1f} | {r['int8_gzip_mb']:.1f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
