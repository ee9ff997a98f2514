"""The machine every figure belongs to: its CPU, its BLAS, its matmul peak, and the clock.

A figure without the CPU that made it means little: PyTorch's CPU GEMMs are fast on Intel and
slow on AMD, and OpenBLAS picks a different kernel on each. So every benchmark prints
cpu_name() and blas_description(), and measures the float32 GEMM peak (matmul_peak) that its
GFLOP/s are a share of.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), or the platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def threads_text(n):
    """"1 thread", "2 threads": the count as the tables print it."""
    return f"{n} thread" + ("" if n == 1 else "s")


def blas_description():
    """Which BLAS numpy runs, with which kernel and threads (e.g. "openblas SkylakeX, 2
    threads"): the kernel decides the matmul peak, so every figure depends on it."""
    from threadpoolctl import threadpool_info

    libs = [f"{i['internal_api']} {i.get('architecture') or ''}".strip()
            + f", {threads_text(i['num_threads'])}"
            for i in threadpool_info() if i["user_api"] == "blas"]
    kernel = os.environ.get("OPENBLAS_CORETYPE")
    note = f" (OPENBLAS_CORETYPE={kernel} forces that kernel)" if kernel else ""
    return "; ".join(libs) + note if libs else "unknown"


def matmul_peak(n=2048, repeats=5, dtype=np.float32):
    """Best float32 GEMM throughput (FLOP/s) of this machine with the current BLAS threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * n * n / best


def memory_note(kept):
    """What a benchmark's header says of the process's malloc: whether it keeps the memory a
    step frees for the next (training/memory.py: keep_freed_memory's result)."""
    return "malloc keeps freed memory" if kept else "malloc as the C library sets it"


def limit_threads(threads):
    """Set the BLAS (and torch, if loaded) thread count for this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


# When numpygpt and PyTorch take turns in one process with more than one thread, each library's
# idle worker threads go on spinning on a core after its call returns before they sleep:
# OpenBLAS's for 2^28 CPU cycles by default (about 0.1 s; OPENBLAS_THREAD_TIMEOUT), PyTorch's
# OpenMP workers for a shorter while. The side timed next then runs with a core taken from it:
# on the 2-core AMD EPYC, PyTorch's `baby` step took 49 ms right after numpygpt's rounds and
# 37 ms after a pause. A pause alone is not enough either: a library whose workers have gone
# to sleep pays to wake them on its next call (PyTorch's layer norm, 1 ms back to back, took
# 11 ms as the first call after a pause). So each turn waits, then runs untimed for a while.
#
# Once is not always enough. Threads of our own that share a kernel (`train --threads 2`'s,
# bench's team column) hand NumPy's GIL to each other between calls, and after a pause the
# machine wakes a waiting thread slowly for a while: on the 2-core AMD EPYC (KVM), GELU's
# forward + backward on two threads took 13-22 ms in the calls after a 0.25 s pause, even after
# one or two untimed calls, against 12 ms back to back; after 0.05-0.1 s of untimed calls, 11.5
# ms. One thread took the same time either way, and so did PyTorch's GELU on two threads (its
# OpenMP threads spin while they wait); its shorter kernels gained too. So the untimed calls
# go on for WARM_UP_SECONDS, as a step's kernels run in the middle of a busy run.
HANDOVER_SECONDS = 0.25
WARM_UP_SECONDS = 0.1


def hand_over(threads, warm_up):
    """Before timing a contender right after another, with more than one thread: wait
    HANDOVER_SECONDS for the idle workers of the one before to stop spinning, then call
    warm_up() untimed, at least once and for WARM_UP_SECONDS, so that the timed calls find
    their own threads awake, as they are in training. With one thread there are no workers:
    nothing to do."""
    if threads > 1:
        time.sleep(HANDOVER_SECONDS)
        t0 = time.perf_counter()
        warm_up()
        while time.perf_counter() - t0 < WARM_UP_SECONDS:
            warm_up()


def seconds_per_call(step, n):
    """Seconds per call of step(), over n calls in a row (as training makes them)."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def fair_turns(contenders, rounds, calls=1, threads=1):
    """{name: [seconds per call, one per round]} of contenders {name: fn}, timed in turns:
    every round times each fn over `calls` calls in a row (an int, or {name: int}), so that
    drift in the machine's speed hits all alike. With threads > 1 each turn starts with
    hand_over (a pause and untimed calls); give threads=1 where no other library's workers
    can be spinning. The caller warms the contenders up first."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            hand_over(threads, fn)
            n = calls[name] if isinstance(calls, dict) else calls
            times[name].append(seconds_per_call(fn, n))
    return times
