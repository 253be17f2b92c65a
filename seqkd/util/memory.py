"""Process memory: hand freed heap back to the OS and report the resident set size."""

from __future__ import annotations

import ctypes
import os


def release_memory() -> float:
    """Hand freed heap memory back to the OS and return the resident set size in MiB (0 if unknown).

    Training on batches of varying shapes fragments glibc's main heap, which otherwise only grows: the
    grid's process reached 8.6 GB of heap for a 33.5M-parameter teacher. glibc's malloc_trim returns
    the free pages; elsewhere (another libc) this only reports the RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
