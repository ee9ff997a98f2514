"""The Llama (numpygpt/llama.py) and its layers: RoPE, RMSNorm, SwiGLU, grouped-query attention.

Gradient checks (float64 finite differences, layer by layer and the whole model per
parameter), the vectorised attention against the loop reference and against ordinary
multi-head attention, RoPE's properties, the KV cache, the Hugging Face folder round trip,
clear errors and dtypes. Parity with transformers itself: tests/test_llama_hf.py.
"""

import json

import numpy as np
import pytest

from numpygpt import Llama, LlamaConfig
from numpygpt import layers as L
from numpygpt.errors import ConfigError, UserError
from numpygpt.gradcheck import (
    MODEL_THRESHOLD,
    THRESHOLD,
    check_layer,
    layer_cases,
    llama_model_cases,
    rel_error,
    run_llama_model_checks,
)
from numpygpt.io.checkpoint import CheckpointError
from numpygpt.layers.gqa import _from_heads
from numpygpt.models.llama import llama_param_count, llama_param_shapes

LLAMA_LAYERS = ("rope", "rmsnorm", "silu", "swiglu_mlp", "gqa_core", "gqa_reference",
                "gqa_attention")
MATCH = 1e-12  # vectorised vs loop GQA, float64


def tiny(**kw):
    return LlamaConfig(**{**dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=2,
                                 n_embd=16, intermediate_size=24), **kw})


def rand_model(cfg, seed=0, dtype=np.float64, scale=10.0):
    """A model with random gains and larger weights (ones and 0.02 hide mistakes)."""
    model = Llama(cfg, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():
        if p.ndim == 1:
            p[...] = 1.0 + 0.5 * rng.standard_normal(p.shape)
        else:
            p *= scale
    return model


# --- gradient checks ------------------------------------------------------------------------

CASES = [c for c in layer_cases(seed=0) if c.layer in LLAMA_LAYERS]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.layer}-{c.label}" for c in CASES])
def test_llama_layer_gradient_check(case):
    for name, err in case.run(seed=0).items():
        assert err <= THRESHOLD, f"{case.layer} ({case.label}) d{name}: rel error {err:.2e}"


def test_llama_layer_cases_cover_the_hard_shapes():
    assert {c.layer for c in CASES} == set(LLAMA_LAYERS)
    for layer in ("gqa_core", "gqa_reference", "gqa_attention"):
        labels = [c.label for c in CASES if c.layer == layer]
        assert any("T=1" in s for s in labels)
        assert any("nkv=1" in s for s in labels)  # multi-query
        assert any("nh=4 nkv=2" in s for s in labels)  # grouped
        assert any("nh=2 nkv=2" in s for s in labels)  # ordinary multi-head
    # random gains: an RMSNorm gain of ones would hide a wrong dw
    assert all(np.ptp(c.args["w"]) > 0.5 for c in CASES if c.layer == "rmsnorm")


def test_gradient_check_catches_a_group_gradient_that_is_not_summed():
    """Keeping only the first query head's contribution to a shared key (instead of the sum
    over its group) must fail the check."""
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 4, 3, 2)), rng.standard_normal((1, 2, 3, 2)), \
        rng.standard_normal((1, 2, 3, 2))

    def wrong_backward(dy, cache):
        dq, dk, dv = L.gqa_core_backward(dy, cache)
        # what a repeat_kv without the sum gives: the gradient of one query head's copy
        qg = cache.q[:, ::2]  # first head of each group
        fake = L.GQACoreCache(qg, cache.k, cache.v, cache.probs[:, ::2])
        dyg = dy.reshape(1, 3, 4, 2)[:, :, ::2].reshape(1, 3, 4)
        return dq, L.gqa_core_backward(dyg, fake)[1], dv

    errors = check_layer(L.gqa_core_forward, wrong_backward, {"q": q, "k": k, "v": v},
                         ["q", "k", "v"], h=1e-3, order=4)
    assert errors["q"] < THRESHOLD and errors["v"] < THRESHOLD
    assert errors["k"] > 1e-3


