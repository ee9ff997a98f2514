"""Grouped-query causal attention (GQA), as in Llama 2/3, with rotary positions.

    q = x @ w_q,  k = x @ w_k,  v = x @ w_v        nh query heads, nkv key/value heads
    q, k = rope(q), rope(k)                        positions enter here (layers/rope.py)
    att  = softmax(q k^T / sqrt(hs) + mask)        query head h reads key/value head h // g
    y    = att @ v                                 merge the heads back into C channels
    out  = y @ w_o

with g = nh / nkv query heads per key/value head (Hugging Face's repeat_kv layout: key/value
head j serves the query heads j*g .. j*g + g - 1). nkv = nh is ordinary multi-head attention,
nkv = 1 is multi-query attention. Fewer key/value heads mean a KV cache g times smaller
when generating, which is why Llama uses them; the query heads keep their number.

Backward: a key/value head is used by the g query heads of its group, so its gradient is the
sum of the g gradients (as a tensor used twice gets the sum of both contributions).

Two implementations of the heads (q, k, v -> y) that compute the same numbers:
- `gqa_reference_forward` / `gqa_reference_backward`: plain loops over batch, query head and
  time step (attention.py's reference_heads_*, which serve multi-head attention too: it is
  the case g = 1). Read this one first.
- `gqa_core_forward` / `gqa_core_backward`: vectorised. The g query heads of a group are
  stacked along time, (g, T, hs) -> (g*T, hs), so one matmul per group multiplies them with
  their shared keys: no copy of k or v per query head, and dk, dv come out already summed
  over the group.
`gqa_attention_forward` / `_backward` is the whole layer (projections, RoPE, heads, output
projection), `gqa_cached_forward` its forward with a KV cache for generation.

The mask is additive with -inf (the softmax helpers of attention.py): masked probabilities
are exactly 0. Llama's attention has no biases and no dropout.

Shapes: B batch, T time, C channels, nh query heads, nkv key/value heads, hs head size
(C = nh * hs), g = nh // nkv.
"""

from typing import NamedTuple

import numpy as np

from .attention import (
    causal_mask,
    masked_softmax_,
    reference_heads_backward,
    reference_heads_forward,
    softmax_backward_,
)
from .rope import rope_backward, rope_forward


class GQACoreCache(NamedTuple):
    """What gqa_core_backward needs."""

    q: np.ndarray  # (B, nh, T, hs) after RoPE
    k: np.ndarray  # (B, nkv, T, hs) after RoPE
    v: np.ndarray  # (B, nkv, T, hs)
    probs: np.ndarray  # (B, nh, T, T) softmax output


class GQAAttentionCache(NamedTuple):
    """What gqa_attention_backward needs."""

    x: np.ndarray  # (B, T, C) the layer's input
    w_q: np.ndarray  # (C, nh*hs)
    w_k: np.ndarray  # (C, nkv*hs)
    w_v: np.ndarray  # (C, nkv*hs)
    w_o: np.ndarray  # (nh*hs, C)
    rope: tuple  # (cos, sin) of rope_forward, for q and k alike
    core: GQACoreCache  # the heads; core.probs (B, nh, T, T) for plotting
    y: np.ndarray  # (B, T, nh*hs) the heads' output, w_o's input


# --- vectorised (hot path) ---------------------------------------------------------------


def gqa_core_forward(q, k, v):
    """The heads of grouped-query causal attention: softmax(q k^T / sqrt(hs) + mask) v, query
    head h using key/value head h // g.

    Inputs:
    - q: (B, nh, T, hs), after RoPE
    - k, v: (B, nkv, T, hs), k after RoPE; nkv divides nh

    Returns (y, cache): y (B, T, nh * hs), the heads side by side as w_o wants them;
    cache a GQACoreCache (cache.probs (B, nh, T, T) are the attention probabilities).
    """
    B, nh, T, hs = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    q = np.ascontiguousarray(q)  # so that q[b] reshapes to (nkv, g*T, hs) without a copy
    qs = q * q.dtype.type(1.0 / np.sqrt(hs))  # (B, nh, T, hs) scale q, cheaper than scores
    att = np.empty((B, nh, T, T), dtype=q.dtype)  # probabilities, kept for backward
    y = np.empty((B, T, nh, hs), dtype=q.dtype)
    # One sequence at a time (as attention_core_forward: its scores stay in the CPU cache)
    for b in range(B):
        # a group's g query heads stacked along time: (nkv, g*T, hs) @ (nkv, hs, T)
        scores = att[b].reshape(nkv, g * T, T)  # a view of att[b] (nh, T, T)
        np.matmul(qs[b].reshape(nkv, g * T, hs), k[b].swapaxes(-1, -2), out=scores)
        masked_softmax_(att[b])  # (nh, T, T), row by row, in place
        yb = scores @ v[b]  # (nkv, g*T, hs)
        y[b] = yb.reshape(nh, T, hs).transpose(1, 0, 2)  # (T, nh, hs)
    return y.reshape(B, T, nh * hs), GQACoreCache(q, k, v, att)


