"""Test-session setup.

The tests use tiny matrices, for which OpenBLAS's worker threads cost more than they save
(and on a busy 2-core machine they can make a small matmul 25x slower). One BLAS thread keeps
the suite fast and its timings steady. This must happen before numpy is first imported, and
it never overrides a value the user set.
"""

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
