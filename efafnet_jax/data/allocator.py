"""glibc malloc settings for input workers.

Decoded images, crops and heatmaps are 0.1-2 MB each. glibc serves blocks above
its mmap threshold (128 KB at start) with fresh mmap pages and returns them on
free, so every sample pays page faults for memory it just released; raising the
mmap and trim thresholds keeps that memory in the heap for reuse. Other C
libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_done = False


def keep_large_blocks_in_heap(
    mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20
) -> bool:
    """Sets the thresholds once per process; returns whether glibc took them."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    return _done
