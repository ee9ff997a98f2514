"""GELU with GPT-2's tanh approximation.

    gelu(x) = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)

Because 0.5 (1 + tanh(u)) = sigmoid(2u), we compute gelu(x) = x * s with s = sigmoid(2u):
one exp instead of a tanh (faster), and the derivative reuses s:
    d gelu / dx = s + x * 2 s (1 - s) * du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
"""

import math

import numpy as np

from ._checks import check_float

_K = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _sigmoid_2u(x):
    """s = sigmoid(2u), computed stably (no overflow in exp for large |x|)."""
    t = x.dtype.type
    u2 = t(2 * _K) * (x + t(_A) * (x * x * x))  # 2u; x*x*x, never x**3 (slow in float32)
    # sigmoid(z) = 1 / (1 + exp(-z)); for very negative z use exp(z) / (1 + exp(z)) instead.
    e = np.exp(-np.abs(u2))
    return np.where(u2 >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def gelu_forward(x):
    """Inputs: x of any shape. Returns (out, cache): out = gelu(x), same shape and dtype."""
    check_float("x", x)
    s = _sigmoid_2u(x)
    out = x * s
    cache = (x, s)
    return out, cache


def gelu_backward(dout, cache):
    """Returns dx = dout * gelu'(x), with gelu'(x) = s + 2 x s (1 - s) du/dx."""
    x, s = cache
    t = x.dtype.type
    du = t(_K) * (t(1.0) + t(3 * _A) * (x * x))  # du/dx
    dx = dout * (s + t(2.0) * x * s * (t(1.0) - s) * du)
    return dx
