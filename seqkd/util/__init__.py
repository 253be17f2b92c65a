"""Helpers every step uses: atomic files and locks (fsutil), fault-injection points (faults), process memory
(memory)."""