def test_whole_llama_gradient_check_every_parameter():
    rows = run_llama_model_checks(seed=0)
    assert len({label for label, *_ in rows}) == len(llama_model_cases())
    labels = " ".join(label for label, *_ in rows)
    assert "T=1" in labels and "nkv=1" in labels and "tied" in labels and "untied" in labels
    for label, name, err, thr in rows:
        assert thr == MODEL_THRESHOLD
        assert err <= MODEL_THRESHOLD, f"{label} d{name}: rel error {err:.2e}"
    # every parameter of every case was checked, lm_head only when untied
    names = {name for label, name, *_ in rows if "untied" in label}
    assert names == set(llama_param_shapes(LlamaConfig(**llama_model_cases()[0][1])))


# --- grouped-query attention: vectorised = loop = multi-head with repeated heads ------------


@pytest.mark.parametrize("B,T,nh,nkv,hs", [(2, 5, 4, 2, 3), (1, 1, 2, 1, 2), (2, 4, 6, 3, 2),
                                           (1, 6, 3, 1, 4), (2, 3, 2, 2, 2)])
def test_vectorised_gqa_equals_loop_reference(B, T, nh, nkv, hs):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((B, n, T, hs)) for n in (nh, nkv, nkv))
    y1, c1 = L.gqa_core_forward(q, k, v)
    y2, c2 = L.gqa_reference_forward(q, k, v)
    assert rel_error(y1, y2) < MATCH and rel_error(c1.probs, c2.probs) < MATCH
    dy = rng.standard_normal(y1.shape)
    for g1, g2 in zip(L.gqa_core_backward(dy, c1), L.gqa_reference_backward(dy, c2),
                      strict=True):
        assert g1.shape == g2.shape and rel_error(g1, g2) < MATCH


def test_gqa_equals_multi_head_attention_with_repeated_kv_heads():
    """Hugging Face's repeat_kv: kv head j serves query heads j*g .. j*g+g-1. GQA must equal
    ordinary multi-head attention (attention_core) on the repeated keys and values, and the
    shared heads' gradients must be the sums over their groups."""
    rng = np.random.default_rng(2)
    B, T, nh, nkv, hs = 2, 5, 6, 2, 3
    g = nh // nkv
    q = rng.standard_normal((B, nh, T, hs))
    k, v = rng.standard_normal((B, nkv, T, hs)), rng.standard_normal((B, nkv, T, hs))
    kr, vr = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)  # (B, nh, T, hs)
    qkv = np.concatenate([_from_heads(a) for a in (q, kr, vr)], axis=-1)  # (B, T, 3C)
    y_mha, c_mha = L.attention_core_forward(qkv, nh)
    y, c = L.gqa_core_forward(q, k, v)
    assert rel_error(y, y_mha) < MATCH
    dy = rng.standard_normal(y.shape)
    dq, dk, dv = L.gqa_core_backward(dy, c)
    dqkv = L.attention_core_backward(dy, c_mha).reshape(B, T, 3, nh, hs)
    dq_m, dk_m, dv_m = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    assert rel_error(dq, dq_m) < MATCH
    assert rel_error(dk, dk_m.reshape(B, nkv, g, T, hs).sum(axis=2)) < MATCH
    assert rel_error(dv, dv_m.reshape(B, nkv, g, T, hs).sum(axis=2)) < MATCH


def test_gqa_is_causal():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, n, 6, 2)) for n in (4, 2, 2))
    y, c = L.gqa_core_forward(q, k, v)
    assert np.all(c.probs[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 4:] += 1.0
    v2[:, :, 4:] += 1.0  # change the future only
    y2, _ = L.gqa_core_forward(q, k2, v2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])


