"""LoRA and freezing: the layer, add_lora / merge_lora, model.trainable, AdamW over the
trainable parameters, generation with adapters, and the merged model in GPT-2 format."""

import numpy as np
import pytest

from numpygpt import GPT, AdamW, GPTConfig
from numpygpt import layers as L
from numpygpt.errors import ConfigError
from numpygpt.finetune.model import LORA_TARGETS, FinetuneGPT
from numpygpt.gradcheck import check_model
from numpygpt.kernels import ops

MERGE_MATCH = 1e-12  # float64 logits before and after merge_lora
MODEL_GRAD_THRESHOLD = 1e-6


def tiny(**kw):
    return GPTConfig(**{**dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8), **kw})


def batch(cfg, B=3, T=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T)))


def trained_adapters(model, seed=1, scale=0.3):
    """Give every lora_B random values: the start (B = 0) hides most mistakes."""
    rng = np.random.default_rng(seed)
    for name in model.lora:
        b = model.params[name + ".lora_B"]
        b[...] = rng.standard_normal(b.shape) * scale
    return model


# --- the layer ----------------------------------------------------------------------------


def test_lora_layer_is_linear_plus_low_rank_update():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    A, B = rng.standard_normal((5, 2)), rng.standard_normal((2, 4))
    out, _ = L.lora_forward(x, w, b, A, B, 0.5)
    np.testing.assert_allclose(out, x @ (w + 0.5 * A @ B) + b, rtol=1e-12, atol=1e-12)
    out0, _ = L.lora_forward(x, w, b, A, np.zeros_like(B), 0.5)  # B = 0: the plain layer
    np.testing.assert_array_equal(out0, L.linear_forward(x, w, b)[0])
    dx, dA, dB = L.lora_backward(np.ones_like(out), L.lora_forward(x, w, b, A, B, 0.5)[1])
    assert dx.shape == x.shape and dA.shape == A.shape and dB.shape == B.shape


# --- add_lora -----------------------------------------------------------------------------


def test_add_lora_names_shapes_init_and_unchanged_model():
    cfg = tiny()
    model = FinetuneGPT(cfg, seed=0, dtype=np.float64)
    idx, _ = batch(cfg)
    before, _ = model.forward(idx)
    base = {k: v.copy() for k, v in model.params.items()}
    model.add_lora(rank=4, alpha=8, seed=3)
    C = cfg.n_embd
    for i in range(cfg.n_layer):
        for t, (Din, Dout) in zip(LORA_TARGETS, [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)],
                                  strict=True):
            A, B = model.params[f"h.{i}.{t}.lora_A"], model.params[f"h.{i}.{t}.lora_B"]
            assert A.shape == (Din, 4) and B.shape == (4, Dout) and A.dtype == np.float64
            assert not B.any() and 0 < np.abs(A).max() <= 1 / np.sqrt(Din)  # Kaiming-uniform
            assert model.lora[f"h.{i}.{t}"] == 2.0  # alpha / rank
    assert model.trainable == {k for k in model.params if ".lora_" in k}
    assert len(model.trainable) == 4 * 2 * cfg.n_layer
    np.testing.assert_array_equal(model.forward(idx)[0], before)  # B = 0: unchanged
    for k, v in base.items():
        np.testing.assert_array_equal(model.params[k], v)


def test_add_lora_is_deterministic_and_targets_can_be_chosen():
    a, b = FinetuneGPT(tiny(), seed=0), FinetuneGPT(tiny(), seed=0)
    a.add_lora(rank=2, targets=("attn.c_attn",), seed=7)
    b.add_lora(rank=2, targets="attn.c_attn", seed=7)
    assert sorted(a.lora) == sorted(b.lora) == ["h.0.attn.c_attn", "h.1.attn.c_attn"]
    for k in a.trainable:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c = FinetuneGPT(tiny(), seed=0)
    c.add_lora(rank=2, targets=("attn.c_attn",), seed=8)
    assert not np.array_equal(a.params["h.0.attn.c_attn.lora_A"],
                              c.params["h.0.attn.c_attn.lora_A"])


@pytest.mark.parametrize("kwargs,match", [
    ({"rank": 0}, "rank must be positive"),
    ({"rank": -2}, "rank must be positive"),
    ({"rank": 2.0}, "rank must be an integer"),
    ({"rank": 9}, "rank=9 is larger than the layer"),  # n_embd = 8
    ({"alpha": 0}, "alpha must be > 0"),
    ({"alpha": -1}, "alpha must be in"),
    ({"targets": ("attn.c_attn", "attn.q_proj")}, "unknown LoRA targets"),
    ({"targets": ()}, "unknown LoRA targets"),
])
def test_add_lora_errors(kwargs, match):
    model = FinetuneGPT(tiny(), seed=0)
    with pytest.raises(ConfigError, match=match):
        model.add_lora(**kwargs)
    assert not model.lora and not any(".lora_" in k for k in model.params)


