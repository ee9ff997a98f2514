"""Every layer: gradient checks (float64), dtype preservation, agreement of the two attention
implementations, numerical stability, and clear errors for bad input."""

import math

import numpy as np
import pytest

from numpygpt import layers as L
from numpygpt.gradcheck import check_layer, layer_cases, rel_error

GRAD_THRESHOLD = 1e-7  # max relative error of every gradient, float64
ATTN_MATCH = 1e-10  # vectorised vs loop attention, float64

CASES = layer_cases(seed=0)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.layer}-{c.label}" for c in CASES])
def test_gradient_check(case):
    errors = case.run(seed=0)
    assert set(errors) == set(case.wrt)
    for name, err in errors.items():
        assert err <= GRAD_THRESHOLD, f"{case.layer} ({case.label}) d{name}: rel error {err:.2e}"


def test_cases_cover_every_layer_and_tensor():
    layers = {c.layer for c in CASES}
    assert layers == {"embedding", "learned_positional", "sinusoidal_positional", "linear",
                      "layernorm", "gelu", "mlp", "attention", "attention_reference", "dropout",
                      "cross_entropy"}
    labels = {c.label for c in CASES if c.layer == "attention"}
    assert any("nh=1" in s for s in labels) and any("nh=4" in s for s in labels)


