"""Question: how large is a run archive, by stage kind, and which entries keep model weights?

The committed figures (docs/results/jobs-quick/README.md, "Sizes") came from archives written from finished run folders
(`seqkd reproduce --preset tiny|quick ... --out RUN --archive NEW`: every stage archived, the weights no user
needs dropped), then:

    python benchmarks/archive_size.py NEW

With `--since REV` it also gives what the archive added to the git repository since REV: the objects under the
archive's folder reachable from HEAD and not from REV, raw and as git stores them (zlib); the `multi30k` grid's
figure (docs/results/multi30k-de-en/README.md):

    python benchmarks/archive_size.py docs/results/multi30k-de-en/archive --since 363ed7b
"""

from __future__ import annotations

import argparse
import json
import subprocess

from seqkd.reproduce.archive import Archive


def git_growth(folder: str, since: str) -> dict:
    """Bytes of the git objects under `folder` reachable from HEAD but not from `since`: raw and on disk."""
    objs = subprocess.run(["git", "rev-list", "--objects", f"{since}..HEAD", "--", folder], check=True,
                          capture_output=True, text=True).stdout.split()
    ids = "\n".join(o for o in objs if len(o) == 40)
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize) %(objectsize:disk)"], input=ids,
                           check=True, capture_output=True, text=True).stdout.split()
    return {"since": since, "raw_bytes": sum(map(int, sizes[0::2])), "git_bytes": sum(map(int, sizes[1::2]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive", nargs="+", help="run archive folders")
    ap.add_argument("--since", metavar="REV", help="also what each archive added to the git repository since REV")
    args = ap.parse_args()
    for root in args.archive:
        a = Archive(root)
        weights = {e["name"]: {f: v["size"] for f, v in e["files"].items() if f.endswith((".safetensors", ".bin"))}
                   for e in a.clocks()}
        print(json.dumps({"archive": root, "stages": len(weights), "sizes": a.sizes(),
                          "weights": {n: w for n, w in weights.items() if w},
                          **({"git_growth": git_growth(root, args.since)} if args.since else {})}, indent=1))


if __name__ == "__main__":
    main()
