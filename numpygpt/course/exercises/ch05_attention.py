"""Notebook 05 (attention): the softmax's backward pass, then causal multi-head attention's."""

import math

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run, variant

# softmax ------------------------------------------------------------------------------------


SOFTMAX_MISTAKES = [
    ("the -sum(dp*p) term is missing: every p_j depends on every score s_i, not only p_i",
     lambda p, dp: p * dp),
    ("only the diagonal of the Jacobian: dp*p*(1-p) misses how every other p_j depends on s_i",
     lambda p, dp: dp * p * (1 - p)),
    ("summed over the wrong axis: the softmax runs along the last axis",
     lambda p, dp: p * (dp - (dp * p).sum(0, keepdims=True))),
    ("summed over every axis: the sum runs along each row only (keepdims on the last axis)",
     lambda p, dp: p * (dp - (dp * p).sum())),
]


def _softmax_forward(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return p, p


def check_softmax_backward(fn, show=True):
    """fn(p, dp) -> ds: the gradient through p = softmax(s) along the last axis. Tried on
    random scores, on causally masked ones (p = 0 above the diagonal: ds must be 0 there,
    whatever dp is), then in float32."""
    rng = np.random.default_rng(5)
    masked = randn(rng, 2, 4, 4)
    masked[:, np.triu(np.ones((4, 4), bool), 1)] = -np.inf

    def case(s, seed, label="", dtype=np.float64):
        return grad_case(_softmax_forward, {"s": s}, ["s"], seed=seed, label=label,
                         learner_args=lambda dp, p, out: (p, dp), arg_names=("p", "dp"),
                         dtype=dtype)

    cases = [case(randn(rng, 2, 3, 5), 5), case(masked, 6, "causal mask: p = 0 above the "
                                                           "diagonal"),
             case(randn(rng, 2, 3, 5), 7, "float32", np.float32)]
    return run("softmax backward", fn, cases, SOFTMAX_MISTAKES, {
        "ds": "p_j = exp(s_j) / sum exp: write dp_j/ds_i for i = j and for i != j"}, show)


# attention ----------------------------------------------------------------------------------


def _attention_grads(dout, cache, scale=True, full_softmax=True, causal=True,
                     att_transposed=False):
    """attention's backward written out, with switches that make the usual mistakes."""
    qkv_cache, q, k, v, att, _, proj_cache = cache
    B, nh, T, hs = q.shape
    dy, dw_proj, db_proj = L.linear_backward(dout, proj_cache)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    if not causal:  # the probabilities recomputed without the mask
        s = q @ k.swapaxes(-1, -2) / math.sqrt(hs)
        att = np.exp(s - s.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
    dv = (att if att_transposed else att.swapaxes(-1, -2)) @ dy
    datt = dy @ v.swapaxes(-1, -2)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) if full_softmax else att * datt
    c = 1 / math.sqrt(hs) if scale else 1.0
    dq, dk = ds @ k * c, ds.swapaxes(-1, -2) @ q * c
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)
    dx, dw_attn, db_attn = L.linear_backward(dqkv, qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


ATTENTION_MISTAKES = [
    ("forgot the 1/sqrt(hs) scale in the backward: the scores are (q k^T) / sqrt(hs), so dq "
     "and dk carry it too", variant(_attention_grads, scale=False)),
    ("causal mask not applied in the backward: probabilities recomputed without the mask let "
     "the future leak in", variant(_attention_grads, causal=False)),
    ("the softmax backward lacks its -sum(dp*p) term",
     variant(_attention_grads, full_softmax=False)),
    ("dv = att @ dy: it is att^T @ dy (value s is read by every query t >= s)",
     variant(_attention_grads, att_transposed=True)),
]


def check_attention_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw_attn, db_attn, dw_proj, db_proj) for causal multi-head
    attention, with the AttentionCache made by layers.attention_forward. Tried with 2 heads,
    with 3 heads and B = 1, with a single position (T = 1), then in float32."""
    rng = np.random.default_rng(6)

    def case(B, T, C, nh, seed, label="", dtype=np.float64):
        args = {"x": randn(rng, B, T, C), "w_attn": randn(rng, C, 3 * C, scale=0.5),
                "b_attn": randn(rng, 3 * C, scale=0.5), "w_proj": randn(rng, C, C, scale=0.5),
                "b_proj": randn(rng, C)}

        def forward(*a):
            return L.attention_forward(*a, n_head=nh)

        # Compared with the package's backward rather than finite differences: the key bias
        # has a zero gradient (softmax ignores a shift of all scores) that differences only
        # resolve to ~1e-11, which would look like an error.
        return grad_case(forward, args, list(args), seed=seed, label=label,
                         reference=L.attention_backward, dtype=dtype)

    cases = [case(2, 4, 8, 2, 6), case(1, 5, 6, 3, 7, "B=1, T=5, 3 heads"),
             case(2, 1, 4, 2, 8, "T=1"), case(2, 4, 8, 2, 9, "float32", np.float32)]
    return run("attention backward", fn, cases, ATTENTION_MISTAKES, {
        "call": "shapes: q, k, v (B, nh, T, hs), cache.probs (B, nh, T, T), dout (B, T, C)",
        "dx": "x feeds q, k and v: its gradient is the sum of the three paths",
        "dw_attn": "dq, dk and dv stacked back in the layout of the qkv projection's output",
        "db_attn": "the key part of b_attn gets exactly 0: softmax ignores a shift shared by "
                   "a whole row of scores"}, show)
