"""Causal multi-head self-attention, as in GPT-2.

    qkv = x @ w_attn + b_attn                      split into q, k, v and into nh heads
    att = softmax(q k^T / sqrt(hs) + mask)         mask: -inf above the diagonal (no peeking ahead)
    y   = att @ v                                  merge the heads back into C channels
    out = y @ w_proj + b_proj

Two implementations that compute the same numbers:
- `attention_forward` / `attention_backward`: vectorised, batched matmuls over (B, nh, T, hs).
  This is the hot path used for training. Its middle part, the heads between the two linear
  maps, is a layer of its own, `attention_core_forward` / `attention_core_backward`: the model
  calls the three parts itself, so that a frozen or LoRA-adapted c_attn/c_proj can differ.
- `attention_reference_forward` / `attention_reference_backward`: plain loops over batch, head
  and time step, one query at a time. Slow, but each line is one idea; read this one first.

The mask is additive with -inf, so exp() makes the masked probabilities exactly 0 (every row
keeps at least its diagonal entry, so no row is all -inf).

Shapes: B batch, T time, C channels, nh heads, hs = C // nh head size.
"""

import functools
from typing import NamedTuple

import numpy as np

from .linear import linear_backward, linear_forward


class AttentionCache(NamedTuple):
    """What the backward pass needs. `probs` (B, nh, T, T) is also handy for plotting."""

    qkv_cache: tuple  # linear cache of the qkv projection (x, w_attn)
    q: np.ndarray  # (B, nh, T, hs)
    k: np.ndarray  # (B, nh, T, hs)
    v: np.ndarray  # (B, nh, T, hs)
    probs: np.ndarray  # (B, nh, T, T) softmax output, before dropout
    drop_mask: np.ndarray | None  # (B, nh, T, T) scaled keep-mask, None without dropout
    proj_cache: tuple  # linear cache of the output projection (y, w_proj)


@functools.lru_cache(maxsize=16)
def causal_mask(T, dtype=np.float32):
    """Additive mask (T, T): 0 on and below the diagonal, -inf above (the future)."""
    mask = np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)
    mask.flags.writeable = False  # shared between calls: nobody may change it
    return mask


def _split_qkv(x, w_attn, b_attn, n_head):
    """Project x to q, k, v and split the heads. Returns (q, k, v, linear cache)."""
    B, T, C = x.shape
    hs = C // n_head
    qkv, qkv_cache = linear_forward(x, w_attn, b_attn)  # (B, T, 3C)
    qkv = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
    return qkv[0], qkv[1], qkv[2], qkv_cache


def _merge_qkv_grads(dq, dk, dv):
    """Inverse of the split: (B, nh, T, hs) x 3 -> (B, T, 3C)."""
    B, nh, T, hs = dq.shape
    dqkv = np.stack([dq, dk, dv])  # (3, B, nh, T, hs)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)  # (B, T, 3C)


def _masked_softmax_(att, mask=None):
    """In place: scores (..., T, T) -> causal softmax probabilities along the last axis.
    mask: the additive causal mask for these rows and columns (default: causal_mask(T))."""
    att += causal_mask(att.shape[-1], att.dtype) if mask is None else mask  # -inf where s > t
    # stable: subtract the row max (fmax.reduce: the same here, and faster than max)
    att -= np.fmax.reduce(att, axis=-1, keepdims=True)
    np.exp(att, out=att)
    # row sums as a product with a vector of ones: BLAS does it ~3x faster than att.sum(-1)
    att *= 1.0 / (att @ np.ones(att.shape[-1], dtype=att.dtype))[..., None]


def _softmax_backward_(datt, att):
    """In place: datt (..., T, T), the gradient of p = softmax(s), becomes the gradient of s:
    ds = p * (dp - sum(dp * p)), the sum along each row."""
    datt -= np.vecdot(datt, att)[..., None]
    datt *= att


QUERY_BLOCK = 64  # queries per block in attention_core_*: see _query_blocks


