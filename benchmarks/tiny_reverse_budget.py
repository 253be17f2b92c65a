"""Question: can the test suite's `tiny_reverse` fixture (tests/conftest.py: 4,000 pairs, 20 epochs, lr 1e-3) train
for less and still reverse digit strings at the BLEU >= 90 that `tests/test_learns.py` asks for? Trains the same
model on `PAIRS` pairs for `EPOCHS` epochs at `LR`, prints the training seconds and greedy test BLEU with both engines.
`T`: torch threads (default 2, as the suite). The figures in docs/results/tests-avx2/README.md came from (one run
each; the result depends on the thread count):

    python benchmarks/tiny_reverse_budget.py 4000 20
    python benchmarks/tiny_reverse_budget.py 4000 15
    python benchmarks/tiny_reverse_budget.py 4000 12 0.002
    T=1 OMP_NUM_THREADS=1 python benchmarks/tiny_reverse_budget.py 4000 15
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import reverse_task  # noqa: E402

from seqkd.data.vocab import VocabConfig, train_vocab  # noqa: E402
from seqkd.inference.decode import DecodeConfig, Translator  # noqa: E402
from seqkd.inference.evaluate import bleu  # noqa: E402
from seqkd.models.marian import ModelConfig, build_model  # noqa: E402
from seqkd.training.trainer import TrainConfig, TrainData, train  # noqa: E402


def main() -> None:
    pairs, epochs = int(sys.argv[1]), int(sys.argv[2])
    lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
    torch.set_num_threads(int(os.environ.get("T", "2")))
    root = Path(tempfile.mkdtemp())
    src, tgt = reverse_task(pairs, seed=1)
    vs, vt = reverse_task(100, seed=2)
    vocab = train_vocab(src, tgt, VocabConfig(size=40), root / "vocab")
    model = build_model(ModelConfig("tiny"), vocab.size, vocab.pad_id, vocab.eos_id, seed=1)
    cfg = TrainConfig(max_tokens=512, lr=lr, warmup_steps=50, max_epochs=epochs, log_every=50, ckpt_every=10_000,
                      val_bleu=False)
    t = time.time()
    train(root / "model", cfg, model, vocab, TrainData(src, tgt, vs, vt), progress=False)
    print(f"train s {time.time() - t:.1f}")
    ts, tt = reverse_task(200, seed=3)
    for engine in ("ct2", "hf"):
        out = Translator(root / "model", DecodeConfig(engine=engine)).translate(ts, beam=1)
        print(engine, f"{bleu([h[0].text for h in out], tt).score:.1f}")


if __name__ == "__main__":
    main()