def test_cached_gqa_equals_full_forward():
    rng = np.random.default_rng(4)
    B, T, nh, nkv, hs = 2, 6, 4, 2, 4
    C = nh * hs
    w = [rng.standard_normal(s) for s in ((C, C), (C, nkv * hs), (C, nkv * hs), (C, C))]
    x = rng.standard_normal((B, T, C))
    full, _ = L.gqa_attention_forward(x, *w, nh, nkv, *L.rope_table(T, hs, dtype=np.float64))
    out1, past = L.gqa_cached_forward(x[:, :4], *w, nh, nkv,
                                      *L.rope_table(4, hs, dtype=np.float64))
    out2, past = L.gqa_cached_forward(x[:, 4:], *w, nh, nkv,
                                      *L.rope_table(2, hs, dtype=np.float64, offset=4), past)
    assert past[0].shape == (B, nkv, T, hs)  # nkv heads cached, not nh
    assert rel_error(np.concatenate([out1, out2], axis=1), full) < 1e-12


# --- RoPE -----------------------------------------------------------------------------------


def test_rope_table_values():
    cos, sin = L.rope_table(5, 6, theta=10000.0, dtype=np.float64)
    assert cos.shape == sin.shape == (5, 6)
    np.testing.assert_array_equal(cos[0], 1.0)
    np.testing.assert_array_equal(sin[0], 0.0)
    for t in range(5):
        for i in range(3):  # pair (i, i + 3) shares the angle t * theta^(-2i/hs)
            angle = t * 10000.0 ** (-2 * i / 6)
            assert cos[t, i] == cos[t, i + 3] == pytest.approx(np.cos(angle), abs=1e-15)
            assert sin[t, i] == sin[t, i + 3] == pytest.approx(np.sin(angle), abs=1e-15)
    c2, s2 = L.rope_table(2, 6, dtype=np.float64, offset=3)
    np.testing.assert_array_equal(c2, cos[3:5])
    np.testing.assert_array_equal(s2, sin[3:5])


def test_rope_rotates_half_against_half():
    """The rotate_half convention: channel i pairs with i + hs/2 (not with i + 1)."""
    hs = 4
    cos, sin = L.rope_table(2, hs, theta=10000.0, dtype=np.float64)
    x = np.zeros((1, 1, 2, hs))
    x[..., 0] = 1.0  # only channel 0 set: its pair is channel 2
    out, _ = L.rope_forward(x, cos, sin)
    np.testing.assert_allclose(out[0, 0, 1], [np.cos(1.0), 0.0, np.sin(1.0), 0.0], atol=1e-15)


def test_rope_scores_depend_only_on_the_position_difference():
    rng = np.random.default_rng(5)
    hs, T = 8, 12
    cos, sin = L.rope_table(T, hs, theta=10000.0, dtype=np.float64)
    q, k = rng.standard_normal(hs), rng.standard_normal(hs)

    def score(t, s):  # q at position t, k at position s
        x = np.zeros((1, 2, T, hs))
        x[0, 0, t], x[0, 1, s] = q, k
        r, _ = L.rope_forward(x, cos, sin)
        return r[0, 0, t] @ r[0, 1, s]

    for t, s, d in [(3, 1, 5), (7, 7, 4), (2, 0, 9)]:
        assert score(t, s) == pytest.approx(score(t + d, s + d), abs=1e-12)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3  # but they do depend on it


def test_rope_backward_is_the_inverse_rotation():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 6))
    cos, sin = L.rope_table(5, 6, theta=50.0, dtype=np.float64, offset=7)
    out, cache = L.rope_forward(x, cos, sin)
    np.testing.assert_allclose(L.rope_backward(out, cache), x, atol=1e-13)  # R^T R = I
    # a rotation keeps the length of every pair (i, i + hs/2)
    np.testing.assert_allclose(out[..., :3] ** 2 + out[..., 3:] ** 2,
                               x[..., :3] ** 2 + x[..., 3:] ** 2, atol=1e-13)


