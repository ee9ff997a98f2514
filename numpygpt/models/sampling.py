"""Choosing the next token from the logits: greedy, temperature, top-k and top-p (nucleus).

    nxt = sample_next(logits, temperature=0.8, top_k=40, rng=rng)      # (B,) token ids

Used by generate() (models/base.py) for every model.

Shapes: B sequences, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def check_sampling(temperature, top_k, top_p):
    """Raise ConfigError (a ValueError) for sampling settings that make no sense."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not temperature >= 0 or not math.isfinite(temperature):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float,
                                                                              np.number))
                              or not 0.0 < top_p <= 1.0):
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Draw one token id per row of logits (B, V). Returns int64 (B,)."""
    logits = logits.astype(np.float64)  # sampling is cheap; float64 keeps tiny probs honest
    if temperature == 0:
        return logits.argmax(axis=-1)
    # the row maximum first, then the temperature: (z - max) / t <= 0, and where a tiny
    # temperature (1e-300) takes it below the float range, -inf is the right limit (exp: 0)
    with np.errstate(over="ignore"):
        logits = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]  # (B, 1) k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)  # (B, V)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep a token if the mass *before* it is still < top_p (so the top token always stays)
        keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    rng = rng if rng is not None else np.random.default_rng()
    u = rng.random((probs.shape[0], 1))  # inverse-CDF sampling, one uniform per row
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), probs.shape[-1] - 1)
