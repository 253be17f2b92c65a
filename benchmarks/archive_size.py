"""Question: how large is a run archive, by stage kind, and which entries keep model weights?

The committed figures (docs/results/jobs-quick/README.md, "Sizes") came from archives written from finished run folders
(`seqkd reproduce --preset tiny|quick ... --out RUN --archive NEW`: every stage archived, the weights no user
needs dropped), then:

    python benchmarks/archive_size.py NEW
"""

from __future__ import annotations

import argparse
import json

from seqkd.reproduce.archive import Archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive", nargs="+", help="run archive folders")
    for root in ap.parse_args().archive:
        a = Archive(root)
        weights = {e["name"]: {f: v["size"] for f, v in e["files"].items() if f.endswith((".safetensors", ".bin"))}
                   for e in a.clocks()}
        print(json.dumps({"archive": root, "stages": len(weights), "sizes": a.sizes(),
                          "weights": {n: w for n, w in weights.items() if w}}, indent=1))


if __name__ == "__main__":
    main()
