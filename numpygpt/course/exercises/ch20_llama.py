"""Notebook 20 (from GPT-2 to Llama): RMSNorm's backward pass."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run, sum_rows, variant


def _rms_parts(dout, cache):
    x, rstd, w = cache
    xhat = x * rstd
    return xhat, dout * w, rstd, sum_rows(dout * xhat)


def _rms(dout, cache, mean_term=False, var_term=True, gain=True, C_divide=True):
    xhat, g, rstd, dw = _rms_parts(dout, cache)
    g = g if gain else dout
    C = xhat.shape[-1]
    proj = (g * xhat).sum(-1, keepdims=True) / (C if C_divide else 1)
    dx = g - (xhat * proj if var_term else 0.0) - (g.mean(-1, keepdims=True) if mean_term
                                                   else 0.0)
    return rstd * dx, dw


RMSNORM_MISTAKES = [
    ("layer norm's -mean(g) term is still there: RMSNorm subtracts no mean, so no x_i "
     "reaches the output through a mean", variant(_rms, mean_term=True)),
    ("the -xhat*mean(g*xhat) term is missing: rstd depends on every x_i, so each dx_i gets a "
     "share of the change of scale", variant(_rms, var_term=False)),
    ("forgot the gain: the gradient reaching xhat is g = dout * w",
     variant(_rms, gain=False)),
    ("a sum where the mean belongs: rstd = 1/sqrt(mean(x^2) + eps), so its derivative "
     "carries a 1/C", variant(_rms, C_divide=False)),
    ("dw not summed over B and T: w is used at every position",
     lambda d, c: (_rms(d, c)[0], d * c[0] * c[1])),
    ("dw = sum(dout * x): y = w * xhat, so dw sums dout * xhat (x times rstd)",
     lambda d, c: (_rms(d, c)[0], sum_rows(d * c[0]))),
]


def check_rmsnorm_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw), with cache = (x, rstd, w) as made by
    layers.rmsnorm_forward(x, w): x (B, T, C), rstd (B, T, 1) = 1 / sqrt(mean(x^2) + eps),
    w (C,). Tried on inputs far from zero mean (where layer norm's extra term would show),
    with T = 1, then in float32."""
    rng = np.random.default_rng(20)
    cases = [grad_case(L.rmsnorm_forward, {"x": randn(rng, *shape, scale=2.0) + 1.5,
                                           "w": randn(rng, shape[-1])},
                       ["x", "w"], seed=seed, label=label, dtype=dtype)
             for shape, seed, label, dtype in [((2, 3, 6), 20, "B=2 T=3 C=6", np.float64),
                                               ((1, 1, 5), 21, "B=1 T=1 C=5", np.float64),
                                               ((2, 3, 6), 22, "B=2 T=3 C=6, float32",
                                                np.float32)]]
    return run("RMSNorm backward", fn, cases, RMSNORM_MISTAKES, {
        "call": "shapes: dout (B, T, C); cache = (x, rstd, w), rstd of shape (B, T, 1)",
        "dx": "x reaches the output two ways: directly, and through rstd (every x_i changes "
              "the root mean square)",
        "dw": "y = w * xhat, and w is used at every position"}, show)
