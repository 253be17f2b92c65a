"""Question: do the grid's models work without seqkd? Load a model folder with `transformers` alone (MarianMTModel,
AutoTokenizer), translate a Multi30k test set with `generate` (beam 5), score it with sacreBLEU and set it beside
the figure the grid's report gives for that model (its eval stage decodes with CTranslate2).

The `multi30k` grid's teacher and best student (their stages are final once `best` has run) were checked on the
run folder of its chapter 4 (docs/results/multi30k-de-en/transformers-alone.json, `--threads 1`); on a run folder:

    python benchmarks/transformers_alone.py --run runs/multi30k-de-en --model teacher --model best \\
        --src de --tgt en --data-dir ../shared/data/multi30k --json transformers_alone.json

`--model best` follows the grid's choice (best/pick.json). Nothing from seqkd is imported: this is what a user
who takes a model folder away can do.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import sacrebleu
import torch
from transformers import AutoTokenizer, MarianMTModel


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def translate(model_dir: Path, sources: list[str], beam: int, batch: int) -> list[str]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = MarianMTModel.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(sources), batch):
            enc = tok(sources[i:i + batch], return_tensors="pt", padding=True)
            gen = model.generate(**enc, num_beams=beam, max_new_tokens=256)
            out += tok.batch_decode(gen, skip_special_tokens=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a grid's run folder (or one restored from its archive)")
    p.add_argument("--model", action="append", required=True, help="a stage name; `best` follows the grid's pick")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--data-dir", type=Path, required=True, help="Multi30k files {split}.{lang}.gz")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    src = read_lines(a.data_dir / f"{a.split}.{a.src}.gz")
    ref = read_lines(a.data_dir / f"{a.split}.{a.tgt}.gz")
    rows = []
    for name in a.model:
        stage = json.loads((a.run / "best" / "pick.json").read_text())["model"] if name == "best" else name
        t = time.time()
        hyp = translate(a.run / stage, src, a.beam, a.batch)
        bleu = sacrebleu.metrics.BLEU()
        score = bleu.corpus_score(hyp, [ref]).score
        report = json.loads((a.run / f"eval_{stage}" / "row.json").read_text())
        rows.append({"model": name, "stage": stage, "split": a.split, "beam": a.beam, "bleu_transformers": score,
                     "bleu_report": report["bleu_beam"], "report_engine": report["engine"],
                     "difference": score - report["bleu_beam"], "seconds": time.time() - t,
                     "signature": str(bleu.get_signature())})
        print(f"{name} ({stage}): transformers generate beam {a.beam} {score:.2f} BLEU, the report "
              f"{report['bleu_beam']:.2f} ({report['engine']}), difference {score - report['bleu_beam']:+.2f}  "
              f"[{bleu.get_signature()}]")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_name(a.json.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(a.json)  # atomic: a killed run leaves the old file or none


if __name__ == "__main__":
    main()
