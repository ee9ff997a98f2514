"""Every layer: gradient checks (float64), dtype preservation, agreement of the fast and the
plain (reference) implementations, numerical stability, and clear errors for bad input."""

import math

import numpy as np
import pytest

from numpygpt import GPT, GPTConfig
from numpygpt import layers as L
from numpygpt.gradcheck import THRESHOLD, check_layer, layer_cases, rel_error
from numpygpt.kernels import FAST, FLASH, PLAIN

ATTN_MATCH = 1e-10  # vectorised vs loop attention, float64
GELU_MATCH = 1e-12  # in-place sigmoid GELU vs the textbook tanh formula, float64 (rtol, atol)

# --- gradient checks: every layer against finite differences ------------------------------
#
# What is checked, case by case: (layer, case, tensors whose gradient is compared, max relative
# error). gradcheck.layer_cases() builds the inputs (tiny float64 shapes, fixed seeds, random
# layer-norm gains); `python -m numpygpt gradcheck` and the notebooks run the same cases.
GRADIENT_CHECKS = [
    ("embedding", "B=1 T=1", "wte", 1e-7),
    ("embedding", "B=2 T=5 duplicate ids", "wte", 1e-7),  # np.add.at must accumulate
    ("embedding", "padding_idx=0", "wte", 1e-7),  # the padding row gets exactly 0
    ("learned_positional", "B=1 T=1", "x wpe", 1e-7),
    ("learned_positional", "B=2 T=3", "x wpe", 1e-7),
    ("sinusoidal_positional", "B=2 T=3 C=5 (odd)", "x", 1e-7),
    ("linear", "x (1, 1, 4)", "x w b", 1e-7),
    ("linear", "x (2, 3, 4)", "x w b", 1e-7),
    ("linear", "x (4,)", "x w b", 1e-7),
    ("lora", "x (2, 3, 5) r=2", "x A B", 1e-7),  # w, b frozen; B random, not its initial 0
    ("lora", "x (1, 1, 5) r=1", "x A B", 1e-7),
    ("layernorm", "B=1 T=1", "x w b", 1e-7),
    ("layernorm", "B=2 T=3", "x w b", 1e-7),
    ("gelu", "x in [-5, 5]", "x", 1e-7),
    ("gelu_reference", "x in [-5, 5]", "x", 1e-7),
    ("mlp", "B=1 T=1", "x w_fc b_fc w_proj b_proj", 1e-7),
    ("mlp", "B=2 T=3", "x w_fc b_fc w_proj b_proj", 1e-7),
    # the key part of b_attn must get exactly 0 (softmax ignores a shift of a whole row)
    ("attention", "B=1 T=1 nh=1", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention", "B=2 T=4 nh=1", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention", "B=2 T=4 nh=2", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention", "B=1 T=5 nh=4 dropout 0.3", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention_reference", "B=1 T=1 nh=1", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention_reference", "B=2 T=4 nh=1", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention_reference", "B=2 T=4 nh=2", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention_reference", "B=1 T=5 nh=4 dropout 0.3", "x w_attn b_attn w_proj b_proj", 1e-7),
    ("attention_core", "B=2 T=4 nh=2", "qkv", 1e-7),  # the heads between c_attn and c_proj
    ("attention_core", "B=1 T=5 nh=4 dropout 0.3", "qkv", 1e-7),
    # the fast twins (numpygpt/kernels/fast.py), checked like the plain layers; T = 70 puts
    # the queries in two blocks
    ("attention_core (fast kernel)", "B=2 T=4 nh=2", "qkv", 1e-7),
    ("attention_core (fast kernel)", "B=1 T=70 nh=2 dropout 0.3", "qkv", 1e-7),
    ("attention_core (flash kernel)", "B=2 T=4 nh=2", "qkv", 1e-7),
    ("attention_core (flash kernel)", "B=1 T=70 nh=2 dropout 0.3", "qkv", 1e-7),
    ("gelu (fast kernel)", "x in [-5, 5]", "x", 1e-7),
    ("layernorm (fast kernel)", "B=2 T=3", "x w b", 1e-7),
    ("softmax_cross_entropy (fast kernel)", "ignored targets (-1)", "logits", 1e-7),
    ("embedding (fast kernel)", "repeats, padding_idx=0", "wte", 1e-7),
    ("classifier", "B=3 T=4 padded", "h w b", 1e-7),  # padding positions get exactly 0
    ("classifier", "B=1 T=1", "h w b", 1e-7),
    ("dropout", "p=0.5", "x", 1e-7),  # the same mask in every forward call
    ("dropout", "p=0", "x", 1e-7),
    ("softmax_cross_entropy", "B=1 T=1", "logits", 1e-7),
    ("softmax_cross_entropy", "B=2 T=3", "logits", 1e-7),
    ("softmax_cross_entropy", "ignored targets (-1)", "logits", 1e-7),
    # preference tuning (DPO)
    ("sequence_logprob", "B=3 T=4, prompt and padding ignored", "logits", 1e-7),
    ("dpo_loss", "B=4 beta=0.1", "logp_c logp_r ref_c ref_r", 1e-7),
    ("dpo_loss", "B=3 beta=2, |margins| ~ 30", "logp_c logp_r ref_c ref_r", 1e-7),
    # Llama's layers (more checks in tests/test_llama.py)
    ("rope", "B=1 nh=1 T=1", "x", 1e-7),
    ("rope", "B=2 nh=2 T=3 hs=6", "x", 1e-7),
    ("rmsnorm", "B=1 T=1", "x w", 1e-7),
    ("rmsnorm", "B=2 T=3", "x w", 1e-7),
    ("silu", "x in [-5, 5]", "x", 1e-7),
    ("swiglu_mlp", "B=1 T=1", "x w_gate w_up w_down", 1e-7),
    ("swiglu_mlp", "B=2 T=3", "x w_gate w_up w_down", 1e-7),
    # shared key/value heads: their gradient sums over the query heads of their group
    ("gqa_core", "B=1 T=1 nh=2 nkv=1", "q k v", 1e-7),
    ("gqa_core", "B=2 T=4 nh=4 nkv=2", "q k v", 1e-7),
    ("gqa_core", "B=1 T=5 nh=3 nkv=1", "q k v", 1e-7),
    ("gqa_core", "B=2 T=3 nh=2 nkv=2", "q k v", 1e-7),
    ("gqa_reference", "B=1 T=1 nh=2 nkv=1", "q k v", 1e-7),
    ("gqa_reference", "B=2 T=4 nh=4 nkv=2", "q k v", 1e-7),
    ("gqa_reference", "B=1 T=5 nh=3 nkv=1", "q k v", 1e-7),
    ("gqa_reference", "B=2 T=3 nh=2 nkv=2", "q k v", 1e-7),
    ("gqa_attention", "B=1 T=1 nh=2 nkv=1", "x w_q w_k w_v w_o", 1e-7),
    ("gqa_attention", "B=2 T=4 nh=4 nkv=2", "x w_q w_k w_v w_o", 1e-7),
    ("gqa_attention", "B=2 T=3 nh=2 nkv=2", "x w_q w_k w_v w_o", 1e-7),
    ("gqa_attention (fast kernel)", "B=2 T=4 nh=4 nkv=2", "x w_q w_k w_v w_o", 1e-7),
    ("gqa_attention (fast kernel)", "B=1 T=70 nh=4 nkv=2", "x w_q w_k w_v w_o", 1e-7),
]

CASES = {(c.layer, c.label): c for c in layer_cases(seed=0)}


@pytest.mark.parametrize("layer,label,tensors,threshold", GRADIENT_CHECKS,
                         ids=[f"{layer}-{label}" for layer, label, *_ in GRADIENT_CHECKS])
def test_gradient_check(layer, label, tensors, threshold):
    case = CASES[layer, label]
    assert case.wrt == tensors.split() and case.threshold == threshold
    errors = case.run(seed=0)
    for name, err in errors.items():
        assert err <= threshold, f"{layer} ({label}) d{name}: rel error {err:.2e}"


def test_the_table_above_is_the_suite_and_covers_every_layer_and_tensor():
    # the table lists exactly the cases that gradcheck (and so the CLI and notebooks) runs
    assert [(layer, label) for layer, label, *_ in GRADIENT_CHECKS] == list(CASES)
    # every forward/backward pair the layers package exports has a case, and so does every
    # fast twin of one (numpygpt/kernels: "(fast kernel)", "(flash kernel)")
    plain = {c.layer for c in CASES.values() if not c.layer.endswith(" kernel)")}
    assert plain == set(L.FORWARD_BACKWARD_PAIRS)
    twins = {(n.removesuffix("_forward").removesuffix("_backward"), which)
             for which, table in (("fast", FAST), ("flash", FLASH)) for n in table
             if n.endswith(("_forward", "_backward")) and table[n] is not PLAIN[n]}
    cases = {(c.layer.rsplit(" (", 1)[0], c.layer.rsplit(" (", 1)[1].split()[0])
             for c in CASES.values() if c.layer.endswith(" kernel)")}
    assert {name for name, _ in cases} == {name for name, _ in twins}
    assert ("attention_core", "flash") in cases
    # and every float argument of every case gets its gradient checked
    for case in CASES.values():
        floats = [n for n, a in case.args.items() if np.asarray(a).dtype.kind == "f"]
        assert case.wrt == floats, (case.layer, case.label)
    labels = {label for layer, label in CASES if layer == "attention"}
    assert any("nh=1" in s for s in labels) and any("nh=4" in s for s in labels)


def test_gradient_check_catches_a_wrong_backward():
    """The harness must be able to fail: a linear backward whose dw is 0.1% too large (a wrong
    constant factor, the kind of mistake a forgotten 1/n or 1/sqrt(hs) makes)."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)

    def wrong_backward(dout, cache):
        dx, dw, db = L.linear_backward(dout, cache)
        return dx, dw * 1.001, db

    errors = check_layer(L.linear_forward, wrong_backward, {"x": x, "w": w, "b": b},
                         ["x", "w", "b"])
    assert errors["x"] < THRESHOLD and errors["b"] < THRESHOLD
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
        ("lora", lambda: L.lora_forward(r(B, T, C), r(C, 5), r(5), r(C, 2), r(2, 5), 2.0),
         L.lora_backward),
        ("layernorm", lambda: L.layernorm_forward(r(B, T, C), r(C), r(C)), L.layernorm_backward),
        ("gelu", lambda: L.gelu_forward(r(B, T, C)), L.gelu_backward),
        ("gelu_reference", lambda: L.gelu_reference_forward(r(B, T, C)),
         L.gelu_reference_backward),
        ("mlp", lambda: L.mlp_forward(r(B, T, C), r(C, 4 * C), r(4 * C), r(4 * C, C), r(C)),
         L.mlp_backward),
        ("attention", lambda: L.attention_forward(r(B, T, C), r(C, 3 * C), r(3 * C), r(C, C),
                                                  r(C), 2, 0.1, np.random.default_rng(0)),
         L.attention_backward),
        ("attention_reference", lambda: L.attention_reference_forward(
            r(B, T, C), r(C, 3 * C), r(3 * C), r(C, C), r(C), 2, 0.1, np.random.default_rng(0)),
         L.attention_reference_backward),
        ("attention_core", lambda: L.attention_core_forward(r(B, T, 3 * C), 2, 0.1,
                                                            np.random.default_rng(0)),
         L.attention_core_backward),
        ("classifier", lambda: L.classifier_forward(r(B, T, C), np.array([3, 1]), r(C, 4), r(4)),
         L.classifier_backward),
        ("dropout", lambda: L.dropout_forward(r(B, T, C), 0.5, np.random.default_rng(0)),
         L.dropout_backward),
        ("softmax_cross_entropy", lambda: L.softmax_cross_entropy_forward(r(B, T, V), idx),
         L.softmax_cross_entropy_backward),
        ("sequence_logprob", lambda: L.sequence_logprob_forward(r(B, T, V), idx),
         L.sequence_logprob_backward),
        ("dpo_loss", lambda: L.dpo_loss_forward(r(B), r(B), r(B), r(B), 0.1),
         L.dpo_loss_backward),
        # Llama's layers
        ("rope", lambda: L.rope_forward(r(B, 2, T, 4), *L.rope_table(T, 4, dtype=dtype)),
         L.rope_backward),
        ("rmsnorm", lambda: L.rmsnorm_forward(r(B, T, C), r(C)), L.rmsnorm_backward),
        ("silu", lambda: L.silu_forward(r(B, T, C)), L.silu_backward),
        ("swiglu_mlp", lambda: L.swiglu_mlp_forward(r(B, T, C), r(C, 6), r(C, 6), r(6, C)),
         L.swiglu_mlp_backward),
        ("gqa_core", lambda: L.gqa_core_forward(r(B, 4, T, 2), r(B, 2, T, 2), r(B, 2, T, 2)),
         L.gqa_core_backward),
        ("gqa_reference", lambda: L.gqa_reference_forward(r(B, 4, T, 2), r(B, 2, T, 2),
                                                          r(B, 2, T, 2)),
         L.gqa_reference_backward),
        ("gqa_attention", lambda: L.gqa_attention_forward(
            r(B, T, C), r(C, C), r(C, 4), r(C, 4), r(C, C), 4, 2,
            *L.rope_table(T, 2, dtype=dtype)), L.gqa_attention_backward),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_its_dtype(dtype):
    calls = _layer_calls(dtype)
    assert {name for name, *_ in calls} == set(L.FORWARD_BACKWARD_PAIRS)
    for name, fwd, bwd in calls:
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


def test_fast_gelu_equals_the_plain_reference():
    x = np.linspace(-12, 12, 2001).reshape(3, 667)
    out, cache = L.gelu_forward(x)
    ref, ref_cache = L.gelu_reference_forward(x)
    # (an absolute tolerance too: in the far negative tail 1 + tanh(u) cancels, so the
    # textbook form loses its relative precision where gelu(x) is nearly 0)
    np.testing.assert_allclose(out, ref, rtol=GELU_MATCH, atol=GELU_MATCH)
    dout = np.random.default_rng(8).standard_normal(x.shape)
    np.testing.assert_allclose(L.gelu_backward(dout, cache),
                               L.gelu_reference_backward(dout, ref_cache),
                               rtol=GELU_MATCH, atol=GELU_MATCH)


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


# --- bad input names the problem, at the public boundary ----------------------------------


def test_bad_token_ids_and_targets_raise_clear_errors():
    """The layers check nothing; GPT.forward checks its integer inputs once, with these."""
    with pytest.raises(ValueError, match=r"token id 9 in idx is out of range \[0, 5\)"):
        L.check_token_ids(np.array([[1, 9]]), 5)
    with pytest.raises(ValueError, match="token id -1"):
        L.check_token_ids(np.array([[-1, 2]]), 5)
    with pytest.raises(TypeError, match="integer"):
        L.check_token_ids(np.array([[1.0, 2.0]]), 5)
    with pytest.raises(ValueError, match="targets shape"):
        L.check_targets(np.zeros((2, 4), int), (2, 3), 5)
    with pytest.raises(ValueError, match="target 7 is out of range"):
        L.check_targets(np.array([7]), (1,), 5)
    with pytest.raises(ValueError, match="target -2 is out of range"):
        L.check_targets(np.array([-2, -1]), (2,), 5)  # -1 is ignore_index, -2 is a mistake
    L.check_targets(np.array([[0, -1, 4]]), (1, 3), 5)  # in range or ignored: fine
    with pytest.raises(ValueError, match="exceeds block_size=2"):  # no row for t >= 2
        L.learned_positional_forward(np.zeros((1, 3, 4)), np.zeros((2, 4)))
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match=r"token id 9 in idx is out of range \[0, 5\)"):
        model.forward(np.array([[1, 9]]))
    with pytest.raises(ValueError, match="target 7 is out of range"):
        model.forward(np.array([[1, 2]]), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="exceeds block_size=4"):
        model.forward(np.zeros((1, 5), dtype=np.int64))