def _query_blocks(T):
    """(t0, t1) blocks of QUERY_BLOCK consecutive queries covering 0..T-1.

    The queries [t0, t1) may only see the keys [0, t1): computing their scores against those
    keys alone skips the part of q k^T that the causal mask would zero anyway, and with it the
    softmax's passes and the products with v over it. Over T/Q blocks of Q queries that is
    (1 + 2 + ... + T/Q) / (T/Q)^2 of the full T x T work: 62% at T = 256, Q = 64; 53% at
    T = 1024. Each row still gets the softmax over all the keys it may see, so the
    probabilities are those of the full computation."""
    return [(t0, min(t0 + QUERY_BLOCK, T)) for t0 in range(0, T, QUERY_BLOCK)]


def _heads_view(a, n_head):
    """(B, T, C) -> a (B, nh, T, hs) view of the same memory (no copy), to write head
    outputs straight into the merged (B, T, C) layout: matmul(..., out=view)."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def _draw_dropout(probs_shape, attn_pdrop, rng, dtype):
    """The attention-dropout mask, drawn the same way by both implementations."""
    if attn_pdrop == 0.0:
        return None
    # dropout_forward's mask, drawn the same way (the same numbers from rng), without
    # applying it to an array of ones first
    keep = rng.random(probs_shape, dtype=dtype) >= attn_pdrop  # (B, nh, T, T) True = keep
    return keep * np.dtype(dtype).type(1.0 / (1.0 - attn_pdrop))  # 0 or 1/(1-p)


# --- vectorised (hot path) ---------------------------------------------------------------


def attention_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, attn_pdrop=0.0, rng=None):
    """Causal multi-head self-attention, vectorised over batch and heads: the qkv projection,
    the heads (attention_core_forward), the output projection.

    Inputs:
    - x: (B, T, C)
    - w_attn: (C, 3C), b_attn: (3C,)  ("c_attn": q, k, v side by side)
    - w_proj: (C, C), b_proj: (C,)    ("c_proj")
    - n_head: number of heads nh; C must be divisible by it
    - attn_pdrop: dropout probability on the attention probabilities; rng draws its mask

    Returns (out, cache):
    - out: (B, T, C)
    - cache: AttentionCache; cache.probs (B, nh, T, T) are the attention probabilities
    """
    qkv, qkv_cache = linear_forward(x, w_attn, b_attn)  # (B, T, 3C)
    y, core = attention_core_forward(qkv, n_head, attn_pdrop, rng)  # (B, T, C)
    out, proj_cache = linear_forward(y, w_proj, b_proj)  # (B, T, C)
    return out, AttentionCache(qkv_cache, *core, proj_cache)


def attention_backward(dout, cache):
    """Backward of attention_forward: the three steps in reverse order.

    Returns (dx, dw_attn, db_attn, dw_proj, db_proj).
    """
    dy, dw_proj, db_proj = linear_backward(dout, cache.proj_cache)  # (B, T, C)
    core = AttentionCoreCache(cache.q, cache.k, cache.v, cache.probs, cache.drop_mask)
    dqkv = attention_core_backward(dy, core)  # (B, T, 3C)
    dx, dw_attn, db_attn = linear_backward(dqkv, cache.qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


class AttentionCoreCache(NamedTuple):
    """What attention_core_backward needs."""

    q: np.ndarray  # (B, nh, T, hs)
    k: np.ndarray  # (B, nh, T, hs)
    v: np.ndarray  # (B, nh, T, hs)
    probs: np.ndarray  # (B, nh, T, T) softmax output, before dropout
    drop_mask: np.ndarray | None  # (B, nh, T, T) scaled keep-mask, None without dropout


def attention_core_forward(qkv, n_head, attn_pdrop=0.0, rng=None):
    """The heads of attention, between its two linear maps: softmax(q k^T / sqrt(hs) + mask) v.
    (GPT.forward calls the three parts itself, so that c_attn and c_proj can be frozen or
    carry a LoRA adapter.)

    Inputs:
    - qkv: (B, T, 3C), the output of the c_attn projection: q, k, v side by side
    - n_head, attn_pdrop, rng: as in attention_forward

    Returns (y, cache): y (B, T, C), the heads side by side; cache an AttentionCoreCache.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (B, nh, T, hs) each

    # scores (q / sqrt(hs)) k^T: scaling q (T x hs) is cheaper than scaling the scores (T x T);
    # the scale keeps the scores at unit variance, so the softmax does not saturate
    qs = q * qkv.dtype.type(1.0 / np.sqrt(hs))  # (B, nh, T, hs)
    # the probabilities, kept for backward; zeros: the blocks below never write the future
    att = np.zeros((B, n_head, T, T), dtype=qkv.dtype)
    drop_mask = _draw_dropout(att.shape, attn_pdrop, rng, qkv.dtype)
    y = np.empty((B, T, C), dtype=qkv.dtype)  # heads side by side, as c_proj wants them
    y_heads = _heads_view(y, n_head)  # (B, nh, T, hs) view: matmul writes into y directly
    mask = causal_mask(T, qkv.dtype)  # (T, T)
    # One sequence at a time: its (nh, T, T) scores stay in the cache from the matmul through
    # the softmax's passes to the product with v, instead of streaming the whole (B, nh, T, T)
    # array through memory once per pass. Within a sequence, queries go in blocks [t0, t1)
    # that look only at the keys [0, t1) they may see (_query_blocks).
    for b in range(B):
        for t0, t1 in _query_blocks(T):
            a = att[b, :, t0:t1, :t1]  # (nh, n, t1) this block's visible scores
            np.matmul(qs[b, :, t0:t1], k[b, :, :t1].swapaxes(-1, -2), out=a)
            _masked_softmax_(a, mask[t0:t1, :t1])  # probabilities, in place
            p = a if drop_mask is None else a * drop_mask[b, :, t0:t1, :t1]
            np.matmul(p, v[b, :, :t1], out=y_heads[b, :, t0:t1])  # (nh, n, hs)
    return y, AttentionCoreCache(q, k, v, att, drop_mask)


