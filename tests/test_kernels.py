"""The fast kernels (numpygpt/kernels/fast.py) against their plain twins (numpygpt/layers), and
the one switch between them (numpygpt.kernels).

Attention's heads in blocks of queries: each block is computed against only the keys it may
see. Whatever the block size, the numbers are those of the plain vectorised layer and of the
loop reference, the future gets exactly zero probability, and the gradients pass finite
differences, including blocks that do not divide T and a last block of one query. GELU's
fast twin gives the plain layer's bits, AdamW's the plain update's numbers (tests/test_optim.py).
A whole model gives the same numbers with every fast kernel or none.

Flash attention (numpygpt/kernels/flash.py): blocks of queries against blocks of keys with an
online softmax, the backward recomputing each block from the saved log-sum-exp. Whatever the
block sizes (one key block per query block, or many, so the running max is rescaled), the
numbers are the plain layer's and the loop reference's, dropout included (the same mask from
the same rng, drawn by blocks of rows), its cache holds nothing of size T x T, and its
gradients pass finite differences.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from numpygpt import GPT, GPTConfig, Llama, LlamaConfig, TrainConfig
from numpygpt import layers as L
from numpygpt.gradcheck import THRESHOLD, check_layer
from numpygpt.kernels import (
    FAST,
    FLASH,
    NAMES,
    PLAIN,
    fast,
    flash,
    kernels,
    norms,
    ops,
    which_kernels,
)
from numpygpt.layers.attention import draw_dropout, dropout_rows, dropout_seed
from numpygpt.training.train import train

MATCH = 1e-10  # blocked vs plain and loop reference, float64
MODEL_MATCH = 1e-12  # a float64 model's logits and gradients, fast kernels vs plain


@pytest.fixture(params=[1, 2, 3, 64])
def query_block(request, monkeypatch):
    monkeypatch.setattr(fast, "QUERY_BLOCK", request.param)
    return request.param


def _args(rng, B, T, C):
    return (rng.standard_normal((B, T, C)), rng.standard_normal((C, 3 * C)) * 0.5,
            rng.standard_normal(3 * C) * 0.5, rng.standard_normal((C, C)) * 0.5,
            rng.standard_normal(C))


def test_query_blocks_cover_every_query_once(query_block):
    for T in (1, 2, 5, 64, 65, 130):
        blocks = fast._query_blocks(T)
        assert blocks[0][0] == 0 and blocks[-1][1] == T
        assert all(b[1] == c[0] for b, c in zip(blocks, blocks[1:], strict=False))
        assert all(0 < t1 - t0 <= query_block for t0, t1 in blocks)


def _heads_against_plain_and_loops(kernel, B, T, C, nh, p, seed):
    """kernel's attention heads (fast: blocked; flash) against the plain heads and the loop
    reference, forward and backward, float64, the same dropout mask throughout."""
    rng = np.random.default_rng(seed)
    x, w_attn, b_attn, w_proj, b_proj = _args(rng, B, T, C)
    qkv = x @ w_attn + b_attn  # (B, T, 3C)
    y_f, cache_f = kernel.attention_core_forward(qkv, nh, p, np.random.default_rng(5))
    y_p, cache_p = L.attention_core_forward(qkv, nh, p, np.random.default_rng(5))
    out_r, cache_r = L.attention_reference_forward(x, w_attn, b_attn, w_proj, b_proj, nh,
                                                   attn_pdrop=p, rng=np.random.default_rng(5))
    assert np.max(np.abs(y_f - y_p)) <= MATCH
    assert np.max(np.abs(y_f @ w_proj + b_proj - out_r)) <= MATCH
    assert np.max(np.abs(cache_f.probs - cache_r.probs)) <= MATCH  # flash: recomputed from lse
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert np.all(cache_f.probs[..., future] == 0.0)  # never written, exactly 0
    assert np.all(cache_p.probs[..., future] == 0.0)  # exp(-inf), exactly 0
    dout = rng.standard_normal(out_r.shape)  # the whole layer's upstream gradient
    dy = dout @ w_proj.T  # the heads' (out = y @ w_proj + b_proj)
    dqkv_f = kernel.attention_core_backward(dy, cache_f)
    assert np.max(np.abs(dqkv_f - L.attention_core_backward(dy, cache_p))) <= MATCH
    dx_r = L.attention_reference_backward(dout, cache_r)[0]  # dx = dqkv @ w_attn.T
    assert np.max(np.abs(dqkv_f @ w_attn.T - dx_r)) <= MATCH


@pytest.mark.parametrize("B,T,C,nh,p", [(1, 7, 8, 2, 0.0), (2, 5, 12, 3, 0.3), (1, 1, 4, 1, 0.0)])
def test_blocked_heads_equal_the_plain_layer_and_the_loop_reference(query_block, B, T, C, nh, p):
    _heads_against_plain_and_loops(fast, B, T, C, nh, p, seed=3)


def test_several_default_blocks_equal_the_plain_layer():
    """T = 130 with the default block of 64: three blocks, the last of 2 queries."""
    assert fast.QUERY_BLOCK < 130
    _heads_against_plain_and_loops(fast, 1, 130, 8, 2, 0.1, seed=4)


@pytest.mark.parametrize("per_group", [1, 2, 5], ids=["one", "pairs", "all"])
def test_blocked_heads_by_groups_of_sequences_equal_the_plain_layer(per_group, monkeypatch):
    """Sequences one at a time (the small config's case), two at a time with one left over,
    and all five together (the baby config's case): the plain layer's numbers each time, and
    the same bits whatever the grouping."""
    B, T, C, nh = 5, 9, 8, 2
    monkeypatch.setattr(fast, "SCORES_IN_CACHE", per_group * nh * T * T)
    groups = fast._sequence_groups(B, nh, T)
    assert [b0 for b0, _ in groups] == list(range(0, B, per_group)) and groups[-1][1] == B
    _heads_against_plain_and_loops(fast, B, T, C, nh, 0.2, seed=6)
    qkv, dy = np.random.default_rng(6).standard_normal((2, B, T, 3 * C))[:, :, :, :C * 3]
    y, cache = fast.attention_core_forward(qkv, nh, 0.2, np.random.default_rng(1))
    dqkv = fast.attention_core_backward(dy[..., :C], cache)
    monkeypatch.setattr(fast, "SCORES_IN_CACHE", 1)  # one sequence at a time
    y1, cache1 = fast.attention_core_forward(qkv, nh, 0.2, np.random.default_rng(1))
    assert np.array_equal(y, y1) and np.array_equal(cache.probs, cache1.probs)
    assert np.array_equal(dqkv, fast.attention_core_backward(dy[..., :C], cache1))


@pytest.mark.parametrize("per_group", [1, 3], ids=["one-sequence", "three-sequences"])
@pytest.mark.parametrize("B,nh,nkv,T,hs", [(2, 4, 2, 7, 3), (3, 6, 1, 5, 4), (1, 3, 3, 1, 2),
                                           (2, 4, 4, 9, 2)])
def test_blocked_gqa_heads_equal_the_plain_layer_and_the_loop_reference(
        query_block, per_group, B, nh, nkv, T, hs, monkeypatch):
    """Grouped queries (g = 2, 6, 1 and 1: MQA, MHA too), blocks of 1 to 64 queries, sequences
    one or three at a time: the plain layer's numbers and the loop reference's."""
    monkeypatch.setattr(fast, "SCORES_IN_CACHE", per_group * nh * T * T)
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((B, n, T, hs)) for n in (nh, nkv, nkv))
    dy = rng.standard_normal((B, T, nh * hs))
    y_f, cache_f = fast.gqa_core_forward(q, k, v)
    y_p, cache_p = L.gqa_core_forward(q, k, v)
    y_r, cache_r = L.gqa_reference_forward(q, k, v)
    assert np.max(np.abs(y_f - y_p)) <= MATCH and np.max(np.abs(y_f - y_r)) <= MATCH
    assert np.max(np.abs(cache_f.probs - cache_r.probs)) <= MATCH
    assert np.all(cache_f.probs[..., np.triu(np.ones((T, T), dtype=bool), k=1)] == 0.0)
    grads_f = fast.gqa_core_backward(dy, cache_f)
    for other in (L.gqa_core_backward(dy, cache_p), L.gqa_reference_backward(dy, cache_r)):
        for a, b in zip(grads_f, other, strict=True):
            assert a.shape == b.shape and np.max(np.abs(a - b)) <= MATCH


def test_blocked_gqa_heads_pass_finite_differences_and_keep_float32():
    rng = np.random.default_rng(10)
    q, k, v = rng.standard_normal((2, 4, 6, 3)), *rng.standard_normal((2, 2, 2, 6, 3))
    errors = check_layer(fast.gqa_core_forward, fast.gqa_core_backward,
                         {"q": q, "k": k, "v": v}, ["q", "k", "v"], rng=rng)
    assert max(errors.values()) <= THRESHOLD, errors
    y, cache = fast.gqa_core_forward(*(a.astype(np.float32) for a in (q, k, v)))
    grads = fast.gqa_core_backward(np.ones(y.shape, dtype=np.float32), cache)
    assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)


def test_the_fast_gqa_layer_is_the_plain_layer_with_the_blocked_heads():
    rng = np.random.default_rng(11)
    B, T, C, nh, nkv = 2, 70, 16, 4, 2  # 70 positions: two blocks of queries
    x = rng.standard_normal((B, T, C))
    w_q, w_o = rng.standard_normal((C, C)) * 0.3, rng.standard_normal((C, C)) * 0.3
    w_k, w_v = (rng.standard_normal((C, C // 2)) * 0.3 for _ in range(2))
    cos, sin = L.rope_table(T, C // nh)
    out_f, cache_f = fast.gqa_attention_forward(x, w_q, w_k, w_v, w_o, nh, nkv, cos, sin)
    out_p, cache_p = L.gqa_attention_forward(x, w_q, w_k, w_v, w_o, nh, nkv, cos, sin)
    assert np.max(np.abs(out_f - out_p)) <= MATCH
    dout = rng.standard_normal(out_p.shape)
    for a, b in zip(fast.gqa_attention_backward(dout, cache_f),
                    L.gqa_attention_backward(dout, cache_p), strict=True):
        assert np.max(np.abs(a - b)) <= MATCH * max(1.0, np.abs(b).max())


def _heads_pass_finite_differences(kernel, p):
    """kernel's attention heads (a module with attention_core_forward / _backward) against
    finite differences, float64, with and without dropout."""
    rng = np.random.default_rng(7)
    B, T, C, nh = 2, 5, 8, 2
    qkv = rng.standard_normal((B, T, 3 * C))

    def forward(qkv):  # the same dropout mask in every call
        return kernel.attention_core_forward(qkv, nh, p, np.random.default_rng(8))

    errors = check_layer(forward, kernel.attention_core_backward, {"qkv": qkv}, ["qkv"], rng=rng)
    assert max(errors.values()) <= THRESHOLD, errors


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_blocked_heads_pass_finite_differences(query_block, p):
    _heads_pass_finite_differences(fast, p)


# --- flash attention -----------------------------------------------------------------------


@pytest.fixture(params=[(64, 256), (1, 1), (2, 3), (3, 2), (5, 64)],
                ids=lambda b: f"q{b[0]}-k{b[1]}")
def flash_blocks(request, monkeypatch):
    """Query and key block sizes: the defaults, one row or one key at a time, blocks that do
    not divide T or each other, query blocks that straddle the dropout's row blocks."""
    q, k = request.param
    monkeypatch.setattr(flash, "QUERY_BLOCK", q)
    monkeypatch.setattr(flash, "KEY_BLOCK", k)
    return request.param


@pytest.mark.parametrize("B,T,C,nh,p", [(1, 7, 8, 2, 0.0), (2, 5, 12, 3, 0.3), (1, 1, 4, 1, 0.0),
                                        (2, 70, 8, 2, 0.2)])
def test_flash_equals_the_plain_layer_and_the_loop_reference(flash_blocks, B, T, C, nh, p):
    _heads_against_plain_and_loops(flash, B, T, C, nh, p, seed=3)


def test_flash_with_several_key_blocks_rescales_the_running_max(monkeypatch):
    """T = 200, key blocks of 48: up to five key blocks per row, so the online softmax meets
    larger maxima late and rescales; large scores make a wrong rescale visible."""
    monkeypatch.setattr(flash, "KEY_BLOCK", 48)
    _heads_against_plain_and_loops(flash, 2, 200, 8, 2, 0.1, seed=4)
    rng = np.random.default_rng(6)
    qkv = rng.standard_normal((1, 200, 24)) * 6  # scores of tens: exp would overflow unshifted
    y_f, _ = flash.attention_core_forward(qkv, 2)
    np.testing.assert_allclose(y_f, L.attention_core_forward(qkv, 2)[0], rtol=0, atol=MATCH)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_flash_passes_finite_differences(flash_blocks, p):
    _heads_pass_finite_differences(flash, p)


def test_flash_cache_holds_nothing_of_size_t_squared():
    B, T, C, nh = 2, 130, 8, 2
    qkv = np.random.default_rng(0).standard_normal((B, T, 3 * C))
    _, cache = flash.attention_core_forward(qkv, nh, 0.2, np.random.default_rng(1))
    arrays = [a for a in cache if isinstance(a, np.ndarray)]
    assert all(a.size <= B * T * 3 * C for a in arrays)  # O(T): q, k, v, y, lse
    assert cache.lse.shape == (B, nh, T, 1) and isinstance(cache.seed, int)
    _, plain = L.attention_core_forward(qkv, nh, 0.2, np.random.default_rng(1))
    assert plain.probs.size == B * nh * T * T  # what the plain layer keeps instead


def test_the_dropout_mask_is_drawn_by_blocks_of_rows_the_same_way_everywhere():
    """draw_dropout's whole mask is its row blocks side by side; dropout_rows gathers any rows
    from them; one number is drawn from the caller's rng either way."""
    B, nh, T, p = 2, 3, 150, 0.25
    whole = draw_dropout((B, nh, T, T), p, np.random.default_rng(9), np.float32)
    rng, same = np.random.default_rng(9), np.random.default_rng(9)
    seed = dropout_seed(p, rng)
    same.integers(2**63)
    assert rng.random() == same.random()  # one draw from the caller's rng, nothing more
    for b in range(B):
        for t0, t1 in ((0, 64), (64, 128), (128, 150), (3, 70), (60, 150), (149, 150)):
            rows = dropout_rows(seed, b, t0, t1, nh, T, p, np.float32)
            np.testing.assert_array_equal(rows, whole[b, :, t0:t1, :t1])
    seen = whole[..., np.tril(np.ones((T, T), dtype=bool))]
    assert set(np.unique(seen)) == {0.0, np.float32(1 / (1 - p))}
    assert abs((seen == 0).mean() - p) < 0.01  # about p of the visible entries drop
    assert draw_dropout((B, nh, T, T), 0.0, rng, np.float32) is None


@pytest.mark.parametrize("core", [fast, flash, L], ids=["fast", "flash", "plain"])
def test_attention_float32_stays_float32(core):
    rng = np.random.default_rng(9)
    qkv = rng.standard_normal((2, 5, 24)).astype(np.float32)
    y, cache = core.attention_core_forward(qkv, 2)
    assert y.dtype == cache.probs.dtype == np.float32
    assert core.attention_core_backward(np.ones_like(y), cache).dtype == np.float32


@pytest.mark.parametrize("by_tanh", [True, False], ids=["tanh", "exp"])
@pytest.mark.parametrize("block", [fast.BLOCK, 1000], ids=lambda b: f"block{b}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_gelu_gives_the_plain_layers_numbers(dtype, block, by_tanh, monkeypatch):
    # the forward's s by the tanh (the plain layer's operations: its bits) or by the exp (the
    # same s to rounding); the backward, from the same cache, the plain layer's bits
    monkeypatch.setattr(fast, "BLOCK", block)
    monkeypatch.setattr(fast, "GELU_BY_TANH", by_tanh)
    # 210k elements: one block, cut short, with the default; 210 blocks of 1000
    x = (np.random.default_rng(1).standard_normal((3, 70_000)) * 4).astype(dtype)
    x[0, :3] = [-100.0, 0.0, 100.0]  # s is 0 and 1 exactly at the far ends (exp overflows)
    out_f, cache_f = fast.gelu_forward(x)
    out_p, cache_p = L.gelu_forward(x)
    if by_tanh:
        np.testing.assert_array_equal(out_f, out_p)
        np.testing.assert_array_equal(cache_f[1], cache_p[1])  # s, which backward reads
    else:  # s within a few units of float rounding of 1; out the same, scaled by |x|
        eps = np.finfo(dtype).eps
        assert np.max(np.abs(cache_f[1] - cache_p[1])) <= 4 * eps
        assert np.max(np.abs(out_f - out_p) / np.maximum(1.0, np.abs(x))) <= 4 * eps
    assert out_f[0, 0] == 0 and out_f[0, 2] == 100
    dout = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(fast.gelu_backward(dout, cache_f),
                                  L.gelu_backward(dout, cache_f))
    assert out_f.dtype == dtype
    # and the layer's x * s is the tanh formula written out (gelu_reference), to rounding
    ref, _ = L.gelu_reference_forward(x.astype(np.float64))
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert np.max(np.abs(out_p - ref)) <= tol * max(1.0, np.abs(ref).max())


def test_gelu_by_tanh_follows_numpys_tanh_loop(monkeypatch):
    """The forward takes the tanh where NumPy runs float32 tanh in an AVX-512 loop, the exp
    where it cannot tell or runs another loop."""
    import numpy.lib.introspect as introspect

    def answer(target):
        return lambda **kw: {"tanh": {"ff": {"current": target, "available": target}}}

    for target, by_tanh in (("X86_V4", True), ("AVX512_SKX", True), ("X86_V3", False),
                            ("AVX2", False), ("ASIMD", False), ("baseline(X86_V2)", False)):
        monkeypatch.setattr(introspect, "opt_func_info", answer(target))
        assert fast._tanh_runs_avx512() is by_tanh, target
    monkeypatch.setattr(introspect, "opt_func_info", lambda **kw: {})  # tanh not listed
    assert fast._tanh_runs_avx512() is False


# --- AdamW -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adamw_in_blocks_gives_the_bits_of_one_piece(dtype, monkeypatch):
    # a tensor above ADAMW_WHOLE goes in blocks of ADAMW_BLOCK (here 17 of 64, the last one
    # short): over three steps, with and without weight decay, the same bits as one piece; a
    # parameter that is a view in another layout is updated in place, in one piece
    shape = (37, 29)  # 1073 elements
    p0 = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    runs = []
    for whole, block, layout in ((10**9, 10**9, "C"), (100, 64, "C"), (100, 64, "F")):
        monkeypatch.setattr(fast, "ADAMW_WHOLE", whole)
        monkeypatch.setattr(fast, "ADAMW_BLOCK", block)
        p = p0.copy() if layout == "C" else p0.T.copy().T  # "F": a transposed view
        assert p.flags.c_contiguous == (layout == "C")
        m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
        g_rng = np.random.default_rng(6)
        for t in range(1, 4):
            g = g_rng.standard_normal(shape).astype(dtype)
            fast.adamw_update(p, g, m, v, t, 1e-2, (0.9, 0.95), 1e-8, 0.1 * (t != 2),
                              np.empty_like(p))
        runs.append((p, m, v))
    assert not np.array_equal(runs[0][0], p0)  # it moved
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            np.testing.assert_array_equal(a, b)
            assert b.dtype == dtype


def test_fast_adamw_with_lr_zero_moves_m_and_v_not_p():
    # the fast update folds lr into the denominator's constants (it divides by the step
    # size), so a schedule that ends at lr = 0 takes its own path: the plain layer's result
    rng = np.random.default_rng(7)
    p = rng.standard_normal((300, 500)).astype(np.float32)  # above ADAMW_WHOLE: in blocks
    g = rng.standard_normal(p.shape).astype(np.float32)
    fast_state = [p.copy(), np.full_like(p, 0.1), np.full_like(p, 0.2)]
    g[0], fast_state[2][0] = 0.0, 0.0  # a row never used so far (an embedding's): v stays 0
    plain_state = [a.copy() for a in fast_state]
    fast.adamw_update(*fast_state[:1], g, *fast_state[1:], 4, 0.0, (0.9, 0.99), 1e-8, 0.1)
    L.adamw_update(*plain_state[:1], g, *plain_state[1:], 4, 0.0, (0.9, 0.99), 1e-8, 0.1)
    np.testing.assert_array_equal(fast_state[0], p)  # not moved, not decayed
    for a, b in zip(fast_state, plain_state, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # v: g g (1 - b2) against (1 - b2) g g
    assert not np.array_equal(fast_state[1], np.full_like(p, 0.1))  # m moved


# --- layer norm -----------------------------------------------------------------------------


@pytest.fixture(params=[norms.BLOCK, 8, 100], ids=lambda b: f"block{b}")
def norm_block(request, monkeypatch):
    """Elements per block of rows: the default (one block here), one row per block (C > 8),
    and blocks of a few rows, the last one short."""
    monkeypatch.setattr(norms, "BLOCK", request.param)
    return request.param


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(2, 7, 12), (1, 1, 5), (3, 33)])
def test_fast_layernorm_equals_the_plain_layer(norm_block, threads, shape, monkeypatch):
    monkeypatch.setattr(norms, "THREADS", threads)
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape) * 3 + 2  # a mean far from 0: the variance must not cancel
    w, b = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    out_f, cache_f = norms.layernorm_forward(x, w, b)
    out_p, cache_p = L.layernorm_forward(x, w, b)
    np.testing.assert_allclose(out_f, out_p, rtol=0, atol=MATCH)
    for a, b_ in zip(cache_f, cache_p, strict=True):
        np.testing.assert_allclose(a, b_, rtol=0, atol=MATCH)
    dout = rng.standard_normal(shape)
    for g_f, g_p in zip(norms.layernorm_backward(dout, cache_f),
                        L.layernorm_backward(dout, cache_p), strict=True):
        assert g_f.shape == g_p.shape
        np.testing.assert_allclose(g_f, g_p, rtol=0, atol=MATCH)


def test_fast_layernorm_float32_stays_float32_and_passes_finite_differences(norm_block):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    w, b = np.ones(16, np.float32), np.zeros(16, np.float32)
    out, cache = norms.layernorm_forward(x, w, b)
    assert out.dtype == cache.mean.dtype == cache.rstd.dtype == np.float32
    assert all(g.dtype == np.float32 for g in norms.layernorm_backward(np.ones_like(x), cache))
    args = {"x": rng.standard_normal((2, 3, 9)), "w": rng.standard_normal(9),
            "b": rng.standard_normal(9)}
    errors = check_layer(norms.layernorm_forward, norms.layernorm_backward, args,
                         ["x", "w", "b"], rng=rng)
    assert max(errors.values()) <= THRESHOLD, errors


# --- softmax cross-entropy and the embedding's backward -----------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
@pytest.mark.parametrize("spread", [4, 100], ids=["one-shift", "row-max"])
def test_fast_cross_entropy_equals_the_plain_layer(dtype, ignored, spread):
    """spread 4: the logits within SHIFT_SPAN, one shift for all; 100: rows far apart (exp of
    one shift would underflow some rows to 0), each row shifted by its own max."""
    rng = np.random.default_rng(13)
    logits = (rng.standard_normal((3, 7, 11)) * 4).astype(dtype)
    logits[0] += spread  # the first sequence's logits lifted above the others
    targets = rng.integers(0, 11, (3, 7))
    if ignored != "none":
        targets[rng.random(targets.shape) < (0.3 if ignored == "some" else 2)] = -1
    loss_f, cache_f = fast.softmax_cross_entropy_forward(logits, targets)
    loss_p, cache_p = L.softmax_cross_entropy_forward(logits, targets)
    tol = MATCH if dtype == np.float64 else 1e-6
    assert type(loss_f) is type(loss_p) and abs(loss_f - loss_p) <= tol * max(1, abs(loss_p))
    d_f = fast.softmax_cross_entropy_backward(0.7, cache_f)
    d_p = L.softmax_cross_entropy_backward(0.7, cache_p)
    assert d_f.dtype == dtype and d_f.shape == logits.shape
    np.testing.assert_allclose(d_f, d_p, rtol=0, atol=tol)


@pytest.mark.parametrize("radix", [True, False], ids=["uint16-sort", "int-sort"])
@pytest.mark.parametrize("small_vocab", [256, 0], ids=["per-id", "sorted"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_embedding_backward_equals_np_add_at(small_vocab, dtype, radix, monkeypatch):
    monkeypatch.setattr(fast, "SMALL_VOCAB", small_vocab)
    monkeypatch.setattr(fast, "RADIX_VOCAB", 1 << 16 if radix else 0)
    rng = np.random.default_rng(14)
    wte = rng.standard_normal((9, 5)).astype(dtype)
    idx = rng.integers(0, 6, (4, 13))  # repeated ids, and ids 6..8 never used
    dout = rng.standard_normal((4, 13, 5)).astype(dtype)
    tol = MATCH if dtype == np.float64 else 1e-5
    for pad in (None, 2):
        out_f, cache_f = fast.embedding_forward(idx, wte, padding_idx=pad)
        out_p, cache = L.embedding_forward(idx, wte, padding_idx=pad)
        np.testing.assert_array_equal(out_f, out_p)
        assert cache_f == cache and not np.shares_memory(out_f, wte)
        got, want = fast.embedding_backward(dout, cache), L.embedding_backward(dout, cache)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        if small_vocab:  # rows summed in np.add.at's order: the same numbers, bit for bit
            np.testing.assert_array_equal(got, want)
        into = rng.standard_normal(wte.shape).astype(dtype)  # the LM head's dwte, added into
        expected = into + want
        assert fast.embedding_backward(dout, cache, out=into) is into
        np.testing.assert_allclose(into, expected, rtol=0, atol=tol)
    _, cache = L.embedding_forward(np.zeros((1, 3), dtype=int), wte, padding_idx=0)  # all pad
    assert not fast.embedding_backward(dout[:1, :3], cache).any()


# --- the switch ----------------------------------------------------------------------------


def test_the_table_holds_every_name_and_the_plain_twins_are_the_layers():
    assert set(PLAIN) == set(FAST) == set(NAMES)
    assert all(PLAIN[n] is getattr(L, n) for n in NAMES)
    twins = {n for n in NAMES if FAST[n] is not PLAIN[n]}
    assert twins == {"attention_core_forward", "attention_core_backward", "gelu_forward",
                     "gelu_backward", "adamw_update", "layernorm_forward", "layernorm_backward",
                     "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
                     "embedding_forward", "embedding_backward", "gqa_attention_forward",
                     "gqa_attention_backward"}
    assert all(FAST[n] is getattr(norms if n.startswith("layernorm") else fast, n)
               for n in twins)
    assert set(FLASH) == set(NAMES)
    assert {n for n in NAMES if FLASH[n] is not FAST[n]} <= {
        "attention_core_forward", "attention_core_backward"}
    assert FLASH["attention_core_forward"] is flash.attention_core_forward


def test_kernels_context_switches_and_restores():
    before = which_kernels()
    with kernels("plain"):
        assert which_kernels() == "plain" and ops.gelu_forward is L.gelu_forward
        with kernels("fast"):
            assert ops.gelu_forward is fast.gelu_forward
        assert ops.gelu_forward is L.gelu_forward
    assert which_kernels() == before
    with pytest.raises(ValueError, match="fast, flash, plain"):
        with kernels("turbo"):
            pass
    assert which_kernels() == before


def _step(model, idx, targets):
    logits, loss = model.forward(idx, targets, rng=np.random.default_rng(0))
    return logits, loss, model.backward()


@pytest.mark.parametrize("make", [
    lambda dt: GPT(GPTConfig(vocab_size=11, block_size=70, n_layer=2, n_head=2, n_embd=8,
                             dropout=0.2), seed=1, dtype=dt),
    lambda dt: Llama(LlamaConfig(vocab_size=11, block_size=70, n_layer=2, n_head=4,
                                 n_kv_head=2, n_embd=16, intermediate_size=24), seed=1, dtype=dt),
], ids=["gpt", "llama"])
def test_a_model_computes_the_same_numbers_with_every_fast_kernel_or_none(make):
    rng = np.random.default_rng(3)
    idx, targets = rng.integers(0, 11, (2, 70)), rng.integers(0, 11, (2, 70))  # 2 query blocks
    for dtype, tol in ((np.float64, MODEL_MATCH), (np.float32, 2e-6)):
        model = make(dtype)
        with kernels("plain"):
            logits_p, loss_p, grads_p = _step(model, idx, targets)
        for which in ("fast", "flash"):
            with kernels(which):
                logits_f, loss_f, grads_f = _step(model, idx, targets)
            assert abs(loss_f - loss_p) <= tol * abs(loss_p)
            assert np.max(np.abs(logits_f - logits_p)) <= tol * np.abs(logits_p).max()
            for k in grads_p:
                assert np.max(np.abs(grads_f[k] - grads_p[k])) <= tol * np.abs(
                    grads_p[k]).max(), (which, k)
                assert grads_f[k].dtype == dtype


def test_a_model_on_flash_attention_still_shows_its_attention_probabilities():
    model = GPT(GPTConfig(vocab_size=11, block_size=70, n_layer=2, n_head=2, n_embd=8),
                seed=1, dtype=np.float64)
    idx = np.random.default_rng(4).integers(0, 11, (2, 70))
    with kernels("plain"):
        model.forward(idx)
        plain = model.attention_probs()
    with kernels("flash"):
        model.forward(idx)
        probs = model.attention_probs()  # recomputed from q, k and the saved lse
    for a, b in zip(probs, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=MATCH)


def test_training_gives_the_same_losses_with_every_fast_kernel_or_none(tmp_path):
    cfg = TrainConfig.preset_config("tiny", max_iters=12, eval_interval=6, eval_iters=2)
    runs = {}
    for which in ("fast", "flash", "plain"):
        with kernels(which):
            cfg.out = str(tmp_path / which)
            runs[which] = train(cfg, progress=False).history
    losses = {w: [r.get("loss", r.get("val_loss")) for r in h] for w, h in runs.items()}
    np.testing.assert_allclose(losses["fast"], losses["plain"], rtol=1e-5)
    np.testing.assert_allclose(losses["flash"], losses["plain"], rtol=1e-5)


def test_the_environment_chooses_the_kernels():
    code = "from numpygpt.kernels import which_kernels; print(which_kernels())"
    for value, expected in (("plain", "plain"), ("fast", "fast"), (" Plain ", "plain")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "NUMPYGPT_KERNELS": value}, check=True)
        assert out.stdout.strip() == expected
    bad = subprocess.run([sys.executable, "-m", "numpygpt", "train", "--preset", "tiny",
                          "--out", "never-made"], capture_output=True, text=True,
                         env={**os.environ, "NUMPYGPT_KERNELS": "turbo"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "NUMPYGPT_KERNELS" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
