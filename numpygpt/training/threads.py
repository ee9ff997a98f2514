"""Data parallelism on one machine's cores: threads share a step's batch, each with its own replica.

With BLAS's own threads (the default), a step's matrix products use every core, but the rest
of it (layer norm, GELU, the attention's softmax, dropout, the cross-entropy: a quarter to a
third of a step) runs on one: NumPy's elementwise operations are single-threaded. Splitting
each of those operations over threads does not pay: after every matrix product OpenBLAS's idle
workers spin on the other cores for about 0.1 s, right when the split would need them.

So the split is made one level up, as `mpiexec` does across processes (parallel.py): N
threads, each with BLAS limited to one thread, run forward and backward on their own rows of
the batch, every operation of the step included; NumPy releases the GIL inside its matrix
products and ufuncs, so the threads' arrays are computed at the same time. The loss is the mean
over the batch's n targets (those not -1), so with thread k's mean L_k over its n_k targets

    L = 1/n sum_k n_k L_k   and   grad L = sum_k (n_k / n) grad L_k

(for pretraining's batches, where every row holds T targets, n_k / n is the thread's share of
the rows). It is the one-thread step's gradient up to float32 rounding (the same sums, added
in another order).

Every replica is a shallow copy of the model: the same config and the same params dict (one set
of weights, which the optimizer updates in place), its own cache between forward and backward,
and its own dropout generator, seeded at each step from the model's (which every checkpoint
keeps): a resumed run draws the same masks as one that never stopped.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from ..errors import ConfigError


def check_threads(threads, cores=None):
    """threads as an int in 1..cores (this machine's cores by default); ConfigError if not."""
    cores = cores or os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")
    if threads > cores:
        raise ConfigError(f"threads {threads} is more than this machine's {cores} cores: "
                          f"each thread needs a core of its own (give at most {cores})")
    return int(threads)


def batch_shares(B, threads):
    """The rows [a, b) of a batch of B that each of `threads` threads takes, as even as they
    divide; no thread without rows (fewer shares than threads when B < threads)."""
    n = min(threads, B)
    cuts = [B * k // n for k in range(n + 1)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def in_threads(pool, blas, work, n):
    """[work(0), ..., work(n - 1)], work(k) in thread k: 0 the caller's, the others the pool's
    (n - 1 workers); blas, a threadpoolctl.ThreadpoolController, holds BLAS at one thread
    meanwhile (one core per thread)."""
    with blas.limit(limits=1, user_api="blas"):
        futures = [pool.submit(work, k) for k in range(1, n)]
        return [work(0)] + [f.result() for f in futures]


class ThreadTeam:
    """forward + backward of one batch over `threads` threads, each on its rows of the batch.

    team = ThreadTeam(model, 2); loss, grads = team.loss_and_grads(x, y)
    gives model.forward(x, y)[1] and model.backward()'s gradients, up to float32 rounding;
    team.loss(x, y), the model in eval mode, the forward's loss alone (an evaluation's).
    A team of one thread is the model's own forward and backward, on the caller's thread."""

    def __init__(self, model, threads):
        self.model = model
        self.threads = check_threads(threads)
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="numpygpt-step") \
            if self.threads > 1 else None  # thread 0 is the caller's
        # finds the BLAS libraries once; limits are cheap (one thread: no limit to set)
        self._blas = ThreadpoolController() if self.threads > 1 else None

    def _replicas(self, rngs):
        """The model (thread 0) and its shallow copies, one per generator of rngs."""
        replicas = [self.model]
        for rng in rngs:
            r = copy.copy(self.model)  # same config, same params dict: one set of weights
            r.rng = rng  # its own dropout masks
            r._cache = None  # its own forward's cache
            replicas.append(r)
        return replicas

    @staticmethod
    def _weights(y, shares):
        """n_k / n: each share's targets (the entries of y that are not -1, which the loss
        skips) over the batch's. With no target at all (a loss of 0), the rows' shares."""
        counts = [int(np.count_nonzero(y[s] != -1)) for s in shares]
        total = sum(counts)
        if total == 0:
            return [(s.stop - s.start) / len(y) for s in shares]
        return [c / total for c in counts]

    def loss_and_grads(self, x, y):
        """(mean loss over the batch, {name: gradient}) of x, y (B, T), B >= 1."""
        B = x.shape[0]
        shares = batch_shares(B, self.threads)
        # every call draws the replicas' dropout seeds from the model's generator, which
        # every checkpoint keeps: a resumed run draws the same masks
        seeds = self.model.rng.integers(2**63, size=self.threads - 1)  # none for one thread
        if len(shares) == 1:
            _, loss = self.model.forward(x, y)
            return loss, self.model.backward()
        replicas = self._replicas([np.random.default_rng(int(s)) for s in seeds])

        def work(k):
            _, loss = replicas[k].forward(x[shares[k]], y[shares[k]])
            return loss, replicas[k].backward()

        results = in_threads(self._pool, self._blas, work, len(shares))
        weights = self._weights(y, shares)
        loss = sum(w * r[0] for w, r in zip(weights, results, strict=True))
        grads = results[0][1]
        dt = next(iter(grads.values())).dtype.type
        for name, g in grads.items():  # sum_k (n_k / n) grad L_k, in thread order
            g *= dt(weights[0])
            for w, (_, other) in zip(weights[1:], results[1:], strict=True):
                g += dt(w) * other[name]
        return loss, grads

    def loss(self, x, y):
        """The mean loss over the batch x, y (B, T), forward only, for an evaluation: the
        model must be in eval mode (no dropout, so no generator is drawn from)."""
        if self.model.training:
            raise ValueError("ThreadTeam.loss evaluates: call model.eval() first")
        B = x.shape[0]
        shares = batch_shares(B, self.threads)
        if len(shares) == 1:
            return self.model.forward(x, y)[1]
        replicas = self._replicas([None] * (len(shares) - 1))  # eval mode: no dropout

        def work(k):
            return replicas[k].forward(x[shares[k]], y[shares[k]])[1]

        losses = in_threads(self._pool, self._blas, work, len(shares))
        return sum(w * loss for w, loss in zip(self._weights(y, shares), losses, strict=True))

    def close(self):
        if self._pool:
            self._pool.shutdown(wait=True)


__all__ = ["ThreadTeam", "batch_shares", "check_threads", "in_threads"]
