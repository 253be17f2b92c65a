"""Question: what does the per-worker input pass of `seqkd distill` cost on a large corpus, for the first worker (line
index + digest, cache written) against the next ones (cache read)? One run; wall seconds of each worker's pass.

The committed figure (docs/results/scale/README.md, "first worker 21.9 s, each next worker 0.07 s") came from:

    python benchmarks/input_index.py --data-dir ../shared/data/multi30k --lines 5000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import make_corpus  # noqa: E402

from seqkd.data.load import DataConfig, load_pairs  # noqa: E402
from seqkd.data.pairs import FilePairs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="local Multi30k copy (its training pairs are repeated)")
    p.add_argument("--lines", type=int, default=5_000_000)
    a = p.parse_args()
    src, tgt = load_pairs(DataConfig(data_dir=a.data_dir), "train")
    d = Path(tempfile.mkdtemp(prefix="input_index_"))
    try:
        s, t = make_corpus(d, a.lines, src, tgt)
        out = d / "out"
        out.mkdir()
        seconds = {}
        for name in ("first", "next", "next_again"):
            t0 = time.perf_counter()
            pairs = FilePairs(s, t, cache_dir=out)
            pairs.digest()
            pairs.keep_index()
            seconds[name] = round(time.perf_counter() - t0, 2)
        mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
        print(json.dumps({"lines": len(pairs), "seconds": seconds, "index_mb": round(mb, 1)}))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
