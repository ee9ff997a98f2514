"""Attention's heads in blocks of queries (layers/attention.py, _query_blocks): each block of
queries is computed against only the keys it may see. Whatever the block size, the numbers are
those of the loop reference, the future gets exactly zero probability, and the gradients pass
finite differences, including blocks that do not divide T and a last block of one query."""

import numpy as np
import pytest

from numpygpt import layers as L
from numpygpt.gradcheck import THRESHOLD, check_layer
from numpygpt.layers import attention as A

MATCH = 1e-10  # blocked vs loop reference, float64


@pytest.fixture(params=[1, 2, 3, 64])
def query_block(request, monkeypatch):
    monkeypatch.setattr(A, "QUERY_BLOCK", request.param)
    return request.param


def _args(rng, B, T, C):
    return (rng.standard_normal((B, T, C)), rng.standard_normal((C, 3 * C)) * 0.5,
            rng.standard_normal(3 * C) * 0.5, rng.standard_normal((C, C)) * 0.5,
            rng.standard_normal(C))


def test_query_blocks_cover_every_query_once(query_block):
    for T in (1, 2, 5, 64, 65, 130):
        blocks = A._query_blocks(T)
        assert blocks[0][0] == 0 and blocks[-1][1] == T
        assert all(b[1] == c[0] for b, c in zip(blocks, blocks[1:], strict=False))
        assert all(0 < t1 - t0 <= query_block for t0, t1 in blocks)


@pytest.mark.parametrize("B,T,C,nh,p", [(1, 7, 8, 2, 0.0), (2, 5, 12, 3, 0.3), (1, 1, 4, 1, 0.0)])
def test_blocked_heads_equal_the_loop_reference(query_block, B, T, C, nh, p):
    rng = np.random.default_rng(3)
    args = _args(rng, B, T, C)
    out_v, cache_v = L.attention_forward(*args, nh, attn_pdrop=p, rng=np.random.default_rng(5))
    out_r, cache_r = L.attention_reference_forward(*args, nh, attn_pdrop=p,
                                                   rng=np.random.default_rng(5))
    assert np.max(np.abs(out_v - out_r)) <= MATCH
    assert np.max(np.abs(cache_v.probs - cache_r.probs)) <= MATCH
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert np.all(cache_v.probs[..., future] == 0.0)  # never written, exactly 0
    dout = rng.standard_normal(out_v.shape)
    for gv, gr in zip(L.attention_backward(dout, cache_v),
                      L.attention_reference_backward(dout, cache_r), strict=True):
        assert np.max(np.abs(gv - gr)) <= MATCH


def test_several_default_blocks_equal_the_loop_reference():
    """T = 130 with the default block of 64: three blocks, the last of 2 queries."""
    assert A.QUERY_BLOCK < 130
    rng = np.random.default_rng(4)
    args = _args(rng, 1, 130, 8)
    out_v, cache_v = L.attention_forward(*args, 2, attn_pdrop=0.1, rng=np.random.default_rng(6))
    out_r, cache_r = L.attention_reference_forward(*args, 2, attn_pdrop=0.1,
                                                   rng=np.random.default_rng(6))
    assert np.max(np.abs(out_v - out_r)) <= MATCH
    dout = rng.standard_normal(out_v.shape)
    for gv, gr in zip(L.attention_backward(dout, cache_v),
                      L.attention_reference_backward(dout, cache_r), strict=True):
        assert np.max(np.abs(gv - gr)) <= MATCH


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_blocked_heads_pass_finite_differences(query_block, p):
    rng = np.random.default_rng(7)
    B, T, C, nh = 2, 5, 8, 2
    qkv = rng.standard_normal((B, T, 3 * C))

    def forward(qkv):  # the same dropout mask in every call
        return L.attention_core_forward(qkv, nh, p, np.random.default_rng(8))

    errors = check_layer(forward, L.attention_core_backward, {"qkv": qkv}, ["qkv"], rng=rng)
    assert max(errors.values()) <= THRESHOLD, errors


def test_float32_stays_float32(query_block):
    rng = np.random.default_rng(9)
    qkv = rng.standard_normal((2, 5, 24)).astype(np.float32)
    y, cache = L.attention_core_forward(qkv, 2)
    assert y.dtype == cache.probs.dtype == np.float32
    assert L.attention_core_backward(np.ones_like(y), cache).dtype == np.float32