def gqa_core_backward(dy, cache):
    """Backward of gqa_core_forward.

    Per group, with the g query heads stacked along time as in the forward:
        dv = P^T dy,   dP = dy v^T,   dS = softmax backward of dP,
        dq = dS k / sqrt(hs),   dk = dS^T q / sqrt(hs)
    The products P^T dy and dS^T q run over all g*T stacked rows, so they sum over the
    group's query heads by themselves: the summed gradient of a shared key/value head.

    Returns (dq, dk, dv): (B, nh, T, hs), (B, nkv, T, hs), (B, nkv, T, hs).
    """
    q, k, v, att = cache
    B, nh, T, hs = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    dy = dy.reshape(B, T, nh, hs)
    scale = q.dtype.type(1.0 / np.sqrt(hs))
    dq = np.empty_like(q)  # (B, nh, T, hs)
    dk = np.empty(k.shape, dtype=q.dtype)  # (B, nkv, T, hs)
    dv = np.empty(v.shape, dtype=q.dtype)
    datt = np.empty((nh, T, T), dtype=q.dtype)  # one sequence's, reused
    for b in range(B):
        dyb = np.ascontiguousarray(dy[b].transpose(1, 0, 2)).reshape(nkv, g * T, hs)
        p = att[b].reshape(nkv, g * T, T)  # (nkv, g*T, T)
        np.matmul(p.swapaxes(-1, -2), dyb, out=dv[b])  # (nkv, T, hs): summed over the group
        d = datt.reshape(nkv, g * T, T)  # a view of datt
        np.matmul(dyb, v[b].swapaxes(-1, -2), out=d)
        softmax_backward_(datt, att[b])  # gradient of the scaled scores, (nh, T, T)
        np.matmul(d, k[b], out=dq[b].reshape(nkv, g * T, hs))
        dq[b] *= scale
        np.matmul(d.swapaxes(-1, -2), q[b].reshape(nkv, g * T, hs), out=dk[b])  # group sum
        dk[b] *= scale
    return dq, dk, dv


# --- loop reference (for teaching and tests) ---------------------------------------------


def gqa_reference_forward(q, k, v):
    """Same contract and numbers as gqa_core_forward, with the loops of
    attention.reference_heads_forward: query head h reads key/value head h // g."""
    B, nh, T, hs = q.shape
    y, probs = reference_heads_forward(q, k, v)  # (B, nh, T, hs)
    return y.transpose(0, 2, 1, 3).reshape(B, T, nh * hs), GQACoreCache(q, k, v, probs)


def gqa_reference_backward(dy, cache):
    """Backward of gqa_reference_forward: every query head of a group adds (+=) into the
    gradient of the key/value head they share.

    Returns (dq, dk, dv).
    """
    q, k, v, probs = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    return reference_heads_backward(dy, q, k, v, probs)


# --- the whole layer ---------------------------------------------------------------------


def _to_heads(a, n):
    """(B, T, n*hs) -> (B, n, T, hs), a view: n heads of hs channels each."""
    B, T, D = a.shape
    return a.reshape(B, T, n, D // n).transpose(0, 2, 1, 3)


def _from_heads(a):
    """(B, n, T, hs) -> (B, T, n*hs), the inverse of _to_heads (a copy)."""
    B, n, T, hs = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, n * hs)


def gqa_attention_forward(x, w_q, w_k, w_v, w_o, n_head, n_kv_head, cos, sin, *,
                          heads=gqa_core_forward):
    """Grouped-query causal self-attention with rotary positions, no biases (Llama's).

    Inputs:
    - x: (B, T, C)
    - w_q: (C, nh*hs), w_k: (C, nkv*hs), w_v: (C, nkv*hs), w_o: (nh*hs, C), stored (in, out)
    - n_head, n_kv_head: nh and nkv (nkv divides nh)
    - cos, sin: (T, hs) from rope_table for positions 0 .. T-1
    - heads: the heads' forward, gqa_core_forward's contract (the fast kernels pass their
      twin of it here, and theirs of gqa_core_backward to the backward)

    Returns (out, cache): out (B, T, C); cache a GQAAttentionCache.
    """
    B, T, C = x.shape
    x2 = x.reshape(B * T, C)  # one GEMM over all rows per projection
    q, rope = rope_forward(_to_heads((x2 @ w_q).reshape(B, T, -1), n_head), cos, sin)
    k, _ = rope_forward(_to_heads((x2 @ w_k).reshape(B, T, -1), n_kv_head), cos, sin)
    v = _to_heads((x2 @ w_v).reshape(B, T, -1), n_kv_head)  # (B, nkv, T, hs)
    y, core = heads(q, k, v)  # (B, T, nh*hs); q (B, nh, T, hs), k (B, nkv, T, hs)
    out = (y.reshape(B * T, -1) @ w_o).reshape(B, T, C)  # (B, T, C)
    return out, GQAAttentionCache(x, w_q, w_k, w_v, w_o, rope, core, y)


