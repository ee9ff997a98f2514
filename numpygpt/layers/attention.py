"""Causal multi-head self-attention, as in GPT-2.

    qkv = x @ w_attn + b_attn                      split into q, k, v and into nh heads
    att = softmax(q k^T / sqrt(hs) + mask)         mask: -inf above the diagonal (no peeking ahead)
    y   = att @ v                                  merge the heads back into C channels
    out = y @ w_proj + b_proj

The heads, between the two linear maps, are a layer of their own (`attention_core_*`): the
models call the three parts themselves, each linear map through their table of linear maps.

Two implementations of the heads that compute the same numbers:
- `attention_core_forward` / `attention_core_backward`: vectorised over batch and heads,
  one (B, nh, T, T) matrix of scores made by batched matmuls. Read this one first.
- `attention_reference_forward` / `attention_reference_backward`: the whole layer, its heads
  computed with plain loops over batch, head and time step, one query at a time
  (`reference_heads_*`, which grouped-query attention shares). Slow, but each line is one
  idea; the tests compare the two.
A third, faster one computes the same numbers without the masked half of the scores
(numpygpt/kernels/fast.py), and a fourth, flash attention (numpygpt/kernels/flash.py), without
keeping any (T, T) array; the models use whichever numpygpt.kernels has chosen. The dropout
mask on the probabilities is drawn in blocks of rows (draw_dropout), so that all four drop the
same entries from the same rng.

`attention_core_cached` is the forward for generation, with the keys and values of earlier
tokens kept in a cache.

The mask is additive with -inf, so exp() makes the masked probabilities exactly 0 (every row
keeps at least its diagonal entry, so no row is all -inf).

Shapes: B batch, T time, C channels, nh heads, hs = C // nh head size.
"""

import functools
from typing import NamedTuple

import numpy as np

from .linear import linear_backward, linear_forward


class AttentionCoreCache(NamedTuple):
    """What attention_core_backward needs. `probs` is also handy for plotting."""

    q: np.ndarray  # (B, nh, T, hs)
    k: np.ndarray  # (B, nh, T, hs)
    v: np.ndarray  # (B, nh, T, hs)
    probs: np.ndarray  # (B, nh, T, T) softmax output, before dropout
    drop_mask: np.ndarray | None  # (B, nh, T, T) scaled keep-mask, None without dropout


class AttentionCache(NamedTuple):
    """What attention_backward needs: the caches of its three parts, the heads' spelled out.
    `probs` (B, nh, T, T) is also handy for plotting."""

    qkv_cache: tuple  # linear cache of the qkv projection (x, w_attn)
    q: np.ndarray  # (B, nh, T, hs)
    k: np.ndarray  # (B, nh, T, hs)
    v: np.ndarray  # (B, nh, T, hs)
    probs: np.ndarray  # (B, nh, T, T) softmax output, before dropout
    drop_mask: np.ndarray | None  # (B, nh, T, T) scaled keep-mask, None without dropout
    proj_cache: tuple  # linear cache of the output projection (y, w_proj)

    @property
    def core(self):
        """The heads' cache, as attention_core_forward returns it."""
        return AttentionCoreCache(self.q, self.k, self.v, self.probs, self.drop_mask)


@functools.lru_cache(maxsize=16)
def causal_mask(T, dtype=np.float32):
    """Additive mask (T, T): 0 on and below the diagonal, -inf above (the future)."""
    mask = np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)
    mask.flags.writeable = False  # shared between calls: nobody may change it
    return mask


