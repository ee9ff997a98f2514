"""Flash attention in NumPy: the heads of causal attention without the (T, T) probabilities.

The same numbers as layers/attention.py's attention_core_forward / _backward (its twin), with
memory O(T) per layer instead of O(T^2), the way FlashAttention-2 (Dao, 2023) computes them:

- forward: queries in blocks of QUERY_BLOCK rows, each against the keys in blocks of
  KEY_BLOCK columns, left to right, and only the key blocks the causal mask leaves (a key
  block wholly in a query block's future is skipped, never computed). An online softmax keeps
  per row a running max m and a running sum l of exp(s - m), and a running output acc; a new
  key block with a larger max rescales l and acc by exp(m_old - m_new). After the last key
  block, y = acc / l, and the cache keeps lse = m + log(l), one number per row.
- backward: each block's probabilities come back from the scores and the saved lse,
  p = exp(s - lse), with no softmax to redo; and D = rowsum(dy * y) replaces the softmax
  backward's rowsum(dp * p) (the two are equal: y = p v), so each block's gradient needs only
  its own entries: ds = p * (dp - D).
- dropout: the mask of each block of rows is drawn from a generator seeded by (one seed
  drawn from the caller's rng, the sequence, the row block) (layers/attention.py:
  dropout_rows), in the forward and again in the backward; the cache keeps the seed, not the
  mask. The plain layer builds its whole mask from the same blocks: the same entries drop.

The cache (FlashCache) holds q, k, v (views of qkv), y (which c_proj keeps anyway), lse and the
seed: memory linear in T, instead of the (B, nh, T, T) probabilities (and dropout mask). Its
`probs` recomputes the probabilities, for plots. On a CPU this is a little slower than
kernels/fast.py's blocked heads, which keep the probabilities (the backward recomputes the
scores and their exp): numpygpt.kernels offers it as a choice, NUMPYGPT_KERNELS=flash.

Shapes: B batch, T time, C channels, nh heads, hs = C // nh head size.
"""

from typing import NamedTuple

import numpy as np

from ..layers.attention import causal_mask, dropout_rows, dropout_seed, split_heads

QUERY_BLOCK = 64  # rows per query block (= layers.attention.DROPOUT_ROWS: one draw per block)
KEY_BLOCK = 256  # columns per key block
SEQ_BLOCK = 1  # sequences per block: (SEQ_BLOCK, nh, QUERY_BLOCK, KEY_BLOCK) scores in flight


class FlashCache(NamedTuple):
    """What flash attention_core_backward needs: no (T, T) array."""

    q: np.ndarray  # (B, nh, T, hs)
    k: np.ndarray  # (B, nh, T, hs)
    v: np.ndarray  # (B, nh, T, hs)
    y: np.ndarray  # (B, T, C) the output, for D = rowsum(dy * y)
    lse: np.ndarray  # (B, nh, T, 1) log-sum-exp of each row's scaled scores
    seed: int | None  # the dropout mask's seed (layers.attention.dropout_seed), None: no dropout
    attn_pdrop: float

    @property
    def probs(self):
        """The attention probabilities (B, nh, T, T), recomputed from q, k and lse (plots)."""
        T, hs = self.q.shape[-2:]
        s = self.q @ self.k.swapaxes(-1, -2)  # (B, nh, T, T)
        s *= self.q.dtype.type(1.0 / np.sqrt(hs))
        s += causal_mask(T, s.dtype)
        s -= self.lse
        return np.exp(s, out=s)


def _blocks(end, size):
    """(start, stop) blocks of `size` covering 0..end-1, the last one cut at end."""
    return [(s0, min(s0 + size, end)) for s0 in range(0, end, size)]


