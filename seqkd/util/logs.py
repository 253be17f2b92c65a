"""Logging for the main process and for the grid's worker processes (a spawned worker starts with Python's and
the libraries' defaults, so it sets up the same way): seqkd's format, and none of the libraries' chatter that
seqkd's own progress and logging replace."""

from __future__ import annotations

import logging
import warnings

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """seqkd logs at `level` in FORMAT; transformers, huggingface_hub and httpx log errors only; transformers
    draws no progress bars of its own ("Loading weights", "Writing model shards"); the Marian tokenizer's
    sacremoses hint is not shown."""
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    for noisy in ("httpx", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*sacremoses.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass
