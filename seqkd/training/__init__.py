"""Training: the trainer, its losses (NLL, Word-KD), validation, checkpoints, precision and torchrun."""