def attention_core_backward(dy, cache):
    """Backward of attention_core_forward.

    The softmax backward for one row p = softmax(s), with upstream dp:
        ds = p * (dp - sum(dp * p))
    Masked entries have p = 0, so they receive exactly zero gradient.

    Returns dqkv (B, T, 3C).
    """
    q, k, v, att, drop_mask = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)

    # dq, dk, dv are written straight into their slots of dqkv (B, T, 3, nh, hs), the layout
    # of the qkv projection's output, so no stacking or transposing copies are needed
    dqkv = np.empty((B, T, 3, nh, hs), dtype=q.dtype)
    dq, dk, dv = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, nh, T, hs)
    scale = q.dtype.type(1.0 / np.sqrt(hs))  # scores = (scale q) k^T
    datt = np.empty((nh, T, T), dtype=q.dtype)  # one sequence's, reused (see the forward)
    blocks = _query_blocks(T)
    for b in range(B):
        # 1) by blocks of queries: the gradient of the scores of each row, and dq
        for t0, t1 in blocks:
            ds = datt[:, t0:t1, :t1]  # (nh, n, t1) the block's visible entries
            np.matmul(dy[b, :, t0:t1], v[b, :, :t1].swapaxes(-1, -2), out=ds)  # d(probs)
            if drop_mask is not None:
                ds *= drop_mask[b, :, t0:t1, :t1]
            _softmax_backward_(ds, att[b, :, t0:t1, :t1])  # gradient of the scaled scores
            np.matmul(ds, k[b, :, :t1], out=dq[b, :, t0:t1])  # (nh, n, hs)
        # 2) by blocks of keys: key s is seen by the queries t >= s only, so dv and dk of the
        # keys [s0, s1) gather over the rows [s0, T) (exact zeros above the diagonal inside)
        for s0, s1 in blocks:
            p = att[b, :, s0:, s0:s1]  # (nh, T - s0, m)
            if drop_mask is not None:
                p = p * drop_mask[b, :, s0:, s0:s1]  # what multiplied v
            np.matmul(p.swapaxes(-1, -2), dy[b, :, s0:], out=dv[b, :, s0:s1])  # (nh, m, hs)
            np.matmul(datt[:, s0:, s0:s1].swapaxes(-1, -2), q[b, :, s0:], out=dk[b, :, s0:s1])
        dq[b] *= scale
        dk[b] *= scale
    return dqkv.reshape(B, T, 3 * nh * hs)


# --- loop reference (for teaching and tests) ---------------------------------------------