def _heads_view(a, n_head):
    """(B, T, C) -> a (B, nh, T, hs) view of the same memory, to write heads into (B, T, C)."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def _drop_block(seed, b0, b1, t0, t1, n_head, T, attn_pdrop, dtype):
    """The scaled keep-mask of the rows [t0, t1) of the sequences [b0, b1),
    (b1-b0, nh, t1-t0, t1); None without dropout."""
    if seed is None:
        return None
    return np.stack([dropout_rows(seed, b, t0, t1, n_head, T, attn_pdrop, dtype)
                     for b in range(b0, b1)])


def _scores(qs_i, k, s0, s1, t0, t1, mask):
    """The scaled scores of queries [t0, t1) against keys [s0, s1), (B, nh, n, m), with -inf
    on the future where the key block reaches past t0 (the block on the diagonal)."""
    s = qs_i @ k[:, :, s0:s1].swapaxes(-1, -2)
    if s1 > t0 + 1:  # some key in this block is after some query: mask it
        s += mask[t0:t1, s0:s1]
    return s


def attention_core_forward(qkv, n_head, attn_pdrop=0.0, rng=None):
    """layers.attention_core_forward's numbers (same arguments, same rng draws), by blocks
    with an online softmax. Returns (y (B, T, C), FlashCache)."""
    B, T, C3 = qkv.shape
    q, k, v = split_heads(qkv, n_head)  # (B, nh, T, hs) views
    hs = q.shape[-1]
    dt = qkv.dtype.type
    seed = dropout_seed(attn_pdrop, rng)
    qs = q * dt(1.0 / np.sqrt(hs))  # scaled once: (q / sqrt(hs)) k^T is cheaper than scaling s
    mask = causal_mask(T, qkv.dtype)
    y = np.empty((B, T, C3 // 3), dtype=qkv.dtype)
    y_heads = _heads_view(y, n_head)  # (B, nh, T, hs) view: blocks are written into y
    lse = np.empty((B, n_head, T, 1), dtype=qkv.dtype)
    for b0, b1 in _blocks(B, SEQ_BLOCK):
        bs = slice(b0, b1)
        _forward_rows(qs[bs], k[bs], v[bs], y_heads[bs], lse[bs], mask, seed, b0, attn_pdrop)
    return y, FlashCache(q, k, v, y, lse, seed, attn_pdrop)


def _forward_rows(qs, k, v, y, lse, mask, seed, b0, attn_pdrop):
    """The forward on the sequences [b0, b0 + len(qs)): writes y and lse."""
    Bb, n_head, T, _ = qs.shape
    for t0, t1 in _blocks(T, QUERY_BLOCK):
        qs_i = qs[:, :, t0:t1]  # (Bb, nh, n, hs)
        drop = _drop_block(seed, b0, b0 + Bb, t0, t1, n_head, T, attn_pdrop, qs.dtype)
        m = l = acc = None  # running max, sum of exp(s - m), and output, per row
        for s0, s1 in _blocks(t1, KEY_BLOCK):  # keys [t1, T) are all in the future: skipped
            p = _scores(qs_i, k, s0, s1, t0, t1, mask)  # (Bb, nh, n, m), becomes exp(s - m)
            m_new = np.fmax.reduce(p, axis=-1, keepdims=True)  # (Bb, nh, n, 1)
            if m is not None:  # m_new = max(m, block max); l and acc were relative to m
                np.fmax(m_new, m, out=m_new)
                alpha = np.exp(m - m_new)  # <= 1: rescales l and acc to the new max
            p -= m_new
            np.exp(p, out=p)  # -inf (future) -> exactly 0
            # row sums as a product with ones: BLAS is faster than p.sum(-1)
            rowsum = (p @ np.ones(s1 - s0, dtype=p.dtype))[..., None]  # (Bb, nh, n, 1)
            pv = (p if drop is None else p * drop[..., s0:s1]) @ v[:, :, s0:s1]  # (Bb, nh, n, hs)
            if m is None:  # the first key block holds key 0, which every row sees: m is finite
                l, acc = rowsum, pv
            else:
                l *= alpha
                l += rowsum
                acc *= alpha
                acc += pv
            m = m_new
        np.divide(acc, l, out=y[:, :, t0:t1])
        np.log(l, out=lse[:, :, t0:t1])
        lse[:, :, t0:t1] += m


def attention_core_backward(dy, cache):
    """layers.attention_core_backward's numbers: each block's probabilities recomputed from
    its scores and the saved lse, p = exp(s - lse); ds = p * (dp - D), D = rowsum(dy * y).
    Returns dqkv (B, T, 3C)."""
    q, k, v, y, lse, seed, attn_pdrop = cache
    B, nh, T, hs = q.shape
    dy = np.ascontiguousarray(dy, dtype=q.dtype).reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    D = np.vecdot(dy, _heads_view(y, nh))[..., None]  # (B, nh, T, 1) rowsum(dy * y)
    mask = causal_mask(T, q.dtype)
    # dq, dk, dv written into their slots of dqkv (B, T, 3, nh, hs): the qkv layout, no copies
    dqkv = np.zeros((B, T, 3, nh, hs), dtype=q.dtype)
    dq, dk, dv = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, nh, T, hs)
    for b0, b1 in _blocks(B, SEQ_BLOCK):
        bs = slice(b0, b1)
        _backward_rows(q[bs], k[bs], v[bs], dy[bs], lse[bs], D[bs], dq[bs], dk[bs], dv[bs],
                       mask, seed, b0, attn_pdrop)
    dk *= q.dtype.type(1.0 / np.sqrt(hs))  # dk = ds^T q / sqrt(hs) (dq's: block by block)
    return dqkv.reshape(B, T, 3 * nh * hs)


def _backward_rows(q, k, v, dy, lse, D, dq, dk, dv, mask, seed, b0, attn_pdrop):
    """The backward on the sequences [b0, b0 + len(q)): adds into dq, dk, dv (zeros)."""
    Bb, nh, T, hs = q.shape
    scale = q.dtype.type(1.0 / np.sqrt(hs))
    for t0, t1 in _blocks(T, QUERY_BLOCK):
        qs_i, dy_i = q[:, :, t0:t1] * scale, dy[:, :, t0:t1]  # (Bb, nh, n, hs)
        drop = _drop_block(seed, b0, b0 + Bb, t0, t1, nh, T, attn_pdrop, q.dtype)
        for s0, s1 in _blocks(t1, KEY_BLOCK):
            p = _scores(qs_i, k, s0, s1, t0, t1, mask)  # (B, nh, n, m)
            p -= lse[:, :, t0:t1]
            np.exp(p, out=p)  # the forward's probabilities, 0 on the future
            d = None if drop is None else drop[..., s0:s1]
            dv[:, :, s0:s1] += (p if d is None else p * d).swapaxes(-1, -2) @ dy_i
            ds = dy_i @ v[:, :, s0:s1].swapaxes(-1, -2)  # (B, nh, n, m) gradient of p (dropped)
            if d is not None:
                ds *= d  # gradient of p before dropout
            ds -= D[:, :, t0:t1]
            ds *= p  # gradient of the scaled scores
            dq[:, :, t0:t1] += ds @ k[:, :, s0:s1]
            dk[:, :, s0:s1] += ds.swapaxes(-1, -2) @ q[:, :, t0:t1]
        dq[:, :, t0:t1] *= scale
