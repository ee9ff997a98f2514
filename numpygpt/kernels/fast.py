"""The fast kernels: the same numbers as a plain layer, computed faster.

Each function here has a plain twin in numpygpt.layers with the same contract (arguments,
results, cache), which says what it computes; this module only says how to compute it
quickly. The tests compare every pair (tests/test_kernels.py), and numpygpt.kernels chooses
between them in one place: `NUMPYGPT_KERNELS=plain` runs every model on the plain twins.

- attention_core_forward / _backward (twin: layers/attention.py): causal attention in blocks
  of queries, each against only the keys it may see, one sequence at a time so that its
  scores stay in the CPU's cache (short sequences in groups whose scores fit together).
- gqa_attention_forward / _backward (twin: layers/gqa.py): a Llama's grouped-query attention
  layer with its heads computed the same way (gqa_core_forward / _backward, twins of the
  layer's heads): the g query heads of a group share their key/value head through a
  broadcast, and dk, dv sum over the group.
- gelu_forward / gelu_backward (twin: layers/gelu.py): the same chain of operations, in
  place, one cache-sized block at a time (the forward's sigmoid by an exp where NumPy's tanh
  is the slower of the two).
- adamw_update (twin: layers/adamw.py): the same update, in place in one scratch buffer, no
  temporaries, a large tensor in cache-sized blocks.
- softmax_cross_entropy_forward / _backward (twin: layers/loss.py): the same softmax with
  fewer passes (the row sums a product with ones, the backward's copy and scaling one pass).
- embedding_forward (twin: layers/embedding.py): the lookup with np.take.
- embedding_backward (twin: layers/embedding.py): the rows of dout summed per token id: a
  stable sort of the ids lists each id's positions together, and each id's rows are gathered
  and summed at once, instead of np.add.at's one-row-at-a-time loop.

Shapes: B batch, T time, C channels, nh heads, hs = C // nh head size; nkv key/value heads
and g = nh // nkv query heads per group (grouped-query attention).
"""

import math

import numpy as np

from ..layers.adamw import decays
from ..layers.attention import (
    AttentionCoreCache,
    causal_mask,
    draw_dropout,
    softmax_,
    softmax_backward_,
)
from ..layers.gelu import _A, _K  # GELU's constants: sqrt(2/pi) and 0.044715
from ..layers.gqa import GQACoreCache
from ..layers.gqa import gqa_attention_backward as _gqa_layer_backward
from ..layers.gqa import gqa_attention_forward as _gqa_layer_forward
from ..layers.loss import CrossEntropyCache

# --- attention ---------------------------------------------------------------------------


QUERY_BLOCK = 64  # queries per block in the attention kernels: see _query_blocks


def _query_blocks(T):
    """(t0, t1) blocks of QUERY_BLOCK consecutive queries covering 0..T-1.

    The queries [t0, t1) may only see the keys [0, t1): computing their scores against those
    keys alone skips the part of q k^T that the causal mask would zero anyway, and with it the
    softmax's passes and the products with v over it. Over T/Q blocks of Q queries that is
    (1 + 2 + ... + T/Q) / (T/Q)^2 of the full T x T work: 62% at T = 256, Q = 64; 53% at
    T = 1024. Each row still gets the softmax over all the keys it may see, so the
    probabilities are those of the full computation."""
    return [(t0, min(t0 + QUERY_BLOCK, T)) for t0 in range(0, T, QUERY_BLOCK)]


SCORES_IN_CACHE = 1 << 18  # score entries (1 MB of float32) a group of sequences may hold