def test_adding_twice_and_merging_without_adapters_are_errors():
    model = FinetuneGPT(tiny(), seed=0)
    with pytest.raises(ConfigError, match="no LoRA adapters to merge"):
        model.merge_lora()
    model.add_lora(rank=2)
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        model.add_lora(rank=2)
    model.merge_lora()
    with pytest.raises(ConfigError, match="merged already"):
        model.merge_lora()


# --- trainable and backward ---------------------------------------------------------------


def test_backward_returns_exactly_the_trainable_gradients():
    cfg = tiny(dropout=0.1)
    idx, targets = batch(cfg)
    full = FinetuneGPT(cfg, seed=0, dtype=np.float64)
    full.forward(idx, targets, rng=np.random.default_rng(0))
    all_grads = full.backward()
    assert list(all_grads) == list(full.params)
    # freezing without LoRA: the last block and ln_f; also the embeddings alone
    for names in [{k for k in full.params if k.startswith(("h.1.", "ln_f."))},
                  {"wte.weight"}, {"wpe.weight", "h.0.ln_1.bias"}]:
        model = FinetuneGPT(cfg, seed=0, dtype=np.float64)
        model.trainable = names
        model.forward(idx, targets, rng=np.random.default_rng(0))
        grads = model.backward()
        assert list(grads) == [k for k in model.params if k in names]  # params order
        for k, g in grads.items():
            np.testing.assert_allclose(g, all_grads[k], rtol=1e-12, atol=1e-14)


def test_frozen_linear_maps_compute_no_weight_gradient(monkeypatch):
    """Freezing saves work, not only memory: a frozen linear map's backward asks
    linear_backward for dx alone (frozen=True), and an adapted one goes through lora_backward,
    which has no dw product at all."""
    cfg = tiny()
    idx, targets = batch(cfg)
    calls = []
    real = L.linear_backward
    monkeypatch.setattr(ops, "linear_backward",
                        lambda dout, cache, frozen=False: calls.append(frozen)
                        or real(dout, cache, frozen))
    model = FinetuneGPT(cfg, seed=0)
    model.trainable = {k for k in model.params if k.startswith("h.1.mlp.")}
    model.forward(idx, targets)
    model.backward()
    # blocks 1 and 0 are walked down to block 1 only: 4 linear maps, 2 of them trainable
    assert sorted(calls) == [False, False, True, True]
    calls.clear()
    model = FinetuneGPT(cfg, seed=0)
    model.add_lora(rank=2, targets=("attn.c_attn", "mlp.c_fc"))
    model.forward(idx, targets)
    model.backward()
    assert calls == [True] * 4  # c_proj of attention and MLP in 2 blocks; c_attn/c_fc: LoRA
    assert real(np.ones((2, 3)), (np.ones((2, 4)), np.ones((4, 3))), frozen=True)[1:] == \
        (None, None)


def test_an_adapted_weight_cannot_be_trained_beside_its_adapter():
    model = FinetuneGPT(tiny(), seed=0)
    model.add_lora(rank=2, targets=("mlp.c_fc",))
    for name in ("h.0.mlp.c_fc.weight", "h.1.mlp.c_fc.bias"):
        with pytest.raises(ConfigError, match=f"{name} belongs to a linear map with a LoRA"):
            model.trainable = model.trainable | {name}
    model.trainable = model.trainable | {"h.0.attn.c_attn.weight"}  # not adapted: fine


def test_trainable_validation():
    model = FinetuneGPT(tiny(), seed=0)
    for bad, match in [({"h.0.attn.c_attn.weight", "h.9.mlp.c_fc.weight"}, "unknown parameter"),
                       ("wte.weight", "must be a set"), (set(), "is empty"), (3, "must be a set")]:
        with pytest.raises(ConfigError, match=match):
            model.trainable = bad
    assert model.trainable == set(model.params)  # unchanged by the failures
    model.trainable = ["wte.weight", "ln_f.bias"]  # any iterable of names
    assert model.trainable == {"wte.weight", "ln_f.bias"}


