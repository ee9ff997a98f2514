"""Keep the memory a training step frees for the next step (glibc's malloc, on Linux).

NumPy takes every array's memory from the C library's malloc. glibc's malloc gives a block
above an mmap threshold (which it raises as such blocks are freed) its own mmap, and hands the
top of its heap back to the operating system once more than a trim threshold lies free there.
A training step frees nearly all of its activations when it ends, so the heap can shrink,
and the next step's arrays fault their pages in again, 4 kB at a time, each fault zeroing a
page. Whether it shrinks depends on where the long-lived arrays (weights, AdamW's moments)
happen to lie in the heap. Measured on a 2-core AMD EPYC (glibc 2.36): a `baby` step, in a
process that builds the model and steps it as `bench` does, faulted 7.7 thousand pages and
took 49-52 ms, against none and 32-37 ms with this; `python -m numpygpt train` faulted 2.8
million pages in its first 300 steps (38.0 s, against 27 thousand faults and 29.8 s with
this), the same peak memory (143 MB) and the same losses. docs/performance.md has the rest.

keep_freed_memory() fixes the two thresholds: blocks below MMAP_THRESHOLD come from the heap,
and up to TRIM_THRESHOLD of freed heap stays mapped, to be reused. The memory a process
holds stays near its peak between steps (as it is during them); beyond TRIM_THRESHOLD
free, the heap is still trimmed. It changes the whole process (as a thread limit does), so
the package never calls it on import: the training loop and the benchmarks do.

A user's own settings win: with MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the
environment, or GLIBC_TUNABLES naming a glibc.malloc tunable, nothing is changed. Elsewhere
(macOS, Windows, musl) nothing is changed either.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit: 32 MB
TRIM_THRESHOLD = 1 << 30  # 1 GB of freed heap kept for reuse
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc reads these


def users_malloc_settings(environ):
    """True if the environment sets glibc's malloc itself: keep_freed_memory leaves it be."""
    return (any(v in environ for v in USER_SETTINGS)
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""))


_state = {}  # "kept": the result of the first call


def keep_freed_memory():
    """Set glibc's malloc to keep freed memory for reuse (see the module's docstring), once
    per process. Returns True if the thresholds are set (now or by an earlier call), False
    where they are left alone (not glibc, or the user's environment sets them)."""
    if "kept" not in _state:
        _state["kept"] = _set_thresholds()
    return _state["kept"]


def _set_thresholds():
    if not sys.platform.startswith("linux") or users_malloc_settings(os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False  # not glibc (musl's mallopt takes nothing)
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 when it takes a value. The mmap threshold first: if glibc refused
    # it, the trim threshold alone would switch off the adaptive mmap threshold.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