def attention_reference_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, attn_pdrop=0.0,
                                rng=None):
    """Same contract and numbers as attention_forward, written with loops over b, h and t.

    For each query position t only keys 0..t are looked at, which *is* the causal mask.
    """
    B, T, C = x.shape
    hs = C // n_head
    scale = 1.0 / np.sqrt(hs)
    q, k, v, qkv_cache = _split_qkv(x, w_attn, b_attn, n_head)  # (B, nh, T, hs) each
    drop_mask = _draw_dropout((B, n_head, T, T), attn_pdrop, rng, x.dtype)

    probs = np.zeros((B, n_head, T, T), dtype=x.dtype)  # the future stays exactly 0
    y = np.zeros((B, n_head, T, hs), dtype=x.dtype)
    for b in range(B):
        for h in range(n_head):
            for t in range(T):
                scores = (k[b, h, : t + 1] @ q[b, h, t]) * scale  # (t+1,) past and present
                p = np.exp(scores - scores.max())
                p /= p.sum()  # softmax over the t+1 visible keys
                probs[b, h, t, : t + 1] = p
                if drop_mask is not None:
                    p = p * drop_mask[b, h, t, : t + 1]
                y[b, h, t] = p @ v[b, h, : t + 1]  # weighted sum of the values, (hs,)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
    out, proj_cache = linear_forward(y, w_proj, b_proj)
    return out, AttentionCache(qkv_cache, q, k, v, probs, drop_mask, proj_cache)


def attention_reference_backward(dout, cache):
    """Backward of attention_reference_forward, one query at a time.

    Returns (dx, dw_attn, db_attn, dw_proj, db_proj).
    """
    qkv_cache, q, k, v, probs, drop_mask, proj_cache = cache
    B, nh, T, hs = q.shape
    scale = 1.0 / np.sqrt(hs)
    dy, dw_proj, db_proj = linear_backward(dout, proj_cache)  # (B, T, C)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for b in range(B):
        for h in range(nh):
            for t in range(T):
                p = probs[b, h, t, : t + 1]  # (t+1,)
                keep = 1.0 if drop_mask is None else drop_mask[b, h, t, : t + 1]
                # y_t = sum_s (p_s * keep_s) v_s
                dv[b, h, : t + 1] += np.outer(p * keep, dy[b, h, t])
                dp = (v[b, h, : t + 1] @ dy[b, h, t]) * keep  # (t+1,)
                ds = p * (dp - dp @ p) * scale  # softmax backward, then the scale
                dq[b, h, t] = ds @ k[b, h, : t + 1]
                dk[b, h, : t + 1] += np.outer(ds, q[b, h, t])
    dqkv = _merge_qkv_grads(dq, dk, dv)  # (B, T, 3C)
    dx, dw_attn, db_attn = linear_backward(dqkv, qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


# --- inference with a key/value cache (generation) ----------------------------------------


def attention_cached_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, past=None):
    """Attention for generation: only the new positions are computed, the keys and values of
    earlier positions come from a cache. Forward only (nothing to train while sampling).

    When we generate token t+1, the keys and values of tokens 0..t do not change (the mask
    means no token ever looks at a later one), so recomputing them every step is wasted work.

    Inputs:
    - x: (B, T_new, C), the new positions only
    - w_attn, b_attn, w_proj, b_proj, n_head: as in attention_forward
    - past: (k, v), each (B, nh, T_past, hs), or None for an empty cache

    Returns (out, (k, v)):
    - out: (B, T_new, C)
    - k, v: (B, nh, T_past + T_new, hs), the cache including the new positions
    """
    B, T_new, C = x.shape
    hs = C // n_head
    q, k, v, _ = _split_qkv(x, w_attn, b_attn, n_head)  # (B, nh, T_new, hs) each
    if past is not None:
        k = np.concatenate([past[0], k], axis=2)  # (B, nh, T_all, hs)
        v = np.concatenate([past[1], v], axis=2)
    T_all = k.shape[2]
    att = q @ k.swapaxes(-1, -2)  # (B, nh, T_new, T_all)
    att *= x.dtype.type(1.0 / np.sqrt(hs))
    att += causal_mask(T_all, x.dtype)[T_all - T_new:]  # new query i sits at T_past + i
    att -= att.max(axis=-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T_new, C)  # (B, T_new, C)
    out, _ = linear_forward(y, w_proj, b_proj)
    return out, (k, v)