def _sequence_groups(B, n_head, T):
    """(b0, b1) groups of consecutive sequences covering 0..B-1, each with at most
    SCORES_IN_CACHE scores (b1 - b0) nh T^2, at least one sequence. At the small config one
    sequence's (nh, T, T) scores alone exceed it: one sequence at a time, for the cache. At
    the baby config (nh = 4, T = 64) a sequence has 16k scores and all twelve go together:
    each sequence's handful of small products and softmax passes would otherwise cost more in
    NumPy's per-call overhead than in arithmetic."""
    per_group = max(1, SCORES_IN_CACHE // (n_head * T * T))
    return [(b0, min(b0 + per_group, B)) for b0 in range(0, B, per_group)]


def _heads_view(a, n_head):
    """(B, T, C) -> a (B, nh, T, hs) view of the same memory (no copy), to write head
    outputs straight into the merged (B, T, C) layout: matmul(..., out=view)."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def _transposed(a):
    """A group's keys (or values) (..., T, hs) as a contiguous (..., hs, T) copy.

    The grouped-query scores q k^T take k^T as their right-hand operand (the backward's
    dy v^T takes v^T). As a view (k.swapaxes(-1, -2)) that is a transposed matrix, which
    OpenBLAS packs more slowly than a plain one; a contiguous copy, made once per group of
    sequences and read by the g query heads that share it, costs less than it saves. On the
    2-core AMD EPYC (OpenBLAS SkylakeX kernel, small shapes), the heads' forward + backward
    took 0.90-0.95x the time with one thread and 0.95-0.99x with two (four runs each). The
    same products of the same numbers: the same bits.

    The attention heads (one query head per key head) gain less and lose with two threads:
    there the products q k^T took 7.7-7.8 ms from a contiguous k^T against 10.0-10.4 ms, but
    the copies took 1.7 ms (the whole of k, a transposing copy: one float per ns). Forward +
    backward with them: 0.94-0.98x with one thread, 0.97-1.05x with two (three of four runs
    above 1). They do without."""
    return np.ascontiguousarray(a.swapaxes(-1, -2))


def attention_core_forward(qkv, n_head, attn_pdrop=0.0, rng=None):
    """layers.attention_core_forward's numbers (same contract, same cache), computed one
    sequence at a time and in blocks of queries that skip the masked scores."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # (B, nh, T, hs) each

    # scores (q / sqrt(hs)) k^T: scaling q (T x hs) is cheaper than scaling the scores (T x T);
    # the scale keeps the scores at unit variance, so the softmax does not saturate
    qs = q * qkv.dtype.type(1.0 / np.sqrt(hs))  # (B, nh, T, hs)
    # the probabilities, kept for backward; zeros: the blocks below never write the future
    att = np.zeros((B, n_head, T, T), dtype=qkv.dtype)
    drop_mask = draw_dropout(att.shape, attn_pdrop, rng, qkv.dtype)
    y = np.empty((B, T, C), dtype=qkv.dtype)  # heads side by side, as c_proj wants them
    y_heads = _heads_view(y, n_head)  # (B, nh, T, hs) view: matmul writes into y directly
    mask = causal_mask(T, qkv.dtype)  # (T, T)
    # One sequence (or a group of short ones: _sequence_groups) at a time: its (nh, T, T)
    # scores stay in the cache from the matmul through the softmax's passes to the product
    # with v, instead of streaming the whole (B, nh, T, T) array through memory once per pass.
    # Within a sequence, queries go in blocks [t0, t1) that look only at the keys [0, t1) they
    # may see (_query_blocks).
    for b0, b1 in _sequence_groups(B, n_head, T):
        b = slice(b0, b1)
        for t0, t1 in _query_blocks(T):
            a = att[b, :, t0:t1, :t1]  # (g, nh, n, t1) this block's visible scores
            np.matmul(qs[b, :, t0:t1], k[b, :, :t1].swapaxes(-1, -2), out=a)
            # the causal mask, -inf where key s > query t: only the keys [t0, t1) can be in
            # a row's future (the mask's zeros elsewhere would change nothing)
            a[..., t0:] += mask[t0:t1, t0:t1]
            softmax_(a)  # probabilities, in place
            p = a if drop_mask is None else a * drop_mask[b, :, t0:t1, :t1]
            np.matmul(p, v[b, :, :t1], out=y_heads[b, :, t0:t1])  # (g, nh, n, hs)
    return y, AttentionCoreCache(q, k, v, att, drop_mask)


def attention_core_backward(dy, cache):
    """layers.attention_core_backward's numbers, by blocks: dq by blocks of queries, dv and
    dk by blocks of keys, each over the entries the mask leaves. Returns dqkv (B, T, 3C)."""
    q, k, v, att, drop_mask = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)

    # dq, dk, dv are written straight into their slots of dqkv (B, T, 3, nh, hs), the layout
    # of the qkv projection's output, so no stacking or transposing copies are needed
    dqkv = np.empty((B, T, 3, nh, hs), dtype=q.dtype)
    dq, dk, dv = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, nh, T, hs)
    scale = q.dtype.type(1.0 / np.sqrt(hs))  # scores = (scale q) k^T
    groups = _sequence_groups(B, nh, T)
    largest = max((b1 - b0 for b0, b1 in groups), default=0)
    datt_buffer = np.empty((largest, nh, T, T), dtype=q.dtype)  # one group's, reused
    blocks = _query_blocks(T)
    for b0, b1 in groups:
        b, datt = slice(b0, b1), datt_buffer[:b1 - b0]  # (g, nh, T, T)
        # 1) by blocks of queries: the gradient of the scores of each row, and dq
        for t0, t1 in blocks:
            ds = datt[:, :, t0:t1, :t1]  # (g, nh, n, t1) the block's visible entries
            np.matmul(dy[b, :, t0:t1], v[b, :, :t1].swapaxes(-1, -2), out=ds)  # d(probs)
            if drop_mask is not None:
                ds *= drop_mask[b, :, t0:t1, :t1]
            softmax_backward_(ds, att[b, :, t0:t1, :t1])  # gradient of the scaled scores
            np.matmul(ds, k[b, :, :t1], out=dq[b, :, t0:t1])  # (g, nh, n, hs)
        # 2) by blocks of keys: key s is seen by the queries t >= s only, so dv and dk of the
        # keys [s0, s1) gather over the rows [s0, T) (exact zeros above the diagonal inside)
        for s0, s1 in blocks:
            p = att[b, :, s0:, s0:s1]  # (g, nh, T - s0, m)
            if drop_mask is not None:
                p = p * drop_mask[b, :, s0:, s0:s1]  # what multiplied v
            np.matmul(p.swapaxes(-1, -2), dy[b, :, s0:], out=dv[b, :, s0:s1])  # (g, nh, m, hs)
            np.matmul(datt[:, :, s0:, s0:s1].swapaxes(-1, -2), q[b, :, s0:],
                      out=dk[b, :, s0:s1])
        dq[b] *= scale
        dk[b] *= scale
    return dqkv.reshape(B, T, 3 * nh * hs)