@pytest.mark.parametrize("frozen_body", [False, True])
def test_whole_model_gradient_check_with_adapters_on_a_padded_batch(frozen_body):
    cfg = tiny(vocab_size=7, block_size=5, dropout=0.2)
    model = FinetuneGPT(cfg, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in model.params.values():
        p[...] = rng.standard_normal(p.shape) * (0.5 if p.ndim == 1 else 0.3)
    model.add_lora(rank=2, alpha=3, targets=("attn.c_attn", "mlp.c_proj"), seed=1)
    trained_adapters(model)
    if not frozen_body:  # adapters and some base parameters together
        model.trainable = model.trainable | {"ln_f.weight", "h.0.ln_1.bias", "wte.weight"}
    idx = rng.integers(0, cfg.vocab_size, (2, 4))
    targets = rng.integers(0, cfg.vocab_size, (2, 4))
    targets[0, 2:] = -1  # padding at the end of the first sequence
    errors = check_model(model, idx, targets, dropout_seed=2)
    assert set(errors) == model.trainable
    assert max(errors.values()) <= MODEL_GRAD_THRESHOLD, errors


def test_adamw_steps_only_the_adapters_and_the_loss_goes_down():
    cfg = tiny()
    model = FinetuneGPT(cfg, seed=0)
    idx, targets = batch(cfg, B=4, T=8)
    base = {k: v.copy() for k, v in model.params.items()}
    model.add_lora(rank=4, alpha=8)
    opt = AdamW(model.trainable_params(), lr=5e-2, weight_decay=0.1)
    assert list(opt.params) == [k for k in model.params if ".lora_" in k]
    first = None
    for _ in range(30):
        _, loss = model.forward(idx, targets)
        first = loss if first is None else first
        opt.step(model.backward())
    assert loss < first - 0.03  # a random tiny model: adapters alone move it slowly
    for k, v in base.items():  # the base weights never moved
        np.testing.assert_array_equal(model.params[k], v)
    # AdamW over every parameter refuses gradients for only some of them
    with pytest.raises(ValueError, match="grads do not match params"):
        AdamW(model.params).step(model.backward())


# --- merge_lora, generation and save_pretrained --------------------------------------------


def test_merge_leaves_the_logits_unchanged():
    cfg = tiny()
    model = FinetuneGPT(cfg, seed=0, dtype=np.float64)
    model.add_lora(rank=3, alpha=5)
    trained_adapters(model, scale=1.0)
    idx, _ = batch(cfg)
    before, _ = model.forward(idx)
    adapted = model.forward(idx)[0] - FinetuneGPT(cfg, seed=0, dtype=np.float64).forward(idx)[0]
    assert np.abs(adapted).max() > 1e-3  # the adapters do change the model
    model.merge_lora()
    after, _ = model.forward(idx)
    diff = np.abs(after - before).max()
    print(f"\nmax |logit difference| after merge_lora (float64): {diff:.1e}")
    assert diff <= MERGE_MATCH
    assert not model.lora and not any(".lora_" in k for k in model.params)
    assert model.trainable == set(model.params)
    model.forward(idx, idx)
    assert list(model.backward()) == list(model.params)  # every parameter trains again


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_with_adapters_equals_generate_after_merging(use_cache):
    cfg = tiny(block_size=6)
    model = FinetuneGPT(cfg, seed=0)
    model.add_lora(rank=2, alpha=4)
    trained_adapters(model, scale=2.0)
    prompt = np.array([[1, 2, 3], [4, 4, 0]])
    adapted = model.generate(prompt, 10, temperature=0, use_cache=use_cache)  # window slides
    merged = model
    merged.merge_lora()
    np.testing.assert_array_equal(merged.generate(prompt, 10, temperature=0,
                                                  use_cache=use_cache), adapted)
    plain = FinetuneGPT(cfg, seed=0).generate(prompt, 10, temperature=0)
    assert not np.array_equal(plain, adapted)  # the adapters made a difference


def test_save_pretrained_refuses_unmerged_adapters_and_the_merged_model_loads(tmp_path):
    pytest.importorskip("safetensors.numpy")
    cfg = tiny()
    model = FinetuneGPT(cfg, seed=0)
    model.add_lora(rank=2)
    trained_adapters(model)
    with pytest.raises(ValueError, match="merge_lora"):
        model.save_pretrained(tmp_path / "unmerged")
    assert not (tmp_path / "unmerged").exists()
    idx, _ = batch(cfg)
    expected, _ = model.forward(idx)
    model.merge_lora()
    model.save_pretrained(tmp_path / "merged")
    again = GPT.from_pretrained(tmp_path / "merged")
    np.testing.assert_allclose(again.forward(idx)[0], expected, rtol=1e-5, atol=1e-5)

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        hf_logits = theirs(torch.from_numpy(idx)).logits.numpy()
    assert np.abs(hf_logits - expected).max() < 1e-4
