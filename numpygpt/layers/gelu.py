"""GELU with GPT-2's tanh approximation.

    gelu(x)  = 0.5 x (1 + tanh(u)),                         u = sqrt(2/pi) (x + 0.044715 x^3)
    gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx,
                                                   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)

Two implementations that compute the same numbers:
- `gelu_reference_forward` / `gelu_reference_backward`: the formulas above, line by line.
  Read this one first.
- `gelu_forward` / `gelu_backward`: the hot path used for training. Because
  0.5 (1 + tanh(u)) = sigmoid(2u), it computes gelu(x) = x * s with s = sigmoid(2u): one exp
  instead of a tanh (faster), and the derivative reuses s:
      gelu'(x) = s + x * 2 s (1 - s) * du/dx = s (1 + x (1 - s) 2 du/dx)
  This is elementwise work on the largest activations of the model (B, T, 4C), so both passes
  run in place on one scratch buffer instead of allocating a temporary per operation, one
  cache-sized block at a time (see below).
"""

import math

import numpy as np

_K = math.sqrt(2.0 / math.pi)
_A = 0.044715


# --- plain reference (for teaching and tests) ----------------------------------------------


def gelu_reference_forward(x):
    """Inputs: x of any shape. Returns (out, cache): out = gelu(x); the cache is x."""
    u = _K * (x + _A * x * x * x)
    out = 0.5 * x * (1 + np.tanh(u))
    return out, x


def gelu_reference_backward(dout, cache):
    """Returns dx = dout * gelu'(x), by the product rule on 0.5 x (1 + tanh(u))."""
    x = cache
    tanh_u = np.tanh(_K * (x + _A * x * x * x))
    du_dx = _K * (1 + 3 * _A * x**2)
    return dout * (0.5 * (1 + tanh_u) + 0.5 * x * (1 - tanh_u**2) * du_dx)


# --- in place, with a sigmoid, in cache-sized blocks (hot path) ------------------------------
#
# Each line of the chains below is one pass over the array. On the MLP's (B, T, 4C)
# activations (25 MB at the small config) every pass would stream the whole array from memory
# and back, eight times over: the time goes into memory traffic, not arithmetic. So each chain
# runs on one block of BLOCK elements at a time, small enough for the block's arrays to stay
# in the core's cache between passes. Every element sees the same operations in the same
# order as in one pass over the whole array: the result is bit-identical. (Measured on a
# 2-core AMD EPYC at (16, 256, 1536) float32: the backward about 1.5x faster, the forward,
# whose exp is arithmetic-bound, less. Threads over the blocks did not pay there.)

BLOCK = 1 << 16  # elements per block (256 kB of float32 per array)


def _in_blocks(chain, *arrays):
    """chain(*blocks) for consecutive blocks of BLOCK elements of the same-shaped,
    C-contiguous arrays (the chain writes its result into the last ones)."""
    flat = [a.reshape(-1) for a in arrays]  # views of the same memory
    for start in range(0, flat[0].size, BLOCK):
        chain(*(f[start:start + BLOCK] for f in flat))


def _gelu_forward_block(x, s, out):
    """On one block: s = sigmoid(2u), out = x * s."""
    scalar = x.dtype.type  # the constants below in x's dtype, rounded once
    np.multiply(x, x, out=s)  # s becomes sigmoid(2u) step by step
    s *= scalar(2 * _K * _A)
    s += scalar(2 * _K)
    s *= x  # 2u = 2K (x + A x^3) = x (2K + 2KA x^2): products, no slow power
    # s = sigmoid(2u) = 1 / (1 + exp(-2u)). For very negative u, exp(-2u) overflows to inf
    # and 1 / (1 + inf) = 0, the right limit: the overflow is harmless, so we silence it.
    np.negative(s, out=s)
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += scalar(1.0)
    np.reciprocal(s, out=s)
    np.multiply(x, s, out=out)


def _gelu_backward_block(x, s, dout, g):
    """On one block: g = dout * s (1 + x (1 - s) 2 du/dx)."""
    scalar = x.dtype.type
    np.multiply(x, x, out=g)  # g becomes gelu'(x) step by step
    g *= scalar(6 * _K * _A)
    g += scalar(2 * _K)  # 2 du/dx = 2K (1 + 3A x^2)
    g *= x
    g *= scalar(1.0) - s
    g += scalar(1.0)
    g *= s
    g *= dout


def gelu_forward(x):
    """Inputs: x of any shape. Returns (out, cache): out = gelu(x), same shape and dtype;
    the cache is (x, s) with s = sigmoid(2u)."""
    x = np.ascontiguousarray(x)
    s, out = np.empty_like(x), np.empty_like(x)
    _in_blocks(_gelu_forward_block, x, s, out)
    return out, (x, s)


def gelu_backward(dout, cache):
    """Returns dx = dout * gelu'(x), with gelu'(x) = s (1 + x (1 - s) 2 du/dx)."""
    x, s = cache
    g = np.empty_like(x)
    _in_blocks(_gelu_backward_block, x, s, np.ascontiguousarray(dout, dtype=x.dtype), g)
    return g
