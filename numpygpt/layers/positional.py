"""Positional encodings, added to the token embeddings so the model knows where a token sits.

Two kinds:
- learned (GPT-2): a trainable table `wpe` of shape (block_size, C), sliced to the first T rows;
- sinusoidal ("Attention Is All You Need"): a fixed table, no parameters,
      PE[t, 2i]   = sin(t / 10000^(2i/C))
      PE[t, 2i+1] = cos(t / 10000^(2i/C))

Shapes: B batch, T time, C channels.
"""

import numpy as np


def learned_positional_forward(x, wpe):
    """Add the learned position vectors: out[b, t] = x[b, t] + wpe[t].

    Inputs:
    - x: (B, T, C) token embeddings
    - wpe: (block_size, C) learned position table, block_size >= T

    Returns (out, cache):
    - out: (B, T, C)
    """
    T = x.shape[1]
    if T > wpe.shape[0]:  # the one check: a learned table has no row for t >= block_size
        raise ValueError(f"sequence length T={T} exceeds block_size={wpe.shape[0]} of wpe")
    out = x + wpe[:T]  # (B, T, C), broadcast over B
    cache = (T, wpe.shape)
    return out, cache


def learned_positional_backward(dout, cache):
    """Backward of out = x + wpe[:T].

    Returns (dx, dwpe):
    - dx: (B, T, C), simply dout (addition passes the gradient through)
    - dwpe: (block_size, C); rows < T get dout summed over the batch, rows >= T get zero
    """
    T, shape = cache
    dx = dout.copy()
    dwpe = np.zeros(shape, dtype=dout.dtype)  # (block_size, C)
    dwpe[:T] = dout.sum(axis=0)  # (T, C)
    return dx, dwpe


def sinusoidal_table(T, C, dtype=np.float32):
    """The fixed sin/cos table of shape (T, C) (C may be odd: the last column is then a sine)."""
    pos = np.arange(T, dtype=np.float64)[:, None]  # (T, 1)
    i2 = np.arange(0, C, 2, dtype=np.float64)  # the even channel indices 2i
    angle = pos / np.power(10000.0, i2 / C)  # (T, ceil(C/2))
    table = np.empty((T, C), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : C // 2])
    return table.astype(dtype)  # built in float64 once, then cast: same table for every dtype


def sinusoidal_positional_forward(x):
    """Add the fixed sinusoidal encoding: out[b, t] = x[b, t] + PE[t].

    Inputs:
    - x: (B, T, C)

    Returns (out, cache):
    - out: (B, T, C); cache is None (nothing to learn, nothing to remember)
    """
    _, T, C = x.shape
    out = x + sinusoidal_table(T, C, x.dtype)  # (B, T, C)
    return out, None


def sinusoidal_positional_backward(dout, cache):
    """Backward of out = x + PE: the table is a constant, so dx = dout.

    Returns:
    - dx: (B, T, C)
    """
    return dout.copy()