def test_gradient_check_catches_a_wrong_backward():
    """The harness must be able to fail: a backward that forgets the 1/(1-p)-style factor."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)

    def wrong_backward(dout, cache):
        dx, dw, db = L.linear_backward(dout, cache)
        return dx, dw * 1.001, db

    errors = check_layer(L.linear_forward, wrong_backward, {"x": x, "w": w, "b": b},
                         ["x", "w", "b"])
    assert errors["x"] < GRAD_THRESHOLD and errors["b"] < GRAD_THRESHOLD
    assert errors["w"] > 1e-4


def test_rel_error():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert math.isclose(rel_error(np.array([1.0]), np.array([3.0])), 0.5)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


# --- attention: the vectorised hot path equals the loop reference -------------------------


@pytest.mark.parametrize("B,T,C,nh,p", [(1, 1, 4, 1, 0.0), (2, 7, 12, 3, 0.0), (3, 16, 16, 4, 0.0),
                                        (2, 9, 8, 2, 0.25)])
def test_vectorised_attention_equals_loop_reference(B, T, C, nh, p):
    rng = np.random.default_rng(1)
    args = (rng.standard_normal((B, T, C)), rng.standard_normal((C, 3 * C)) * 0.5,
            rng.standard_normal(3 * C) * 0.5, rng.standard_normal((C, C)) * 0.5,
            rng.standard_normal(C))
    out_v, cache_v = L.attention_forward(*args, nh, attn_pdrop=p, rng=np.random.default_rng(5))
    out_r, cache_r = L.attention_reference_forward(*args, nh, attn_pdrop=p,
                                                   rng=np.random.default_rng(5))
    assert np.max(np.abs(out_v - out_r)) <= ATTN_MATCH
    assert np.max(np.abs(cache_v.probs - cache_r.probs)) <= ATTN_MATCH
    dout = rng.standard_normal(out_v.shape)
    for gv, gr in zip(L.attention_backward(dout, cache_v),
                      L.attention_reference_backward(dout, cache_r), strict=True):
        assert gv.shape == gr.shape
        assert np.max(np.abs(gv - gr)) <= ATTN_MATCH


def test_attention_is_causal_and_probs_are_exact_zero_in_the_future():
    rng = np.random.default_rng(2)
    B, T, C, nh = 2, 6, 8, 2
    w = (rng.standard_normal((C, 3 * C)), rng.standard_normal(3 * C),
         rng.standard_normal((C, C)), rng.standard_normal(C))
    x = rng.standard_normal((B, T, C))
    out, cache = L.attention_forward(x, *w, nh)
    assert cache.probs.shape == (B, nh, T, T)
    assert np.all(cache.probs[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0.0)
    np.testing.assert_allclose(cache.probs.sum(-1), 1.0, rtol=1e-12)
    x2 = x.copy()
    x2[:, 4:] = rng.standard_normal((B, 2, C))  # change the future only
    out2, _ = L.attention_forward(x2, *w, nh)
    np.testing.assert_array_equal(out[:, :4], out2[:, :4])


# --- dtype: float32 in, float32 out (and float64 likewise) --------------------------------


def _layer_calls(dtype):
    """(name, forward thunk, backward) for every layer, with inputs of `dtype`."""
    rng = np.random.default_rng(3)

    def r(*s):
        return rng.standard_normal(s).astype(dtype)

    B, T, C, V = 2, 3, 8, 11
    idx = rng.integers(0, V, (B, T))
    return [
        ("embedding", lambda: L.embedding_forward(idx, r(V, C)), L.embedding_backward),
        ("learned_positional", lambda: L.learned_positional_forward(r(B, T, C), r(5, C)),
         L.learned_positional_backward),
        ("sinusoidal_positional", lambda: L.sinusoidal_positional_forward(r(B, T, C)),
         L.sinusoidal_positional_backward),
        ("linear", lambda: L.linear_forward(r(B, T, C), r(C, 5), r(5)), L.linear_backward),
        ("layernorm", lambda: L.layernorm_forward(r(B, T, C), r(C), r(C)), L.layernorm_backward),
        ("gelu", lambda: L.gelu_forward(r(B, T, C)), L.gelu_backward),
        ("mlp", lambda: L.mlp_forward(r(B, T, C), r(C, 4 * C), r(4 * C), r(4 * C, C), r(C)),
         L.mlp_backward),
        ("attention", lambda: L.attention_forward(r(B, T, C), r(C, 3 * C), r(3 * C), r(C, C),
                                                  r(C), 2, 0.1, np.random.default_rng(0)),
         L.attention_backward),
        ("attention_reference", lambda: L.attention_reference_forward(
            r(B, T, C), r(C, 3 * C), r(3 * C), r(C, C), r(C), 2, 0.1, np.random.default_rng(0)),
         L.attention_reference_backward),
        ("dropout", lambda: L.dropout_forward(r(B, T, C), 0.5, np.random.default_rng(0)),
         L.dropout_backward),
        ("cross_entropy", lambda: L.softmax_cross_entropy_forward(r(B, T, V), idx),
         L.softmax_cross_entropy_backward),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_its_dtype(dtype):
    for name, fwd, bwd in _layer_calls(dtype):
        out, cache = fwd()
        assert out.dtype == dtype, f"{name} forward returned {out.dtype}"
        dout = np.ones_like(out) if np.ndim(out) else 1.0
        grads = bwd(dout, cache)
        for g in grads if isinstance(grads, tuple) else (grads,):
            assert g.dtype == dtype, f"{name} backward returned {g.dtype}"


# --- individual behaviours ----------------------------------------------------------------


def test_embedding_accumulates_repeated_ids_and_skips_padding():
    wte = np.arange(12.0).reshape(4, 3)
    idx = np.array([[1, 1, 2], [0, 1, 0]])
    out, cache = L.embedding_forward(idx, wte)
    np.testing.assert_array_equal(out, wte[idx])
    dout = np.ones((2, 3, 3))
    dwte = L.embedding_backward(dout, cache)
    np.testing.assert_array_equal(dwte[:, 0], [2, 3, 1, 0])  # id 1 appears 3 times
    _, cache = L.embedding_forward(idx, wte, padding_idx=0)
    dwte = L.embedding_backward(dout, cache)
    np.testing.assert_array_equal(dwte[:, 0], [0, 3, 1, 0])


def test_sinusoidal_table_values():
    pe = L.sinusoidal_table(50, 6, np.float64)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1])
    t = np.arange(50)
    np.testing.assert_allclose(pe[:, 0], np.sin(t))
    np.testing.assert_allclose(pe[:, 3], np.cos(t / 10000 ** (2 / 6)))
    assert L.sinusoidal_table(4, 7).shape == (4, 7)


def test_layernorm_normalises_with_biased_variance_and_eps():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 10)) * 4 + 2
    out, _ = L.layernorm_forward(x, np.ones(10), np.zeros(10))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_gelu_is_the_tanh_approximation():
    x = np.linspace(-12, 12, 2001)
    out, _ = L.gelu_forward(x)
    ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x * x * x)))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)
    out32, _ = L.gelu_forward(x.astype(np.float32))
    assert np.all(np.isfinite(out32))
    np.testing.assert_allclose(out32, ref, rtol=1e-5, atol=1e-6)


def test_dropout_identity_at_zero_and_inverted_scaling():
    x = np.random.default_rng(0).standard_normal((200, 300))
    out, cache = L.dropout_forward(x, 0.0, None)
    np.testing.assert_array_equal(out, x)
    out, cache = L.dropout_forward(np.ones((200, 300)), 0.2, np.random.default_rng(1))
    assert set(np.unique(out)) <= {0.0, 1.25}
    assert abs(out.mean() - 1.0) < 0.02  # inverted dropout keeps the mean
    out2, _ = L.dropout_forward(np.ones((200, 300)), 0.2, np.random.default_rng(1))
    np.testing.assert_array_equal(out, out2)  # same Generator seed, same mask
    np.testing.assert_array_equal(L.dropout_backward(np.ones_like(out), cache), out)


def test_cross_entropy_matches_definition_and_ignores_targets():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 4, 6))
    targets = np.array([[1, -1, 5, 0], [-1, -1, 2, 3]])
    loss, _ = L.softmax_cross_entropy_forward(logits, targets)
    z, y = logits.reshape(-1, 6), targets.reshape(-1)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    keep = y != -1
    assert math.isclose(loss, -logp[keep, y[keep]].mean(), rel_tol=1e-12)


def test_cross_entropy_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0, 9990.0]], dtype=np.float32)
    for dtype in (np.float32, np.float64):
        z = logits.astype(dtype)
        loss, cache = L.softmax_cross_entropy_forward(z, np.array([3]))
        dz = L.softmax_cross_entropy_backward(1.0, cache)
        assert np.isfinite(loss) and np.all(np.isfinite(dz))
        # exact: log p(3) = -10 - log(1 + e^-10 + ...)
        assert math.isclose(float(loss), 10 + math.log1p(math.exp(-10)), rel_tol=1e-6)
        loss0, _ = L.softmax_cross_entropy_forward(z, np.array([0]))
        assert math.isclose(float(loss0), math.log1p(math.exp(-10)), rel_tol=1e-3)
        np.testing.assert_allclose(dz.sum(), 0.0, atol=1e-6)


def test_cross_entropy_all_ignored_is_zero_loss_zero_gradient():
    logits = np.random.default_rng(6).standard_normal((2, 3, 5))
    loss, cache = L.softmax_cross_entropy_forward(logits, np.full((2, 3), -1))
    assert loss == 0.0
    dz = L.softmax_cross_entropy_backward(1.0, cache)
    assert dz.shape == logits.shape and not dz.any()


# --- bad input names the problem ----------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6))
    with pytest.raises(ValueError, match="last dimension must be 4"):
        L.linear_forward(x, rng.standard_normal((4, 5)), rng.standard_normal(5))
    with pytest.raises(ValueError, match="b must have shape"):
        L.linear_forward(x, rng.standard_normal((6, 5)), rng.standard_normal(4))
    with pytest.raises(ValueError, match="not divisible by n_head=4"):
        L.attention_forward(x, rng.standard_normal((6, 18)), rng.standard_normal(18),
                            rng.standard_normal((6, 6)), rng.standard_normal(6), 4)
    with pytest.raises(ValueError, match="w_attn must have shape"):
        L.attention_forward(x, rng.standard_normal((6, 12)), rng.standard_normal(18),
                            rng.standard_normal((6, 6)), rng.standard_normal(6), 2)
    with pytest.raises(ValueError, match=r"token id 9 in idx is out of range \[0, 5\)"):
        L.embedding_forward(np.array([[1, 9]]), rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="token id -1"):
        L.embedding_forward(np.array([[-1, 2]]), rng.standard_normal((5, 3)))
    with pytest.raises(TypeError, match="integer"):
        L.embedding_forward(np.array([[1.0, 2.0]]), rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="exceeds block_size=2"):
        L.learned_positional_forward(x, rng.standard_normal((2, 6)))
    with pytest.raises(ValueError, match="layer-norm weight and bias must have shape"):
        L.layernorm_forward(x, np.ones(5), np.zeros(6))
    with pytest.raises(ValueError, match="does not match logits shape"):
        L.softmax_cross_entropy_forward(rng.standard_normal((2, 3, 5)), np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="target 7 is out of range"):
        L.softmax_cross_entropy_forward(rng.standard_normal((1, 5)), np.array([7]))
    with pytest.raises(ValueError, match="dropout probability"):
        L.dropout_forward(x, 1.0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="dtypes must match"):
        L.linear_forward(x.astype(np.float32), rng.standard_normal((6, 5)),
                         rng.standard_normal(5))
