"""Layer norm, fast: the same numbers as layers/layernorm.py (its twin), in cache-sized blocks.

The plain layer makes about eight passes over (B, T, C) arrays that do not fit in the cache
(3 MB each at the small config): each pass streams the whole array from memory and back, and
the time goes into that traffic, not the arithmetic. Here every pass runs on one block of
rows at a time, small enough to stay in the cache, and the reductions are matrix
products (BLAS reads a block once, and is faster at a row sum than ufunc.reduce):

- forward: per block, mean = x @ 1 / C, then xc = x - mean and var = rowsum(xc * xc) / C
  while the block is still in the cache (two passes over the cache, one over memory: safer
  than E[x^2] - mean^2, which cancels in float32 when |mean| >> std);
- backward: with Q = dout * (x - mean) (so dout * xhat = rstd Q, xhat never formed), the
  two row reductions of dx = rstd (g - mean(g) - xhat mean(g xhat)) (g = dout * w) are
  products with w, mean(g) = dout @ w / C and mean(g xhat) = rstd (Q @ w) / C, and
  dw = rstd^T Q is one more: one elementwise product feeds all three.

Shapes: N rows (the leading dimensions, e.g. B * T), C channels.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..layers.layernorm import EPS, LayerNormCache

# Elements per block of rows (1 MB of float32 per array). On the 2-core AMD EPYC, one thread
# took the same time with blocks of 256 kB to 1 MB (small: 2.91 and 2.92 ms forward + backward),
# but two threads sharing the batch (`train --threads 2`, training/threads.py) ran their halves
# in 1.89 ms with 1 MB blocks against 2.91 with 256 kB: every NumPy call lets go of the GIL and
# takes it back, and fewer, longer calls leave the threads less to wait on each other for.
BLOCK = 1 << 18
# Threads the rows are split over: ufuncs and BLAS release the GIL, so two threads run two
# halves of the rows at once. 1 = no pool (see docs/performance.md for when it pays).
THREADS = int(os.environ.get("NUMPYGPT_NORM_THREADS", "1"))
_pool = []  # the thread pool, made on first use


def _row_blocks(r0, r1, C):
    """(a, b) blocks of rows of about BLOCK elements covering r0..r1-1."""
    rows = max(1, BLOCK // C)
    return [(a, min(a + rows, r1)) for a in range(r0, r1, rows)]


def _split(work, N):
    """work(r0, r1) on THREADS contiguous parts of the rows 0..N-1; the list of its results."""
    if THREADS <= 1 or N < 2 * THREADS:
        return [work(0, N)]
    if not _pool:
        _pool.append(ThreadPoolExecutor(THREADS, thread_name_prefix="numpygpt-norm"))
    cuts = [N * i // THREADS for i in range(THREADS + 1)]
    return list(_pool[0].map(work, cuts[:-1], cuts[1:]))


def _tiles(v, N, C):
    """v (C,) as the operand a block of rows multiplies or adds: (rows, C) or (1, C).

    A NumPy operation that broadcasts a (C,) vector over a (rows, C) block runs its inner
    loop once per row, and with C in the hundreds that per-row start costs more than the
    arithmetic: x * w took 9 us per 65k float32 elements where x * (a block-shaped w) took 3 us
    (the 2-core AMD EPYC). So v is repeated down a block's rows once per call, and every block
    reuses that copy. The copy is itself a pass, so with all the rows in one block it costs
    more than it saves: there (the `baby` config's 768 rows of 128, for one), layer norm's
    forward + backward took 0.90-0.95x the time without it, and 0.95-0.97x at 512 rows of 384
    and 2048 of 128; with two blocks both ways took the same time, with six the copy won
    (0.97x). One thread, the AMD EPYC with OpenBLAS's SkylakeX kernel, 2026-12-07. The same
    products, so the same numbers."""
    rows = max(1, BLOCK // C)
    if N <= rows:  # one block: broadcast v
        return v.reshape(1, C)
    return np.broadcast_to(v, (rows, C)).copy()


def layernorm_forward(x, w, b, eps=EPS):
    """layers.layernorm_forward's numbers (same contract, same cache), by blocks of rows."""
    C = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, C)  # (N, C)
    N = x2.shape[0]
    dt = x.dtype.type
    out = np.empty_like(x2)
    mean = np.empty((N, 1), dtype=x.dtype)
    rstd = np.empty((N, 1), dtype=x.dtype)
    ones_c = np.full(C, dt(1.0 / C), dtype=x.dtype)  # x @ ones_c: the row means, by BLAS
    wt, bt = _tiles(w, N, C), _tiles(b, N, C)  # w and b shaped for a block: see _tiles

    def rows(r0, r1):
        for a, z in _row_blocks(r0, r1, C):
            xb, ob, mb, rb = x2[a:z], out[a:z], mean[a:z], rstd[a:z]
            np.matmul(xb, ones_c, out=mb[:, 0])  # (n,) means
            np.subtract(xb, mb, out=ob)  # xc, still in the cache for the next passes
            np.vecdot(ob, ob, out=rb[:, 0])  # sum of squares (n,)
            rb *= dt(1.0 / C)  # biased variance
            rb += dt(eps)
            np.sqrt(rb, out=rb)
            np.reciprocal(rb, out=rb)
            ob *= rb  # xhat
            np.multiply(ob, wt[:z - a], out=ob)
            np.add(ob, bt[:z - a], out=ob)

    _split(rows, N)
    lead = x.shape[:-1] + (1,)
    return out.reshape(x.shape), LayerNormCache(x, w, mean.reshape(lead), rstd.reshape(lead))


