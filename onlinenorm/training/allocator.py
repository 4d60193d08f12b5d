"""Keep freed memory in the process, so training steps stop page-faulting (glibc only).

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its
mmap threshold with fresh ``mmap`` pages and returns the top of the heap to
the kernel when more than the trim threshold is free, so the activation-sized
temporaries a training step makes and frees come back next step as new
pages, each page-faulting on first touch. Measured on the 2-core VM
(BENCHMARKS.md, "The allocator"): system time was half the wall time of
``onlinenorm bench layer``, and ``BatchNorm2d`` forward+backward at
``(32, 256, 56, 56)`` took 88 ms instead of 54 ms.

``retain_freed_memory`` raises both thresholds with ``mallopt``, glibc's
in-process knob: freed blocks stay in the heap and are reused. Replacing
malloc altogether (jemalloc or tcmalloc through ``LD_PRELOAD``, as Intel's
PyTorch CPU tuning guide suggests) does the same, but needs a library these
machines do not have and must be set before the process starts. The cost is
that a process keeps its peak heap until it exits, which a training process
reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold (32 or 64 MiB on 64-bit, by version): try from the top.
MMAP_THRESHOLDS = (2**30, 2**28, 2**26, 2**25)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: "never trim" in practice
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD")


def retain_freed_memory() -> int | None:
    """Stop glibc trimming the heap and raise its mmap threshold; returns the threshold set.

    Returns None, changing nothing, where the C library is not glibc or the
    user already chose (one of ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_`` or ``LD_PRELOAD`` is set). Safe to call more than once.
    """
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    threshold = next((value for value in MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, value) == 1), None)
    if threshold is not None:
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return threshold