# --- RMSNorm and SwiGLU: the definitions ----------------------------------------------------


def test_rmsnorm_and_swiglu_match_their_definitions():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 5)) * 3, rng.standard_normal(5)
    out, _ = L.rmsnorm_forward(x, w, eps=1e-6)
    expected = w * x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6)
    assert rel_error(out, expected) < 1e-14
    wg, wu, wd = rng.standard_normal((5, 7)), rng.standard_normal((5, 7)), \
        rng.standard_normal((7, 5))
    out, _ = L.swiglu_mlp_forward(x, wg, wu, wd)
    a = x @ wg
    assert rel_error(out, (a / (1 + np.exp(-a)) * (x @ wu)) @ wd) < 1e-13
    big = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    s, _ = L.silu_forward(big)  # no overflow warning, exact limits
    np.testing.assert_allclose(s, [0.0, -50 / (1 + np.exp(50.0)), 0.0, 50.0, 1000.0],
                               rtol=1e-6, atol=1e-30)


# --- the model ------------------------------------------------------------------------------


def test_param_names_shapes_and_count():
    cfg = tiny()
    model = Llama(cfg)
    names = list(model.params)
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    assert model.params["model.layers.1.self_attn.k_proj.weight"].shape == (16, 8)  # 2 kv heads
    assert model.params["model.layers.0.mlp.down_proj.weight"].shape == (24, 16)
    assert model.params["lm_head.weight"].shape == (16, 11)  # (C, V): (in, out)
    assert model.num_params() == llama_param_count(cfg)
    tied = Llama(tiny(tie_embeddings=True))
    assert "lm_head.weight" not in tied.params
    assert tied.num_params() == llama_param_count(tiny(tie_embeddings=True)) \
        == model.num_params() - 16 * 11
    # norms start at one, matrices at N(0, 0.02); the seed decides
    assert np.all(model.params["model.norm.weight"] == 1)
    assert abs(model.params["model.layers.0.mlp.up_proj.weight"].std() - 0.02) < 0.004
    np.testing.assert_array_equal(Llama(cfg, seed=0).params["lm_head.weight"],
                                  model.params["lm_head.weight"])
    # the baby: about the GPT baby's 809,856 parameters
    assert Llama(LlamaConfig()).num_params() == 804_224


