"""Notebook 04 (layer norm): the layer norm's backward pass."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run, sum_rows


def _ln_parts(dout, cache):
    x, w, mean, rstd = cache
    xhat = (x - mean) * rstd
    g = dout * w
    return xhat, g, rstd, sum_rows(dout * xhat), sum_rows(dout)


def _ln_no_mean(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True)), dw, db


def _ln_no_var(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return rstd * (g - g.mean(-1, keepdims=True)), dw, db


def _ln_no_w(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    g = dout
    return rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)), \
        dw, db


def _ln_dw_not_summed(dout, cache):
    dx = L.layernorm_backward(dout, cache)[0]
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return dx, dout * xhat, dout


def _ln_dw_no_xhat(dout, cache):
    dx, _, db = L.layernorm_backward(dout, cache)
    return dx, db.copy(), db


def _ln_no_rstd(dout, cache):
    dx, dw, db = L.layernorm_backward(dout, cache)
    return dx / cache[3], dw, db


LAYERNORM_MISTAKES = [
    ("the -mean(g) term is missing: the mean of x depends on every x_i, so each dx_i gets a "
     "share of -mean(g)", _ln_no_mean),
    ("the -xhat*mean(g*xhat) term is missing: the variance (so rstd) depends on every x_i too",
     _ln_no_var),
    ("forgot the gain: the gradient reaching xhat is g = dout * w", _ln_no_w),
    ("dw and db not summed over B and T: w and b are used at every position",
     _ln_dw_not_summed),
    ("dw = sum(dout): y = w * xhat + b, so dw sums dout * xhat", _ln_dw_no_xhat),
    ("the factor rstd is missing: xhat = (x - mean) * rstd", _ln_no_rstd),
]


def check_layernorm_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w, mean, rstd). Tried on random
    inputs far from zero mean, gains and biases, then (once that passes) with a single
    position (B = T = 1) and in float32."""
    rng = np.random.default_rng(4)

    def args(*shape):
        return {"x": randn(rng, *shape, scale=3.0) + 1.5, "w": randn(rng, shape[-1]),
                "b": randn(rng, shape[-1])}

    cases = [grad_case(L.layernorm_forward, args(2, 3, 6), ["x", "w", "b"], seed=4),
             grad_case(L.layernorm_forward, args(1, 1, 5), ["x", "w", "b"], seed=5,
                       label="B=1, T=1"),
             grad_case(L.layernorm_forward, args(2, 3, 6), ["x", "w", "b"], seed=6,
                       label="float32", dtype=np.float32)]
    cases[1].after_pass = True  # a shape edge: worth a line once the main case passes
    return run("layer norm backward", fn, cases, LAYERNORM_MISTAKES, {
        "dx": "x reaches xhat three ways: directly, through the mean and through rstd",
        "dw": "y = w * xhat + b, and w is used at every position",
        "db": "b is used at every position"}, show)
