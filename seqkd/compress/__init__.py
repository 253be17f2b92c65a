"""Compression: magnitude pruning with retraining under masks."""