# --- grouped-query attention (Llama) ------------------------------------------------------


def _groups_view(a, nkv):
    """(B, nh, T, D) -> (B, nkv, g, T, D), the g query heads of each key/value head (a view
    when a's heads axis splits, as a contiguous array's does)."""
    B, nh, T, D = a.shape
    return a.reshape(B, nkv, nh // nkv, T, D)


def gqa_core_forward(q, k, v):
    """layers.gqa_core_forward's contract (the same cache), by blocks of queries that skip the
    masked scores, as attention_core_forward: the g query heads of a group meet their shared
    key/value head through a broadcast in the matmul, (g, n, hs) @ (1, hs, t1)."""
    B, nh, T, hs = q.shape
    nkv = k.shape[1]
    q = np.ascontiguousarray(q)  # (B, nh, T, hs), kept for backward
    qs = _groups_view(q * q.dtype.type(1.0 / np.sqrt(hs)), nkv)  # (B, nkv, g, T, hs)
    # the probabilities, kept for backward; zeros: the blocks below never write the future
    att = np.zeros((B, nh, T, T), dtype=q.dtype)
    att5 = _groups_view(att, nkv)  # (B, nkv, g, T, T) view
    y = np.empty((B, T, nh, hs), dtype=q.dtype)  # heads side by side, as w_o wants them
    y5 = y.reshape(B, T, nkv, nh // nkv, hs).transpose(0, 2, 3, 1, 4)  # (B, nkv, g, T, hs)
    v1 = v[:, :, None]  # (B, nkv, 1, T, hs): broadcasts over the g query heads of a group
    mask = causal_mask(T, q.dtype)
    for b0, b1 in _sequence_groups(B, nh, T):
        b = slice(b0, b1)
        kt_b = _transposed(k[b])[:, :, None]  # (gb, nkv, 1, hs, T)
        for t0, t1 in _query_blocks(T):
            a = att5[b, :, :, t0:t1, :t1]  # (gb, nkv, g, n, t1) the block's visible scores
            np.matmul(qs[b, :, :, t0:t1], kt_b[..., :t1], out=a)
            a[..., t0:] += mask[t0:t1, t0:t1]  # the future: only among the keys [t0, t1)
            softmax_(a)  # probabilities, in place
            np.matmul(a, v1[b, :, :, :t1], out=y5[b, :, :, t0:t1])  # (gb, nkv, g, n, hs)
    return y.reshape(B, T, nh * hs), GQACoreCache(q, k, v, att)


def gqa_core_backward(dy, cache):
    """layers.gqa_core_backward's numbers, by blocks: dq by blocks of queries; dk and dv by
    blocks of keys, each summed over the g query heads of its group.
    Returns (dq, dk, dv): (B, nh, T, hs), (B, nkv, T, hs), (B, nkv, T, hs)."""
    q, k, v, att = cache
    B, nh, T, hs = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    scale = q.dtype.type(1.0 / np.sqrt(hs))
    dy5 = dy.reshape(B, T, nkv, g, hs).transpose(0, 2, 3, 1, 4)  # (B, nkv, g, T, hs) view
    q5, att5 = _groups_view(q, nkv), _groups_view(att, nkv)
    k1 = k[:, :, None]  # (B, nkv, 1, T, hs): broadcasts over the g query heads of a group
    dq = np.empty((B, nh, T, hs), dtype=q.dtype)
    dq5 = _groups_view(dq, nkv)
    dk = np.empty((B, nkv, T, hs), dtype=q.dtype)
    dv = np.empty((B, nkv, T, hs), dtype=q.dtype)
    groups = _sequence_groups(B, nh, T)
    largest = max((b1 - b0 for b0, b1 in groups), default=0)
    datt_buffer = np.empty((largest, nkv, g, T, T), dtype=q.dtype)  # one group's, reused
    blocks = _query_blocks(T)
    for b0, b1 in groups:
        b, datt = slice(b0, b1), datt_buffer[:b1 - b0]  # (gb, nkv, g, T, T)
        vt_b = _transposed(v[b])[:, :, None]  # (gb, nkv, 1, hs, T)
        # 1) by blocks of queries: the gradient of the scores of each row, and dq
        for t0, t1 in blocks:
            ds = datt[:, :, :, t0:t1, :t1]  # (gb, nkv, g, n, t1) the block's visible entries
            np.matmul(dy5[b, :, :, t0:t1], vt_b[..., :t1], out=ds)  # d(probs)
            softmax_backward_(ds, att5[b, :, :, t0:t1, :t1])  # gradient of the scaled scores
            np.matmul(ds, k1[b, :, :, :t1], out=dq5[b, :, :, t0:t1])  # (gb, nkv, g, n, hs)
        # 2) by blocks of keys: key s is seen by the queries t >= s of all g heads of its
        # group, so dv and dk of the keys [s0, s1) sum over the rows [s0, T) and over g
        for s0, s1 in blocks:
            p = att5[b, :, :, s0:, s0:s1].swapaxes(-1, -2)  # (gb, nkv, g, m, T - s0)
            np.sum(p @ dy5[b, :, :, s0:], axis=2, out=dv[b, :, s0:s1])  # (gb, nkv, m, hs)
            d = datt[:, :, :, s0:, s0:s1].swapaxes(-1, -2)  # (gb, nkv, g, m, T - s0)
            np.sum(d @ q5[b, :, :, s0:], axis=2, out=dk[b, :, s0:s1])
        dq[b] *= scale
        dk[b] *= scale
    return dq, dk, dv


def gqa_attention_forward(x, w_q, w_k, w_v, w_o, n_head, n_kv_head, cos, sin):
    """layers.gqa_attention_forward with the heads above (the same contract and cache)."""
    return _gqa_layer_forward(x, w_q, w_k, w_v, w_o, n_head, n_kv_head, cos, sin,
                              heads=gqa_core_forward)


def gqa_attention_backward(dout, cache):
    """layers.gqa_attention_backward with the heads above."""
    return _gqa_layer_backward(dout, cache, heads=gqa_core_backward)


# --- GELU ----------------------------------------------------------------------------------
#
# Each line of the chains below is one pass over the array. On the MLP's (B, T, 4C)
# activations (25 MB at the small config) every pass would stream the whole array from memory
# and back, eight times over: the time goes into memory traffic, not arithmetic. So each chain
# runs on one block of BLOCK elements at a time, small enough for the block's arrays to stay
# in the cache between passes. Every element sees the same operations in the same
# order as in one pass over the whole array: the result is bit-identical. (Measured on a
# 2-core AMD EPYC at (16, 256, 1536) float32: the backward about 1.5x faster, the forward,
# whose exp is arithmetic-bound, less; by the tanh where NumPy runs it in AVX-512 (below),
# 4.7 ms against 6.6. Threads over the blocks did not pay there.) A block is
# 1 MB of float32 per array: one thread takes the same time as with 256 kB (12.2 against
# 12.3 ms forward + backward at that shape), and threads sharing the batch (`train
# --threads 2`) wait less on each other for the GIL, which every NumPy call lets go of and
# takes back: their halves took 6.8 ms in 1 MB blocks against 8.1 ms in 256 kB ones.

BLOCK = 1 << 18  # elements per block


def _in_blocks(chain, *arrays, block=None):
    """chain(*blocks) for consecutive blocks of `block` (default BLOCK) elements of the
    same-shaped, C-contiguous arrays (the chain writes its result into the last ones)."""
    block = block or BLOCK
    flat = [a.reshape(-1) for a in arrays]  # views of the same memory
    for start in range(0, flat[0].size, block):
        chain(*(f[start:start + block] for f in flat))


# s = sigmoid(2u) two ways, the same number to float rounding: 0.5 (1 + tanh(u)), the plain
# layer's operations, or 1 / (1 + exp(-2u)). Which is quicker depends on the SIMD loops NumPy
# runs on the CPU. Measured on the 2-core AMD EPYC, 393k float32 elements per call: with its
# AVX-512 loops tanh took 63 us, exp 113 and the reciprocal after it 61 (the fast forward by
# tanh: 0.63-0.70x the time of the one by exp); with those loops switched off
# (NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR": NumPy's AVX2 loops) tanh took
# 374 us against exp's 216 (by tanh: 1.13-1.14x). So the forward takes the tanh where NumPy's
# tanh runs an AVX-512 loop, the exp elsewhere (other CPUs were not measured: the exp was the
# form before the tanh was).


def _tanh_runs_avx512():
    """True when this NumPy runs float32 tanh with an AVX-512 loop (numpy.lib.introspect)."""
    try:
        from numpy.lib.introspect import opt_func_info
        target = opt_func_info(func_name="^tanh$", signature="float32")["tanh"]["ff"]["current"]
    except (ImportError, KeyError, TypeError):  # a NumPy without the introspection
        return False
    return "AVX512" in target or target == "X86_V4"  # older NumPy: AVX512_SKX; newer: X86_V4


GELU_BY_TANH = _tanh_runs_avx512()


def _gelu_forward_block_tanh(x, s, out):
    """On one block: s = 0.5 (1 + tanh(u)) = sigmoid(2u), out = x * s (the plain layer's
    operations: the same bits)."""
    scalar = x.dtype.type  # the constants below in x's dtype, rounded once
    np.multiply(x, x, out=s)  # s becomes sigmoid(2u) step by step
    s *= scalar(_K * _A)
    s += scalar(_K)
    s *= x  # u = K (x + A x^3) = x (K + KA x^2): products, no slow power
    np.tanh(s, out=s)
    s *= scalar(0.5)
    s += scalar(0.5)
    np.multiply(x, s, out=out)


def _gelu_forward_block_exp(x, s, out):
    """On one block: s = 1 / (1 + exp(-2u)) = sigmoid(2u), out = x * s."""
    scalar = x.dtype.type
    np.multiply(x, x, out=s)
    s *= scalar(-2 * _K * _A)
    s += scalar(-2 * _K)
    s *= x  # -2u = -2K (x + A x^3)
    # For very negative u, exp(-2u) overflows to inf and 1 / (1 + inf) = 0, the right limit:
    # the overflow is harmless, so it is silenced.
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += scalar(1.0)
    np.reciprocal(s, out=s)
    np.multiply(x, s, out=out)


def _gelu_backward_block(x, s, dout, g):
    """On one block: g = dout * s (1 + x (1 - s) 2 du/dx)."""
    scalar = x.dtype.type
    np.multiply(x, x, out=g)  # g becomes gelu'(x) step by step
    g *= scalar(6 * _K * _A)
    g += scalar(2 * _K)  # 2 du/dx = 2K (1 + 3A x^2)
    g *= x
    g *= scalar(1.0) - s
    g += scalar(1.0)
    g *= s
    g *= dout


def gelu_forward(x):
    """layers.gelu_forward's numbers: out = x * s, cache (x, s), s = sigmoid(2u); bit for bit
    where s comes from the tanh (GELU_BY_TANH), to float rounding from the exp."""
    x = np.ascontiguousarray(x)
    s, out = np.empty_like(x), np.empty_like(x)
    _in_blocks(_gelu_forward_block_tanh if GELU_BY_TANH else _gelu_forward_block_exp, x, s, out)
    return out, (x, s)


def gelu_backward(dout, cache):
    """layers.gelu_backward, bit for bit: dx = dout * s (1 + x (1 - s) 2 du/dx)."""
    x, s = cache
    g = np.empty_like(x)
    _in_blocks(_gelu_backward_block, x, s, np.ascontiguousarray(dout, dtype=x.dtype), g)
    return g


# --- AdamW ---------------------------------------------------------------------------------


# Each line of the update is one pass over the tensor's arrays: twelve, and the decay. At the
# small config a (C, 4C) weight's p, g, m, v and scratch are 2.4 MB each, a block's four weights'
# 35 MB together, more than the caches hold: every pass would stream them from memory. In
# blocks of ADAMW_BLOCK elements (128 kB per array: the five fit in a 1 MB L2 together) the
# passes after the first find them in the cache. Measured on the 2-core AMD EPYC, one thread,
# the weights and biases of a block in turn, medians of 41 interleaved runs: at C = 768,
# 10.5-11.5 ms against 12.4-13.4 in whole-tensor passes (0.84-0.86x, five runs); at C = 384,
# 0.90-0.96x (2.62-2.90 against 2.84-3.01 ms, four runs), and 0.98-0.99x for bench --kernels'
# mix of one (C, 4C) and eight (C, C) weights; over GPT-2 small's 124M parameters, 0.19-0.20 s
# against 0.25 (0.75-0.79x, two runs of 7 rounds). A tensor of up to ADAMW_WHOLE elements goes in
# one piece: at C = 128 (the baby config, whose whole optimizer state fits in the L3 cache)
# blocks took 1.13x the time. The same operations on every element, in the same order: the
# same bits. Folding the step size into the denominator's constants (one pass fewer) took
# 0.96-0.97x the time at C = 384 and 768 and 0.95x at C = 128 (another, slower 2-core AMD
# EPYC, one thread, 41 interleaved runs).
ADAMW_BLOCK = 1 << 15
ADAMW_WHOLE = 1 << 17


def adamw_update(p, g, m, v, t, lr, betas, eps, weight_decay, scratch=None):
    """layers.adamw_update's numbers, every operation in place, in cache-sized blocks: a GPT's
    optimizer touches every parameter each step, and temporaries the size of the model cost
    as much time as the maths. scratch: a buffer like p to compute in (a new one if None)."""
    b1, b2 = betas
    cast = p.dtype.type  # scalars in the parameter's dtype: float32 stays float32
    tmp = np.empty_like(p) if scratch is None else scratch
    keep = cast(1 - lr * weight_decay) if weight_decay and decays(p) else None
    c1, c1g, c2, c2g = cast(b1), cast(1 - b1), cast(b2), cast(1 - b2)
    # p -= step m / (sqrt(v) / sqrt(bc2) + eps), step = lr / bc1, bc = 1 - b^t, is
    # p -= m / (sqrt(v) / (sqrt(bc2) step) + eps / step): the step folded into the
    # denominator's two constants saves the pass that would multiply by it
    step = lr / (1 - b1**t)
    if step:
        den_scale, den_eps = cast(1 / (math.sqrt(1 - b2**t) * step)), cast(eps / step)

    def update(p, g, m, v, tmp):  # on one block, or the whole tensor
        if keep is not None:
            p *= keep  # decoupled weight decay
        m *= c1  # m = b1 m + (1 - b1) g
        np.multiply(g, c1g, out=tmp)
        m += tmp
        v *= c2  # v = b2 v + (1 - b2) g^2
        np.multiply(g, g, out=tmp)
        tmp *= c2g
        v += tmp
        if not step:  # lr = 0 (a schedule's end): m and v move, p does not
            return
        np.sqrt(v, out=tmp)  # the denominator over the step
        tmp *= den_scale
        tmp += den_eps
        np.divide(m, tmp, out=tmp)
        p -= tmp

    arrays = (p, g, m, v, tmp)
    # a small tensor in one piece; a view in another layout too: flattening it would copy it,
    # and the update would be lost
    if p.size <= ADAMW_WHOLE or not all(a.flags.c_contiguous for a in arrays):
        update(*arrays)
    else:
        _in_blocks(update, *arrays, block=ADAMW_BLOCK)


# --- softmax cross-entropy ----------------------------------------------------------------


SHIFT_SPAN = 60.0  # exp(-60) ~ 1e-26: far from float32's underflow (1e-38)


def softmax_cross_entropy_forward(logits, targets, ignore_index=-1):
    """layers.softmax_cross_entropy_forward's numbers (same contract, same cache), with
    fewer and faster passes: one shift for the whole array when the logits allow it, the
    shifted logits becoming the probabilities in place."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)  # (N, V)
    y = targets.reshape(-1)  # (N,)
    valid = y != ignore_index
    n_valid = int(valid.sum())
    yv = np.where(valid, y, 0)  # any in-range id for ignored rows
    rows = np.arange(len(y))
    # Softmax ignores a shift of a row; any shift that keeps exp from overflowing and the
    # row's largest term from underflowing gives the same numbers, to rounding. One number for
    # the whole array does when every logit lies within SHIFT_SPAN of the largest: two fast
    # reductions over contiguous memory, where a max per row of V = 65 runs one short loop
    # per row (several times slower). Otherwise, the max of each row.
    top = z.max() if z.size else 0.0
    if z.size and top - z.min() <= SHIFT_SPAN:
        probs = z - top  # (N, V), every entry in [-SHIFT_SPAN, 0]
    else:
        probs = z - np.fmax.reduce(z, axis=-1, keepdims=True)  # (N, V) each row's max is 0
    target = probs[rows, yv]  # (N,) shifted logit of each target, before exp overwrites it
    np.exp(probs, out=probs)
    sumexp = probs @ np.ones(V, dtype=probs.dtype)  # (N,) row sums, by BLAS
    probs *= (1.0 / sumexp)[:, None]  # softmax
    if n_valid == 0:
        loss = logits.dtype.type(0.0)
    else:
        logp = target - np.log(sumexp)  # (N,) log p(y)
        loss = logits.dtype.type(-(logp @ valid.astype(logp.dtype)) / n_valid)
    return loss, CrossEntropyCache(probs, yv, valid, n_valid, logits.shape)


def softmax_cross_entropy_backward(dloss, cache):
    """layers.softmax_cross_entropy_backward's numbers: dloss (probs - onehot) / n_valid,
    zero on ignored rows, the copy and the scaling in one pass."""
    probs, yv, valid, n_valid, shape = cache
    if n_valid == 0:
        return np.zeros(shape, dtype=probs.dtype)
    if n_valid == len(yv):  # no row ignored: one scale for all, the same numbers
        # (a (N, 1) column broadcast over rows of V = 65 runs one short loop per row: 48 us
        # against 20 for a scalar at N = 4096, on the 2-core AMD EPYC)
        scale = probs.dtype.type(dloss / n_valid)
        dz = np.multiply(probs, scale)  # (N, V), a new array
    else:
        scale = (valid * (dloss / n_valid)).astype(probs.dtype)  # (N,) 0 on ignored rows
        dz = np.multiply(probs, scale[:, None])  # (N, V), a new array
    dz[np.arange(len(yv)), yv] -= scale
    return dz.reshape(shape)


# --- embedding -----------------------------------------------------------------------------

SMALL_VOCAB = 256  # up to this many ids, a Python loop over the ids; above, np.add.reduceat
RADIX_VOCAB = 1 << 16  # up to this many ids, they are sorted as uint16: numpy's radix sort


def embedding_forward(idx, wte, padding_idx=None):
    """layers.embedding_forward, bit for bit: np.take gathers the rows (a copy, as wte[idx]
    makes) without fancy indexing's general machinery."""
    return np.take(wte, idx, axis=0), (idx, wte.shape, wte.dtype, padding_idx)


def embedding_backward(dout, cache, out=None):
    """layers.embedding_backward's numbers (same contract): row v of dwte is the sum of dout
    over the positions where idx == v. np.add.at adds one row at a time. Here a stable sort
    of the ids lists each id's positions together, in the order they came. A small
    vocabulary (a character model's 65) then gathers and sums each id's rows at once, in a
    Python loop over the ids; a large one (GPT-2's 50257, most of its ids unseen in a batch)
    gathers all the rows in that order and sums each id's run with np.add.reduceat."""
    idx, shape, dtype, padding_idx = cache
    V, C = shape
    dwte = np.zeros(shape, dtype=dtype) if out is None else out  # (V, C)
    ids, rows = idx.reshape(-1), dout.reshape(-1, C)  # (N,), (N, C)
    if padding_idx is not None:  # the padding vector stays fixed, as in nn.Embedding
        keep = ids != padding_idx
        ids, rows = ids[keep], rows[keep]
    if ids.size == 0:
        return dwte
    # each id's positions together, in their order. A stable sort of ids that fit in 16 bits
    # (GPT-2's 50257 do) is a radix sort in numpy, 6x faster than int64's merge sort at 4096
    # ids (7 against 43 us); the order is the same, as a stable sort's order is unique.
    small = ids.astype(np.uint16) if V <= RADIX_VOCAB else ids
    order = np.argsort(small, kind="stable")  # (N,)
    if V <= SMALL_VOCAB:
        ends = np.cumsum(np.bincount(ids, minlength=V))  # (V,) where each id's positions end
        start = 0
        for v, end in enumerate(ends.tolist()):
            if end > start:  # an id never seen adds nothing
                # its rows, gathered in order (a small copy, still in the cache for the sum),
                # summed over axis 0 one after another as np.add.at adds them: same numbers.
                # Into a new dwte the sum is written in place (0 + s == s, no temporary).
                # np.add.reduce, not np.sum: np.sum's Python wrapper costs more than the sum
                # of a few dozen rows (0.44 against 0.36 ms for the 65 ids at B=16, T=256).
                rows_v = np.take(rows, order[start:end], axis=0)  # (n_v, C)
                if out is None:
                    np.add.reduce(rows_v, 0, None, dwte[v])
                else:
                    dwte[v] += np.add.reduce(rows_v, 0)
            start = end
        return dwte
    grouped = np.take(rows, order, axis=0)  # (N, C), the rows of id 0, then id 1, ...
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # each run's start
    dwte[sorted_ids[starts]] += np.add.reduceat(grouped, starts, axis=0)  # ids unique here
    return dwte