def layernorm_backward(dout, cache):
    """layers.layernorm_backward's numbers: dx = rstd (g - mean(g) - xhat mean(g xhat)),
    g = dout * w, by blocks of rows, its two row reductions products with w."""
    x, w, mean, rstd = cache
    C = x.shape[-1]
    dt = x.dtype.type
    x2 = np.ascontiguousarray(x).reshape(-1, C)  # (N, C)
    d2 = np.ascontiguousarray(dout, dtype=x.dtype).reshape(-1, C)
    mean2, rstd2 = mean.reshape(-1, 1), rstd.reshape(-1, 1)
    N = x2.shape[0]
    dx = np.empty_like(x2)
    w_c = w * dt(1.0 / C)  # products with w / C give the two row means
    wt = _tiles(w, N, C)

    def rows(r0, r1):  # dx of the rows [r0, r1), and their part of dw and db
        dw, db = np.zeros(C, dtype=x.dtype), np.zeros(C, dtype=x.dtype)
        n = min(r1 - r0, max(1, BLOCK // C))
        xc, q = np.empty((n, C), dtype=x.dtype), np.empty((n, C), dtype=x.dtype)  # reused
        for a, z in _row_blocks(r0, r1, C):
            n = z - a
            xb, qb, d_, gb, rs = xc[:n], q[:n], d2[a:z], dx[a:z], rstd2[a:z]
            np.subtract(x2[a:z], mean2[a:z], out=xb)  # x - mean; xhat = xb * rstd
            np.multiply(d_, xb, out=qb)  # Q = dout * (x - mean): dout * xhat = rstd Q
            dw += rs[:, 0] @ qb  # sum over rows of dout * xhat, as one product
            db += np.ones(n, dtype=x.dtype) @ d_
            mg = (d_ @ w_c)[:, None]  # (n, 1) mean(g), g = dout * w
            mgx = (qb @ w_c)[:, None]  # (n, 1) mean(g * xhat) / rstd
            mgx *= rs
            mgx *= rs  # xhat mean(g xhat) = (x - mean) rstd^2 (Q @ w / C)
            np.multiply(d_, wt[:n], out=gb)  # g
            gb -= mg
            xb *= mgx
            gb -= xb
            gb *= rs
        return dw, db

    parts = _split(rows, N)
    dw, db = parts[0]
    for dw_, db_ in parts[1:]:
        dw += dw_
        db += db_
    return dx.reshape(x.shape), dw, db
