"""Llama's gated feed-forward block: SwiGLU, with SiLU as the gate's activation.

    a = x @ w_gate,   b = x @ w_up                       (B, T, I) each
    h = silu(a) * b,  silu(a) = a * sigmoid(a)          (B, T, I)
    out = h @ w_down                                    (B, T, C)

No biases. The gate decides, unit by unit, how much of the linear "up" signal b passes.
Three weight matrices instead of GPT-2's two, so Llama's intermediate size I is usually about
8C/3 instead of 4C, for the same number of parameters.

Shapes: B batch, T time, C channels, I intermediate size (hidden units).
"""

import numpy as np


def _sigmoid(a):
    """1 / (1 + exp(-a)) in a's dtype. exp(-a) overflows to inf for very negative a, and
    1 / (1 + inf) = 0 is the right limit: the overflow is harmless, so it is silenced."""
    with np.errstate(over="ignore"):
        s = np.exp(-a)
    s += a.dtype.type(1.0)
    return np.reciprocal(s, out=s)


def silu_forward(x):
    """silu(x) = x * sigmoid(x) (also called swish). Returns (out, cache (x, s))."""
    s = _sigmoid(x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """silu'(x) = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x). Returns dx."""
    x, s = cache
    one = x.dtype.type(1.0)
    return dout * s * (one + x * (one - s))


def swiglu_mlp_forward(x, w_gate, w_up, w_down):
    """Inputs:
    - x: (B, T, C)
    - w_gate: (C, I), w_up: (C, I), w_down: (I, C)   (stored (in, out), no biases)

    Returns (out, cache): out (B, T, C).
    """
    C, I = w_gate.shape
    x2 = x.reshape(-1, C)  # (N, C): one GEMM over all rows
    a = x2 @ w_gate  # (N, I) gate pre-activation
    b = x2 @ w_up  # (N, I) the "up" signal
    g, silu_cache = silu_forward(a)  # (N, I)
    h = g * b  # (N, I)
    out = h @ w_down  # (N, C)
    return out.reshape(x.shape), (x, w_gate, w_up, w_down, b, silu_cache)


def swiglu_mlp_backward(dout, cache):
    """Backward of out = (silu(a) * b) @ w_down.

    The product h = silu(a) * b splits the gradient over its two paths: the up path gets
    db = dh * silu(a), the gate path da = dh * b * silu'(a); x feeds both, so dx adds them:
        dx = da @ w_gate^T + db @ w_up^T

    Returns (dx, dw_gate, dw_up, dw_down).
    """
    x, w_gate, w_up, w_down, b, silu_cache = cache
    C = x.shape[-1]
    x2 = x.reshape(-1, C)  # (N, C)
    g = silu_cache[0] * silu_cache[1]  # (N, I) silu(a), recomputed (cheaper than keeping it)
    dout2 = dout.reshape(-1, C)  # (N, C)
    dw_down = (g * b).T @ dout2  # (I, C); h = g * b
    dh = dout2 @ w_down.T  # (N, I)
    db = dh * g  # (N, I) the up path
    da = silu_backward(dh * b, silu_cache)  # (N, I) the gate path
    dx = da @ w_gate.T  # (N, C)
    dx += db @ w_up.T
    return dx.reshape(x.shape), x2.T @ da, x2.T @ db, dw_down