def split_heads(qkv, n_head):
    """(B, T, 3C) -> q, k, v, each a (B, nh, T, hs) view."""
    B, T, C3 = qkv.shape
    return qkv.reshape(B, T, 3, n_head, C3 // 3 // n_head).transpose(2, 0, 3, 1, 4)


def merge_heads(dq, dk, dv):
    """Inverse of split_heads for gradients: (B, nh, T, hs) x 3 -> (B, T, 3C)."""
    B, nh, T, hs = dq.shape
    dqkv = np.stack([dq, dk, dv])  # (3, B, nh, T, hs)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)  # (B, T, 3C)


def masked_softmax_(att, mask=None):
    """In place: scores (..., T, T) -> causal softmax probabilities along the last axis.
    mask: the additive causal mask for these rows and columns (default: causal_mask(T))."""
    att += causal_mask(att.shape[-1], att.dtype) if mask is None else mask  # -inf where s > t
    softmax_(att)


def softmax_(att):
    """In place: scores (..., n) -> softmax probabilities along the last axis (the entries
    already masked, -inf, become exact zeros)."""
    # stable: subtract the row max (fmax.reduce: the same here, and faster than max)
    att -= np.fmax.reduce(att, axis=-1, keepdims=True)
    np.exp(att, out=att)
    # row sums as a product with a vector of ones: BLAS does it ~3x faster than att.sum(-1)
    att *= 1.0 / (att @ np.ones(att.shape[-1], dtype=att.dtype))[..., None]


def softmax_backward_(datt, att):
    """In place: datt (..., T, T), the gradient of p = softmax(s), becomes the gradient of s:
    ds = p * (dp - sum(dp * p)), the sum along each row."""
    datt -= np.vecdot(datt, att)[..., None]
    datt *= att


# The attention-dropout mask is drawn in blocks of DROPOUT_ROWS rows: the rows [t0, t1) of
# sequence b, over the keys [0, t1) they may see, come from a generator of their own, seeded by
# (seed, b, t0 // DROPOUT_ROWS) with one seed per call drawn from the caller's rng. So a kernel
# that works a block of rows at a time (kernels/flash.py) draws just that block's mask, in its
# forward and again in its backward, and never holds the (B, nh, T, T) whole; the plain layers
# build the whole mask from the same blocks, so every implementation drops the same entries.
DROPOUT_ROWS = 64


def dropout_seed(attn_pdrop, rng):
    """The one number drawn from rng that fixes a call's attention-dropout mask (None: p = 0)."""
    return None if attn_pdrop == 0.0 else int(rng.integers(2**63))


def dropout_block(seed, b, r, n_head, T, attn_pdrop, dtype):
    """Row block r of sequence b's scaled keep-mask (0 or 1/(1-p)): the rows
    [r R, r R + R) (R = DROPOUT_ROWS, cut at T) over the keys [0, r R + R), (nh, rows, keys)."""
    t0, t1 = r * DROPOUT_ROWS, min(r * DROPOUT_ROWS + DROPOUT_ROWS, T)
    dtype = np.dtype(dtype)
    keep = np.random.default_rng((seed, b, r)).random((n_head, t1 - t0, t1), dtype=dtype)
    return (keep >= attn_pdrop) * dtype.type(1.0 / (1.0 - attn_pdrop))


def dropout_rows(seed, b, t0, t1, n_head, T, attn_pdrop, dtype):
    """Sequence b's scaled keep-mask on the rows [t0, t1) over the keys [0, t1) they may see,
    (nh, t1 - t0, t1), gathered from the row blocks that hold them: draw_dropout's entries."""
    R = DROPOUT_ROWS
    if t0 % R == 0 and t1 == min(t0 + R, T):  # exactly one row block: the common case
        return dropout_block(seed, b, t0 // R, n_head, T, attn_pdrop, dtype)
    out = np.zeros((n_head, t1 - t0, t1), dtype=dtype)
    for r in range(t0 // R, (t1 - 1) // R + 1):
        r0 = r * R
        lo, hi = max(t0, r0), min(t1, r0 + R)  # the rows wanted from this block
        block = dropout_block(seed, b, r, n_head, T, attn_pdrop, dtype)
        out[:, lo - t0:hi - t0, :hi] = block[:, lo - r0:hi - r0, :hi]  # keys >= hi: future
    return out


def draw_dropout(probs_shape, attn_pdrop, rng, dtype):
    """The whole attention-dropout mask (B, nh, T, T) of 0 or 1/(1-p) (what it holds on the
    future does not matter: the probabilities there are 0), built from its row blocks
    (dropout_block): what every implementation drops, whole or by blocks, from the same rng.
    None when p = 0."""
    seed = dropout_seed(attn_pdrop, rng)
    if seed is None:
        return None
    B, nh, T, _ = probs_shape
    mask = np.zeros(probs_shape, dtype=dtype)
    for b in range(B):
        for r in range(-(-T // DROPOUT_ROWS)):
            t0, t1 = r * DROPOUT_ROWS, min(r * DROPOUT_ROWS + DROPOUT_ROWS, T)
            mask[b, :, t0:t1, :t1] = dropout_block(seed, b, r, nh, T, attn_pdrop, dtype)
    return mask


# --- vectorised ----------------------------------------------------------------------------


def attention_core_forward(qkv, n_head, attn_pdrop=0.0, rng=None):
    """The heads of attention, between its two linear maps: softmax(q k^T / sqrt(hs) + mask) v.

    Inputs:
    - qkv: (B, T, 3C), the output of the c_attn projection: q, k, v side by side
    - n_head: number of heads nh; C must be divisible by it
    - attn_pdrop: dropout probability on the attention probabilities; rng draws its mask

    Returns (y, cache): y (B, T, C), the heads side by side as c_proj wants them; cache an
    AttentionCoreCache (cache.probs (B, nh, T, T) are the attention probabilities).
    """
    B, T, C3 = qkv.shape
    q, k, v = split_heads(qkv, n_head)  # (B, nh, T, hs) each
    hs = q.shape[-1]
    drop_mask = draw_dropout((B, n_head, T, T), attn_pdrop, rng, qkv.dtype)
    # the scale keeps the scores at unit variance, so the softmax does not saturate
    att = q @ k.swapaxes(-1, -2)  # (B, nh, T, T) scores
    att *= qkv.dtype.type(1.0 / np.sqrt(hs))
    masked_softmax_(att)  # probabilities, in place; exactly 0 above the diagonal
    p = att if drop_mask is None else att * drop_mask
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)  # (B, T, C)
    return y, AttentionCoreCache(q, k, v, att, drop_mask)


def attention_core_backward(dy, cache):
    """Backward of attention_core_forward.

    With p = att (times the dropout mask, if any), y = p v:
        dv = p^T dy,   dp = dy v^T,   ds = att * (dp - sum(dp * att))  (softmax backward,
        row by row),   dq = ds k / sqrt(hs),   dk = ds^T q / sqrt(hs)
    Masked entries have att = 0, so they receive exactly zero gradient.

    Returns dqkv (B, T, 3C).
    """
    q, k, v, att, drop_mask = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    p = att if drop_mask is None else att * drop_mask  # what multiplied v
    dv = p.swapaxes(-1, -2) @ dy  # (B, nh, T, hs)
    ds = dy @ v.swapaxes(-1, -2)  # (B, nh, T, T) gradient of p
    if drop_mask is not None:
        ds *= drop_mask  # gradient of att
    softmax_backward_(ds, att)  # gradient of the scaled scores
    ds *= q.dtype.type(1.0 / np.sqrt(hs))  # scores = q k^T / sqrt(hs)
    dq = ds @ k  # (B, nh, T, hs)
    dk = ds.swapaxes(-1, -2) @ q  # (B, nh, T, hs)
    return merge_heads(dq, dk, dv)


def attention_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, attn_pdrop=0.0, rng=None):
    """Causal multi-head self-attention, the whole layer: the qkv projection, the heads
    (attention_core_forward), the output projection.

    Inputs:
    - x: (B, T, C)
    - w_attn: (C, 3C), b_attn: (3C,)  ("c_attn": q, k, v side by side)
    - w_proj: (C, C), b_proj: (C,)    ("c_proj")
    - n_head: number of heads nh; C must be divisible by it
    - attn_pdrop: dropout probability on the attention probabilities; rng draws its mask

    Returns (out, cache): out (B, T, C); cache an AttentionCache (cache.probs are the
    attention probabilities).
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
    dqkv = attention_core_backward(dy, cache.core)  # (B, T, 3C)
    dx, dw_attn, db_attn = linear_backward(dqkv, cache.qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


# --- loop reference (for teaching and tests) ---------------------------------------------


def reference_heads_forward(q, k, v, drop_mask=None):
    """The heads with plain loops over batch, query head and time step.

    Query head h reads key/value head h // g, with g = nh / nkv query heads per key/value
    head: g = 1 is multi-head attention, where every head has its own keys and values; g > 1
    is grouped-query attention (layers/gqa.py). For each query position t only keys 0..t are
    looked at, which *is* the causal mask.

    Inputs:
    - q: (B, nh, T, hs); k, v: (B, nkv, T, hs), nkv dividing nh
    - drop_mask: optional (B, nh, T, T) dropout mask on the probabilities (draw_dropout)

    Returns (y, probs): y (B, nh, T, hs); probs (B, nh, T, T), exactly 0 above the diagonal.
    """
    B, nh, T, hs = q.shape
    g = nh // k.shape[1]
    scale = 1.0 / np.sqrt(hs)
    probs = np.zeros((B, nh, T, T), dtype=q.dtype)  # the future stays exactly 0
    y = np.zeros((B, nh, T, hs), dtype=q.dtype)
    for b in range(B):
        for h in range(nh):
            j = h // g  # the key/value head this query head reads
            for t in range(T):
                scores = (k[b, j, : t + 1] @ q[b, h, t]) * scale  # (t+1,) past and present
                p = np.exp(scores - scores.max())
                p /= p.sum()  # softmax over the t+1 visible keys
                probs[b, h, t, : t + 1] = p
                if drop_mask is not None:
                    p = p * drop_mask[b, h, t, : t + 1]
                y[b, h, t] = p @ v[b, j, : t + 1]  # weighted sum of the values, (hs,)
    return y, probs


def reference_heads_backward(dy, q, k, v, probs, drop_mask=None):
    """Backward of reference_heads_forward, one query at a time; dy (B, nh, T, hs). A key or
    value used by several queries (or, g > 1, by several query heads) adds (+=) their
    gradients.

    Returns (dq, dk, dv) with the shapes of q, k, v.
    """
    B, nh, T, hs = q.shape
    g = nh // k.shape[1]
    scale = 1.0 / np.sqrt(hs)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for b in range(B):
        for h in range(nh):
            j = h // g
            for t in range(T):
                p = probs[b, h, t, : t + 1]  # (t+1,)
                keep = 1.0 if drop_mask is None else drop_mask[b, h, t, : t + 1]
                # y_t = sum_s (p_s * keep_s) v_s
                dv[b, j, : t + 1] += np.outer(p * keep, dy[b, h, t])
                dp = (v[b, j, : t + 1] @ dy[b, h, t]) * keep  # (t+1,)
                ds = p * (dp - dp @ p) * scale  # softmax backward, then the scale
                dq[b, h, t] = ds @ k[b, j, : t + 1]
                dk[b, j, : t + 1] += np.outer(ds, q[b, h, t])
    return dq, dk, dv


def attention_reference_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, attn_pdrop=0.0,
                                rng=None):
    """Same contract and numbers as attention_forward, the heads computed by the loops of
    reference_heads_forward."""
    B, T, C = x.shape
    qkv, qkv_cache = linear_forward(x, w_attn, b_attn)  # (B, T, 3C)
    q, k, v = split_heads(qkv, n_head)  # (B, nh, T, hs) each
    drop_mask = draw_dropout((B, n_head, T, T), attn_pdrop, rng, x.dtype)
    y, probs = reference_heads_forward(q, k, v, drop_mask)  # (B, nh, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C)
    out, proj_cache = linear_forward(y, w_proj, b_proj)
    return out, AttentionCache(qkv_cache, q, k, v, probs, drop_mask, proj_cache)


def attention_reference_backward(dout, cache):
    """Backward of attention_reference_forward.

    Returns (dx, dw_attn, db_attn, dw_proj, db_proj).
    """
    q, k, v, probs, drop_mask = cache.core
    B, nh, T, hs = q.shape
    dy, dw_proj, db_proj = linear_backward(dout, cache.proj_cache)  # (B, T, C)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    dq, dk, dv = reference_heads_backward(dy, q, k, v, probs, drop_mask)
    dx, dw_attn, db_attn = linear_backward(merge_heads(dq, dk, dv), cache.qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


# --- inference with a key/value cache (generation) ----------------------------------------


def attention_core_cached(qkv, n_head, past=None):
    """The heads for generation: only the new positions are computed, the keys and values of
    earlier positions come from a cache. Forward only (nothing to train while sampling).

    When we generate token t+1, the keys and values of tokens 0..t do not change (the mask
    means no token ever looks at a later one), so recomputing them every step is wasted work.

    Inputs:
    - qkv: (B, T_new, 3C), the c_attn projection of the new positions only
    - n_head: nh
    - past: (k, v), each (B, nh, T_past, hs), or None for an empty cache

    Returns (y, (k, v)):
    - y: (B, T_new, C), the heads side by side
    - k, v: (B, nh, T_past + T_new, hs), the cache including the new positions
    """
    B, T_new, C3 = qkv.shape
    q, k, v = split_heads(qkv, n_head)  # (B, nh, T_new, hs) each
    if past is not None:
        k = np.concatenate([past[0], k], axis=2)  # (B, nh, T_all, hs)
        v = np.concatenate([past[1], v], axis=2)
    T_all = k.shape[2]
    att = q @ k.swapaxes(-1, -2)  # (B, nh, T_new, T_all)
    att *= qkv.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    masked_softmax_(att, causal_mask(T_all, qkv.dtype)[T_all - T_new:])  # query i at T_past + i
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T_new, C3 // 3)  # (B, T_new, C)
    return y, (k, v)
