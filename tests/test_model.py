"""The GPT: names and init, whole-model gradient checks, validation, generation."""

import math

import numpy as np
import pytest

from numpygpt import GPT, AdamW, GPTConfig, clip_grad_norm
from numpygpt import layers as L
from numpygpt.errors import ConfigError
from numpygpt.gradcheck import model_cases, run_model_checks
from numpygpt.models.sampling import sample_next

MODEL_GRAD_THRESHOLD = 1e-6  # every parameter of the whole model, float64


def tiny(**kw):
    return GPTConfig(**{**dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8), **kw})


# --- parameters ---------------------------------------------------------------------------


def test_gpt2_parameter_names_shapes_and_init():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg, seed=0)
    p = model.params
    assert "lm_head.weight" not in p  # tied to wte
    assert p["wte.weight"].shape == (65, 128) and p["wpe.weight"].shape == (64, 128)
    assert p["h.0.attn.c_attn.weight"].shape == (128, 384)
    assert p["h.3.mlp.c_proj.weight"].shape == (512, 128)
    assert p["ln_f.bias"].shape == (128,)
    assert len(p) == 2 + 12 * 4 + 2
    assert all(v.dtype == np.float32 for v in p.values())
    assert abs(p["wte.weight"].std() - 0.02) < 0.001
    assert abs(p["h.0.mlp.c_fc.weight"].std() - 0.02) < 0.001
    assert abs(p["h.0.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert not p["h.1.attn.c_attn.bias"].any() and (p["h.1.ln_2.weight"] == 1).all()
    # same seed, same weights; another seed, other weights
    np.testing.assert_array_equal(GPT(cfg, seed=0).params["wte.weight"], p["wte.weight"])
    assert not np.array_equal(GPT(cfg, seed=1).params["wte.weight"], p["wte.weight"])
    # nanoGPT's baby model has 0.80M parameters with wpe (809,856 with the 65-char vocab)
    assert model.num_params() == 809_856
    assert "wpe.weight" not in GPT(GPTConfig(pos_encoding="sinusoidal")).params


# --- gradients ------------------------------------------------------------------------------


def test_whole_model_gradient_check_every_parameter():
    rows = run_model_checks(seed=0)
    labels = {label for label, *_ in rows}
    assert len(labels) == len(model_cases())
    for label, name, err, _ in rows:
        assert err <= MODEL_GRAD_THRESHOLD, f"{label} d{name}: rel error {err:.2e}"


def test_tied_lm_head_gets_both_gradient_contributions():
    """If the head's contribution to dwte were dropped, rows of tokens that never appear in
    the input would get zero gradient; with it, every row gets some."""
    model = GPT(tiny(), dtype=np.float64)
    idx = np.array([[1, 2, 3]])
    model.forward(idx, np.array([[2, 3, 4]]))
    g = model.backward()["wte.weight"]
    assert np.all(np.abs(g).sum(axis=1) > 0)


def test_logits_are_ln_f_times_wte_transposed():
    model = GPT(tiny(), seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v += rng.standard_normal(v.shape) * 0.1
    idx = rng.integers(0, 11, (2, 5))
    logits, loss = model.forward(idx)
    assert loss is None and logits.shape == (2, 5, 11)
    p = model.params
    x = p["wte.weight"][idx] + p["wpe.weight"][:5]
    for i in range(2):
        pre = f"h.{i}."
        h, _ = L.layernorm_forward(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        a, _ = L.attention_reference_forward(h, p[pre + "attn.c_attn.weight"],
                                             p[pre + "attn.c_attn.bias"],
                                             p[pre + "attn.c_proj.weight"],
                                             p[pre + "attn.c_proj.bias"], 2)
        x = x + a
        h, _ = L.layernorm_forward(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        m, _ = L.mlp_forward(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"],
                             p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
        x = x + m
    xf, _ = L.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])
    np.testing.assert_allclose(logits, xf @ p["wte.weight"].T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_keeps_dtype(dtype):
    model = GPT(tiny(dropout=0.1), dtype=dtype)
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    logits, loss = model.forward(idx, idx)
    assert logits.dtype == dtype and isinstance(loss, float)
    assert all(g.dtype == dtype for g in model.backward().values())


def test_causal_future_tokens_do_not_change_past_logits():
    model = GPT(tiny(), dtype=np.float64)
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    a, _ = model.forward(idx)
    idx2 = idx.copy()
    idx2[0, 4:] = [9, 10]
    b, _ = model.forward(idx2)
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_dropout_only_in_training_mode():
    model = GPT(tiny(dropout=0.5), dtype=np.float64)
    idx = np.array([[1, 2, 3, 4]])
    a, _ = model.forward(idx)
    b, _ = model.forward(idx)
    assert not np.allclose(a, b)  # fresh masks each call
    model.eval()
    c, _ = model.forward(idx)
    d, _ = model.forward(idx)
    np.testing.assert_array_equal(c, d)


def test_overfits_one_batch():
    """The classic sanity check: a model that can memorise one batch has working gradients."""
    model = GPT(tiny(n_embd=32, n_head=4), seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (4, 8))
    y = rng.integers(0, 11, (4, 8))
    opt = AdamW(model.params, lr=3e-3)
    first = model.forward(x, y)[1]
    for _ in range(300):
        model.forward(x, y)
        grads = model.backward()
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
    last = model.forward(x, y)[1]
    assert first > 2.0 and last < 0.05, (first, last)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(n_embd=10, n_head=4), ValueError, "n_embd=10 is not divisible by n_head=4"),
    (dict(n_layer=0), ValueError, "n_layer must be positive"),
    (dict(vocab_size=-3), ValueError, "vocab_size must be positive"),
    (dict(block_size=2.5), ConfigError, "block_size must be an integer"),
    (dict(dropout=1.0), ValueError, "dropout must be in"),
    (dict(pos_encoding="rotary"), ValueError, "pos_encoding must be one of"),
])
def test_config_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tiny(**kwargs)


def test_input_validation():
    model = GPT(tiny())
    with pytest.raises(ValueError, match=r"token id 11 in idx is out of range \[0, 11\)"):
        model.forward(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="token id -2"):
        model.forward(np.array([[-2, 1]]))
    with pytest.raises(TypeError, match="integer"):
        model.forward(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="integer"):
        model.forward([[1, 2]])
    with pytest.raises(ValueError, match="T=9 exceeds block_size=8"):
        model.forward(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model.forward(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="targets shape"):
        model.forward(np.zeros((2, 4), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="targets must be an integer"):
        model.forward(np.zeros((1, 2), dtype=np.int64), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="target 11 is out of range"):
        model.forward(np.zeros((1, 2), dtype=np.int64), np.array([[1, 11]]))
    with pytest.raises(RuntimeError, match="before forward"):
        GPT(tiny()).backward()
    model.forward(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(RuntimeError, match="needs a loss"):
        model.backward()
    with pytest.raises(TypeError, match="dtype"):
        GPT(tiny(), dtype=np.float16)


def test_ignored_targets_do_not_count():
    model = GPT(tiny(), dtype=np.float64)
    idx = np.array([[1, 2, 3, 4]])
    y = np.array([[2, 3, 4, 5]])
    logits, full = model.forward(idx, y)
    y_ign = y.copy()
    y_ign[0, 1] = -1
    _, part = model.forward(idx, y_ign)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([logp[0, t, y[0, t]] for t in (0, 2, 3)])
    assert math.isclose(part, expected, rel_tol=1e-12)


# --- generation ---------------------------------------------------------------------------------


def test_generate_shapes_seeds_and_greedy():
    model = GPT(tiny(), seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v += rng.standard_normal(v.shape) * 0.3  # a model with opinions
    prompt = np.array([[1, 2], [3, 4]])
    out = model.generate(prompt, 12, seed=5)
    assert out.shape == (2, 14) and np.array_equal(out[:, :2], prompt)
    np.testing.assert_array_equal(out, model.generate(prompt, 12, seed=5))
    assert not np.array_equal(out, model.generate(prompt, 12, seed=6))
    greedy = model.generate(prompt, 12, temperature=0)  # 14 > block_size 8: context is cropped
    seq = prompt.copy()
    for _ in range(12):
        logits, _ = model.forward(seq[:, -8:])
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(greedy, seq)
    np.testing.assert_array_equal(model.generate(prompt, 12, top_k=1, seed=3), greedy)
    np.testing.assert_array_equal(model.generate(prompt, 12, top_p=1e-9, seed=3), greedy)
    assert model.training  # generate restores the mode


def test_sample_next_respects_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = np.array([sample_next(logits, 1.0, None, None, rng)[0] for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05],
                               atol=0.03)
    draws = {sample_next(logits, 1.0, 2, None, rng)[0] for _ in range(300)}
    assert draws == {0, 1}
    draws = {sample_next(logits, 1.0, None, 0.75, rng)[0] for _ in range(300)}
    assert draws == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 >= 0.75: the nucleus is {0, 1}
    draws = {sample_next(logits, 1.0, None, 0.85, rng)[0] for _ in range(300)}
    assert draws == {0, 1, 2}


def test_generate_rejects_bad_settings():
    model = GPT(tiny())
    idx = np.array([[1]])
    for kwargs, match in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"),
                          (dict(top_p=1.5), "top_p"), (dict(top_p=0.0), "top_p")]:
        with pytest.raises(ValueError, match=match):
            model.generate(idx, 3, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(idx, -1)
    with pytest.raises(ValueError, match="out of range"):
        model.generate(np.array([[99]]), 3)
    # generate checks its prompt as forward does (same errors), but crops long prompts
    with pytest.raises(TypeError, match="integer numpy array of token ids"):
        model.generate(np.array([[1.0]]), 3)
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model.generate(np.zeros((1, 0), dtype=np.int64), 3)
    assert model.generate(np.zeros((1, 20), dtype=np.int64), 2).shape == (1, 22)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kv_cache_gives_the_same_tokens_as_recomputing(pos, dtype):
    model = GPT(tiny(pos_encoding=pos, block_size=16), seed=2, dtype=dtype)
    rng = np.random.default_rng(1)
    for v in model.params.values():
        v += (rng.standard_normal(v.shape) * 0.3).astype(dtype)
    prompt = rng.integers(0, 11, (3, 5))
    # 5 + 30 > block_size 16: the window slides, and the cache must be rebuilt correctly
    for kwargs in (dict(temperature=0), dict(seed=4), dict(seed=5, top_k=3, top_p=0.9)):
        cached = model.generate(prompt, 30, use_cache=True, **kwargs)
        plain = model.generate(prompt, 30, use_cache=False, **kwargs)
        np.testing.assert_array_equal(cached, plain)


def test_cached_attention_equals_full_attention_on_the_new_positions():
    rng = np.random.default_rng(3)
    B, T, C, nh = 2, 7, 8, 2
    w = (rng.standard_normal((C, 3 * C)), rng.standard_normal(3 * C),
         rng.standard_normal((C, C)), rng.standard_normal(C))
    x = rng.standard_normal((B, T, C))
    qkv = x @ w[0] + w[1]  # (B, T, 3C)
    full, _ = L.attention_core_forward(qkv, nh)
    first, past = L.attention_core_cached(qkv[:, :4], nh)
    rest, (k, v) = L.attention_core_cached(qkv[:, 4:], nh, past)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, atol=1e-12)
    assert k.shape == v.shape == (B, nh, T, C // nh)


def test_the_cached_forward_gives_the_full_forwards_last_logits():
    model = GPT(tiny(), seed=2, dtype=np.float64)
    idx = np.random.default_rng(4).integers(0, model.config.vocab_size, (2, 7))
    full, _ = model.forward(idx)
    _, past = model.forward_cached(idx[:, :4])
    for t in range(4, 7):  # one new token at a time, each against the cache of the ones before
        last, past = model.forward_cached(idx[:, t:t + 1], past)
        np.testing.assert_allclose(last, full[:, t], atol=1e-12)


def test_attention_probs_of_the_last_forward():
    model = GPT(tiny(), dtype=np.float64)
    with pytest.raises(RuntimeError, match="forward"):
        model.attention_probs()
    model.forward(np.array([[1, 2, 3, 4, 5]]))
    maps = model.attention_probs()
    assert len(maps) == 2 and maps[0].shape == (1, 2, 5, 5)
    np.testing.assert_allclose(maps[1].sum(-1), 1.0)
    assert np.all(np.triu(maps[0][0, 0], 1) == 0)


def test_model_from_given_params_skips_the_random_init():
    src = GPT(tiny(), seed=5, dtype=np.float64)
    model = GPT(tiny(), dtype=np.float32, params=src.params)
    assert all(model.params[k].dtype == np.float32 for k in model.params)
    np.testing.assert_allclose(model.params["wte.weight"], src.params["wte.weight"], rtol=1e-6)
    bad = dict(src.params)
    del bad["ln_f.bias"]
    with pytest.raises(ValueError, match="missing 1: ln_f.bias"):
        GPT(tiny(), params=bad)
