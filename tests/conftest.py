"""Test-session setup.

The tests use tiny matrices, for which OpenBLAS's worker threads cost more than they save
(and on a busy 2-core machine they can make a small matmul 25x slower). One BLAS thread keeps
the suite fast and its timings steady. This must happen before numpy is first imported, and
it never overrides a value the user set.
"""

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


# `python -m pytest` runs the test modules in parallel worker processes (pyproject.toml: -n auto
# --dist loadscope), each module whole in one worker. The longest module, the course site's
# (its build runs every notebook: about 230 s of a suite of about 580 s on the 2-core AMD EPYC,
# 2026-12-07), bounds the wall time however many workers there are, so past four they would
# only add processes (each with its own interpreter, NumPy and test data) for nothing.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """How many workers `-n auto` starts: one per core, at most MAX_WORKERS; none (every test
    in this process) on one core. PYTEST_XDIST_AUTO_NUM_WORKERS, if set, decides instead."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) < 2 else min(cores, MAX_WORKERS)
