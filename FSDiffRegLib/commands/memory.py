"""Freed memory kept for reuse by the process (Linux, glibc).

glibc's malloc serves large blocks (above 128 KiB to 32 MiB, adjusting) straight from the system and gives them
back when freed, so each of the network's large activations arrives as fresh pages the kernel must fault in and
zero: about 270,000 page faults in one registration of the sample. Served from malloc's heap and kept there once
freed, the next block of that size reuses the same pages (a third as many faults; the peak resident memory about
100 MB higher). Numbers are unchanged: only where the memory comes from.
"""

from __future__ import annotations

import ctypes
import sys

KEEP_BYTES = 1 << 30  # blocks up to 1 GiB from the heap; freed memory at its top kept up to 1 GiB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (``KEEP_BYTES``); whether it took (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, KEEP_BYTES) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
