"""Notebook 03 (linear, GELU, MLP): the backward passes of the linear layer and of GELU."""

import math

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run

# linear -------------------------------------------------------------------------------------


def _lin(dout, cache):
    return L.linear_backward(dout, cache)


def _lin_db_not_summed(dout, cache):
    dx, dw, _ = _lin(dout, cache)
    return dx, dw, dout.copy()


def _lin_db_sum_b_only(dout, cache):
    dx, dw, _ = _lin(dout, cache)
    return dx, dw, dout.sum(0)


def _lin_dw_transposed(dout, cache):
    dx, dw, db = _lin(dout, cache)
    return dx, dw.T, db


def _lin_dw_mean(dout, cache):
    dx, dw, db = _lin(dout, cache)
    n = dout.size // dout.shape[-1]
    return dx, dw / n, db / n


def _lin_dw_last(dout, cache):
    x, w = cache
    dx, _, db = _lin(dout, cache)
    return dx, x[-1].reshape(-1, w.shape[0]).T @ dout[-1].reshape(-1, w.shape[1]), db


LINEAR_MISTAKES = [
    ("db not summed over positions: b is added at every (b, t), so db sums dout over B and T",
     _lin_db_not_summed),
    ("db summed over B only: sum over every leading axis (B and T)", _lin_db_sum_b_only),
    ("dw = dout.T @ x (transposed): dw must have w's shape (Din, Dout)", _lin_dw_transposed),
    ("averaged over positions instead of summed (the loss already holds the mean)",
     _lin_dw_mean),
    ("dw from the last sequence only: flatten B and T before the product",
     _lin_dw_last),
]


def check_linear_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w) and x of shape (B, T, Din).
    Tried with (B, T) = (2, 3) and (1, 1), Din != Dout, then in float32."""
    rng = np.random.default_rng(2)

    def case(B, T, Din, Dout, seed, label="", dtype=np.float64):
        return grad_case(L.linear_forward, {"x": randn(rng, B, T, Din), "w": randn(rng, Din, Dout),
                                            "b": randn(rng, Dout)}, ["x", "w", "b"], seed=seed,
                         label=label, dtype=dtype)

    cases = [case(2, 3, 4, 5, 2), case(1, 1, 3, 2, 3, "B=1, T=1"),
             case(2, 3, 4, 5, 4, "float32", np.float32)]
    return run("linear backward", fn, cases, LINEAR_MISTAKES, {
        "call": "shapes: x (B, T, Din), w (Din, Dout), dout (B, T, Dout); each gradient has "
                "the shape of what it is the gradient of",
        "dx": "every output y_j uses x through w[:, j]: which product gives x's shape?",
        "dw": "w[i, j] is used at every position: sum x_i * dout_j over all (b, t)",
        "db": "b is used at every position"}, show)


# GELU ---------------------------------------------------------------------------------------


_K = math.sqrt(2.0 / math.pi)


def _gelu_erf(dout, cache):
    x, _ = cache
    erf = np.vectorize(math.erf)
    return dout * (0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) /
                   math.sqrt(2 * math.pi))


def _gelu_no_s1s(dout, cache):
    x, s = cache
    return dout * s


def _gelu_no_cubic(dout, cache):
    x, s = cache
    return dout * (s + x * 2 * s * (1 - s) * _K)


def _gelu_no_dout(dout, cache):
    x, s = cache
    return s * (1 + 2 * x * (1 - s) * _K * (1 + 3 * 0.044715 * x * x))


def _gelu_no_chain2(dout, cache):
    x, s = cache
    return dout * (s + x * s * (1 - s) * _K * (1 + 3 * 0.044715 * x * x))


GELU_MISTAKES = [
    ("used the exact erf-GELU derivative: this GELU is GPT-2's tanh approximation",
     _gelu_erf),
    ("dropped the s(1-s) term: s depends on x too (product rule on x * s(x))", _gelu_no_s1s),
    ("du/dx without the cubic term: u = sqrt(2/pi) (x + 0.044715 x^3)", _gelu_no_cubic),
    ("forgot to multiply by dout (the chain rule's upstream gradient)", _gelu_no_dout),
    ("s = sigmoid(2u), so ds/du = 2s(1-s), not s(1-s)",
     _gelu_no_chain2),
]


def check_gelu_backward(fn, show=True):
    """fn(dout, cache) -> dx, with cache = (x, s), s = sigmoid(2u) as in layers/gelu.py.
    Tried on a grid over [-3, 3] (0 included), on random x in the tails out to |x| = 6,
    then in float32."""
    # a grid over the interesting range: both tails and the bend near 0
    x = np.linspace(-3.0, 3.0, 21).reshape(3, 7)
    tails = np.random.default_rng(3).uniform(-6.0, 6.0, (2, 5))
    cases = [grad_case(L.gelu_forward, {"x": x}, ["x"], seed=3),
             grad_case(L.gelu_forward, {"x": tails}, ["x"], seed=4, label="|x| up to 6"),
             grad_case(L.gelu_forward, {"x": x}, ["x"], seed=5, label="float32",
                       dtype=np.float32)]
    return run("GELU backward", fn, cases, GELU_MISTAKES, {
        "dx": "gelu(x) = x * s(x): the product rule, and s depends on x through u"}, show)