def gqa_attention_backward(dout, cache, *, heads=gqa_core_backward):
    """Backward of gqa_attention_forward: w_o, the heads, RoPE (a rotation by -phi), the
    three projections; x feeds all three, so dx is the sum of their contributions.
    heads: the heads' backward, the twin of the forward's heads.

    Returns (dx, dw_q, dw_k, dw_v, dw_o).
    """
    x, w_q, w_k, w_v, w_o, rope, core, y = cache
    B, T, C = x.shape
    dout2 = dout.reshape(B * T, C)  # (N, C)
    dw_o = y.reshape(B * T, -1).T @ dout2  # (nh*hs, C)
    dy = (dout2 @ w_o.T).reshape(y.shape)  # (B, T, nh*hs)
    dq, dk, dv = heads(dy, core)  # (B, nh, T, hs), (B, nkv, T, hs) x 2
    dq = _from_heads(rope_backward(dq, rope)).reshape(B * T, -1)  # (N, nh*hs)
    dk = _from_heads(rope_backward(dk, rope)).reshape(B * T, -1)  # (N, nkv*hs)
    dv = _from_heads(dv).reshape(B * T, -1)  # (N, nkv*hs)
    x2 = x.reshape(B * T, C)
    dx = dq @ w_q.T  # (N, C): x feeds q, k and v
    dx += dk @ w_k.T
    dx += dv @ w_v.T
    return dx.reshape(x.shape), x2.T @ dq, x2.T @ dk, x2.T @ dv, dw_o


# --- inference with a key/value cache (generation) ----------------------------------------


def gqa_cached_forward(x, w_q, w_k, w_v, w_o, n_head, n_kv_head, cos, sin, past=None):
    """The layer's forward for generation: only the new positions are computed; the keys
    (already rotated) and values of earlier positions come from the cache. Forward only.

    The cache holds nkv heads, not nh: g = nh / nkv times less memory than multi-head
    attention's, the point of GQA.

    Inputs:
    - x: (B, T_new, C), the new positions only
    - w_q, w_k, w_v, w_o, n_head, n_kv_head: as in gqa_attention_forward
    - cos, sin: (T_new, hs), the rows of rope_table for the new positions T_past, ...
    - past: (k, v), each (B, nkv, T_past, hs), or None for an empty cache

    Returns (out, (k, v)): out (B, T_new, C); k, v (B, nkv, T_past + T_new, hs).
    """
    B, T_new, C = x.shape
    g = n_head // n_kv_head
    x2 = x.reshape(B * T_new, C)
    q, _ = rope_forward(_to_heads((x2 @ w_q).reshape(B, T_new, -1), n_head), cos, sin)
    k, _ = rope_forward(_to_heads((x2 @ w_k).reshape(B, T_new, -1), n_kv_head), cos, sin)
    v = _to_heads((x2 @ w_v).reshape(B, T_new, -1), n_kv_head)  # (B, nkv, T_new, hs)
    if past is not None:
        k = np.concatenate([past[0], k], axis=2)  # (B, nkv, T_all, hs)
        v = np.concatenate([past[1], v], axis=2)
    T_all, hs = k.shape[2], k.shape[3]
    qg = q.reshape(B, n_kv_head, g * T_new, hs)  # the group's query heads stacked along time
    att = qg @ k.swapaxes(-1, -2)  # (B, nkv, g*T_new, T_all)
    att *= x.dtype.type(1.0 / np.sqrt(hs))
    att = att.reshape(B, n_head, T_new, T_all)
    masked_softmax_(att, causal_mask(T_all, x.dtype)[T_all - T_new:])  # query i at T_past + i
    y = att.reshape(B, n_kv_head, g * T_new, T_all) @ v  # (B, nkv, g*T_new, hs)
    y = _from_heads(y.reshape(B, n_head, T_new, hs))  # (B, T_new, nh*hs)
    return (y.reshape(B * T_new, -1) @ w_o).reshape(B, T_new, C), (k, v)
