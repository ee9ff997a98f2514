"""GELU with GPT-2's tanh approximation.

    gelu(x)  = 0.5 x (1 + tanh(u)),                         u = sqrt(2/pi) (x + 0.044715 x^3)
    gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx,
                                                   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)

Two forms that compute the same numbers (to float rounding):
- `gelu_reference_forward` / `gelu_reference_backward`: the formulas above, line by line.
  Read this one first.
- `gelu_forward` / `gelu_backward`: the layer the models use. It writes gelu(x) = x * s with
  s = 0.5 (1 + tanh(u)) = sigmoid(2u), keeps s, and the derivative reuses it:
      gelu'(x) = s + x * 2 s (1 - s) * du/dx = s (1 + x (1 - s) 2 du/dx)
Its fast twin (numpygpt/kernels/fast.py) runs the same operations in place, one cache-sized
block at a time, and gives the same bits; on a CPU where NumPy's tanh is slower than its exp
(its AVX2 loops), it computes s as 1 / (1 + exp(-2u)) instead: the same s, to float rounding.

Shapes: any; GELU is elementwise.
"""

import math

import numpy as np

_K = math.sqrt(2.0 / math.pi)
_A = 0.044715


def gelu_reference_forward(x):
    """Inputs: x of any shape. Returns (out, cache): out = gelu(x); the cache is x."""
    u = _K * (x + _A * x * x * x)  # x * x * x: x**3 is much slower on float32
    out = 0.5 * x * (1 + np.tanh(u))
    return out, x


def gelu_reference_backward(dout, cache):
    """Returns dx = dout * gelu'(x), by the product rule on 0.5 x (1 + tanh(u))."""
    x = cache
    tanh_u = np.tanh(_K * (x + _A * x * x * x))
    du_dx = _K * (1 + 3 * _A * x * x)
    return dout * (0.5 * (1 + tanh_u) + 0.5 * x * (1 - tanh_u * tanh_u) * du_dx)


def gelu_forward(x):
    """Inputs: x of any shape. Returns (out, cache): out = gelu(x), same shape and dtype;
    the cache is (x, s) with s = 0.5 (1 + tanh(u)) = sigmoid(2u)."""
    u = (x * x * (_K * _A) + _K) * x  # u = K (x + A x^3), products, no power
    s = np.tanh(u) * 0.5 + 0.5  # sigmoid(2u)
    return x * s, (x, s)


def gelu_backward(dout, cache):
    """Returns dx = dout * gelu'(x), with gelu'(x) = s (1 + x (1 - s) 2 du/dx)."""
    x, s = cache
    two_du = x * x * (6 * _K * _A) + 2 * _K  # 2 du/dx = 2K (1 + 3A x^2)
    return (two_du * x * (1 - s) + 1) * s * dout