def test_tied_head_gets_both_gradient_contributions():
    model = Llama(tiny(tie_embeddings=True), dtype=np.float64)
    model.forward(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
    g = model.backward()["model.embed_tokens.weight"]
    assert np.all(np.abs(g).sum(axis=1) > 0)  # tokens never seen get the head's gradient


def test_float32_stays_float32():
    model = Llama(tiny(), dtype=np.float32)
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    logits, loss = model.forward(idx, idx)
    assert logits.dtype == np.float32 and isinstance(loss, float)
    grads = model.backward()
    assert list(grads) == list(model.params)
    assert all(g.dtype == np.float32 and g.shape == model.params[k].shape
               for k, g in grads.items())
    assert model.forward_cached(idx)[0].dtype == np.float32


def test_kv_cache_generation_gives_the_same_tokens_as_recomputation():
    model = rand_model(tiny(), dtype=np.float32, scale=20.0)
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    # 14 new tokens: past block_size = 8, so the window slides and the cache restarts
    for kw in [dict(temperature=0), dict(temperature=1.0, seed=3),
               dict(temperature=0.8, top_k=4, top_p=0.9, seed=5)]:
        a = model.generate(idx, 14, **kw)
        b = model.generate(idx, 14, use_cache=False, **kw)
        assert a.shape == (2, 17)
        np.testing.assert_array_equal(a, b)
    assert len(set(model.generate(idx, 14, seed=3)[0, 3:].tolist())) > 2  # not one token
    np.testing.assert_array_equal(model.generate(idx, 0), idx)


def test_public_boundary_checks():
    model = Llama(tiny())
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.forward(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        model.forward(np.array([[11]]))
    with pytest.raises(TypeError):
        model.forward(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="targets shape"):
        model.forward(np.array([[1, 2]]), np.array([[1]]))
    with pytest.raises(RuntimeError, match="before forward"):
        Llama(tiny()).backward()
    model.forward(np.array([[1, 2]]))
    with pytest.raises(RuntimeError, match="needs a loss"):
        model.backward()
    with pytest.raises(ConfigError, match="temperature"):
        model.generate(np.array([[1]]), 2, temperature=-1)
    with pytest.raises(TypeError, match="LlamaConfig"):
        Llama({"vocab_size": 3})
    with pytest.raises(CheckpointError, match="missing 1"):
        model.load_params({k: v for k, v in model.params.items() if k != "lm_head.weight"})


@pytest.mark.parametrize("kw,message", [
    (dict(n_head=3), "n_embd=16 is not divisible by n_head=3"),
    (dict(n_kv_head=3), "n_head=4 is not divisible by n_kv_head=3"),
    (dict(n_embd=12, n_head=4, n_kv_head=1), "must be even"),
    (dict(n_kv_head=0), "n_kv_head must be positive"),
    (dict(intermediate_size=2.5), "intermediate_size must be an integer"),
    (dict(rope_theta=1.0), "rope_theta must be > 1"),
    (dict(rms_eps=-1e-5), "rms_eps must be in"),
    (dict(tie_embeddings="yes"), "tie_embeddings must be true or false"),
])
def test_bad_configs_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**kw)


def test_config_dict_round_trip():
    cfg = tiny(tie_embeddings=True, rope_theta=500.0)
    assert LlamaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown config keys"):
        LlamaConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


# --- Hugging Face folders -------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tie", [(np.float32, False), (np.float64, True)])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, dtype, tie):
    model = rand_model(tiny(tie_embeddings=tie, rope_theta=500.0, rms_eps=1e-6), dtype=dtype,
                       scale=3.0)
    model.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2
    assert config["hidden_size"] == 16 and config["tie_word_embeddings"] is tie
    back = Llama.from_pretrained(tmp_path / "out", dtype=dtype)
    assert back.config == model.config and not back.training
    for k, a in model.params.items():
        np.testing.assert_array_equal(back.params[k], a)
    idx = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(back.forward(idx)[0], model.forward(idx)[0])
    model.save_pretrained(tmp_path / "out")  # an earlier export may be replaced


def _write_folder(folder, config, tensors):
    """A Hugging Face-style folder, written directly (the layout transformers writes)."""
    import safetensors.numpy

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.numpy.save_file(tensors, str(folder / "model.safetensors"),
                                metadata={"format": "pt"})


@pytest.fixture
def exported(tmp_path):
    """(folder, config dict, tensors dict) of a valid export, for breaking one thing."""
    folder = tmp_path / "good"
    Llama(tiny()).save_pretrained(folder)
    import safetensors.numpy

    tensors = safetensors.numpy.load_file(str(folder / "model.safetensors"))
    return json.loads((folder / "config.json").read_text()), tensors


@pytest.mark.parametrize("change,message", [
    (lambda c, t: c.update(model_type="gpt2", architectures=["GPT2LMHeadModel"]),
     "model_type is 'gpt2'"),
    (lambda c, t: c.update(rope_parameters={"rope_type": "llama3", "factor": 8.0,
                                            "rope_theta": 1e4}), "rope_parameters"),
    (lambda c, t: c.update(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
    (lambda c, t: c.update(attention_bias=True), "attention_bias is True"),
    (lambda c, t: c.update(mlp_bias=True), "mlp_bias is True"),
    (lambda c, t: c.update(hidden_act="gelu"), "hidden_act is 'gelu'"),
    (lambda c, t: c.update(head_dim=8), "head_dim is 8"),
    (lambda c, t: c.pop("hidden_size"), "missing hidden_size"),
    (lambda c, t: c.update(num_key_value_heads=3), "not divisible by n_kv_head=3"),
    (lambda c, t: t.pop("model.layers.1.mlp.up_proj.weight"), "missing 1"),
    (lambda c, t: t.update(extra=np.zeros(3, np.float32)), "unexpected 1"),
    (lambda c, t: t.update({"model.norm.weight": np.ones(15, np.float32)}), "wrong shape 1"),
    (lambda c, t: t.update({"model.norm.weight": np.ones(16, np.int32)}), "float tensors"),
    (lambda c, t: t["model.layers.0.self_attn.q_proj.weight"].__setitem__((0, 0), np.nan),
     "NaN or inf"),
    (lambda c, t: c.update(tie_word_embeddings=True), "lm_head.weight differs"),
    (lambda c, t: c.update(num_hidden_layers=100), "num_hidden_layers is 100"),
])
def test_bad_folders_are_one_line_checkpoint_errors(tmp_path, exported, change, message):
    config, tensors = exported
    change(config, tensors)
    _write_folder(tmp_path / "bad", config, tensors)
    with pytest.raises(CheckpointError) as e:
        Llama.from_pretrained(tmp_path / "bad")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_tied_lm_head_must_equal_the_embedding(tmp_path, exported):
    config, tensors = exported
    config["tie_word_embeddings"] = True
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    _write_folder(tmp_path / "tied", config, tensors)
    assert "lm_head.weight" not in Llama.from_pretrained(tmp_path / "tied").params  # equal: ok
    tensors["lm_head.weight"][0, 0] += 1.0
    _write_folder(tmp_path / "tied", config, tensors)
    with pytest.raises(CheckpointError, match="differs from model.embed_tokens.weight"):
        Llama.from_pretrained(tmp_path / "tied")


def test_missing_files_and_wrong_folders(tmp_path, exported):
    with pytest.raises(CheckpointError, match="no such folder"):
        Llama.from_pretrained(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="a file, not a folder"):
        Llama.from_pretrained(tmp_path / "f")
    config, tensors = exported
    _write_folder(tmp_path / "a", config, tensors)
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Llama.from_pretrained(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Llama.from_pretrained(tmp_path / "b")
    # export: never into a folder holding other things
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        Llama(tiny()).save_pretrained(tmp_path / "c")
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"


def test_older_transformers_config_keys_are_read(tmp_path, exported):
    """transformers < 5 writes rope_theta and rope_scaling: null, no rope_parameters."""
    config, tensors = exported
    del config["rope_parameters"]
    config.update(rope_theta=123.0, rope_scaling=None)
    _write_folder(tmp_path / "old", config, tensors)
    assert Llama.from_pretrained(tmp_path / "old").config.rope_theta == 123.0


def test_attention_probs_are_causal_distributions():
    model = Llama(tiny(), seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        model.attention_probs()
    model.forward(np.array([[1, 2, 3, 4]]))
    probs = model.attention_probs()
    assert len(probs) == 2 and probs[0].shape == (1, 4, 4, 4)  # one per query head
    for p in probs:
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
        assert np.all(np.triu(p[0, 0], 1) == 0)


def test_hostile_files_are_refused_before_reading(tmp_path, exported):
    """The Llama loader reuses numpygpt.io.hf_gpt2's guarded readers: a weights file that links out
    of the folder, or one cut short, is a one-line CheckpointError."""
    config, tensors = exported
    _write_folder(tmp_path / "src", config, tensors)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "config.json").write_text(json.dumps(config))
    (tmp_path / "evil" / "model.safetensors").symlink_to(tmp_path / "src" / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside") as e:
        Llama.from_pretrained(tmp_path / "evil")
    assert "\n" not in str(e.value)
    data = (tmp_path / "src" / "model.safetensors").read_bytes()
    (tmp_path / "src" / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="outside the file|cannot read") as e:
        Llama.from_pretrained(tmp_path / "src")
    assert "\n" not in str(e.value)
