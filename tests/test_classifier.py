"""The classification head: the layer (last real token of right-padded sequences), the
model's add_classifier / classify / backward, freezing and LoRA with it, and bad input."""

import numpy as np
import pytest

from numpygpt import AdamW, GPTConfig
from numpygpt import layers as L
from numpygpt.errors import ConfigError
from numpygpt.finetune.model import FinetuneGPT
from numpygpt.gradcheck import check_model

MODEL_GRAD_THRESHOLD = 1e-6


def tiny(**kw):
    return GPTConfig(**{**dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8), **kw})


def test_layer_reads_the_last_real_token_only():
    rng = np.random.default_rng(0)
    h, w, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2)), rng.standard_normal(2)
    lengths = np.array([4, 1, 2])
    logits, cache = L.classifier_forward(h, lengths, w, b)
    np.testing.assert_allclose(logits, h[[0, 1, 2], [3, 0, 1]] @ w + b, rtol=1e-12)
    dh, dw, db = L.classifier_backward(np.ones_like(logits), cache)
    mask = np.zeros((3, 4), bool)
    mask[[0, 1, 2], [3, 0, 1]] = True
    assert not dh[~mask].any() and dh[mask].any()  # padding and earlier tokens: exactly 0


def test_padding_changes_nothing():
    """Right padding is invisible to the last real token (causal attention), so a sequence
    classifies the same alone and padded in a batch with a longer one."""
    model = FinetuneGPT(tiny(), seed=0, dtype=np.float64)
    model.add_classifier(3, seed=1)
    short = np.array([[1, 2, 3]])
    alone, _ = model.classify(short, np.array([3]))
    batch = np.array([[1, 2, 3, 9, 9, 9], [4, 5, 6, 7, 8, 1]])
    together, _ = model.classify(batch, np.array([3, 6]))
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("setup", ["full", "frozen body", "lora"])
def test_whole_model_gradient_check(setup):
    cfg = tiny(vocab_size=7, block_size=5, dropout=0.2 if setup == "lora" else 0.0)
    model = FinetuneGPT(cfg, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in model.params.values():
        p[...] = rng.standard_normal(p.shape) * (0.5 if p.ndim == 1 else 0.3)
    model.add_classifier(4, seed=2)
    if setup == "frozen body":
        model.trainable = {"score.weight", "score.bias", "ln_f.weight", "h.1.mlp.c_fc.weight"}
    elif setup == "lora":
        model.add_lora(rank=2, alpha=3, seed=1)
        for name in model.lora:
            model.params[name + ".lora_B"][...] = rng.standard_normal(
                model.params[name + ".lora_B"].shape) * 0.3
        assert {"score.weight", "score.bias"} <= model.trainable  # the head trains with LoRA
    idx = rng.integers(0, cfg.vocab_size, (3, 5))
    errors = check_model(model, idx, np.array([0, 3, 1]), dropout_seed=3,
                         lengths=np.array([5, 2, 1]))
    assert set(errors) == model.trainable
    assert max(errors.values()) <= MODEL_GRAD_THRESHOLD, errors


def test_head_only_skips_the_body_and_training_learns():
    cfg = tiny()
    model = FinetuneGPT(cfg, seed=0)
    model.add_classifier(2, seed=0)
    model.trainable = {"score.weight", "score.bias"}
    rng = np.random.default_rng(0)
    idx = rng.integers(0, cfg.vocab_size, (16, 6))
    labels = (idx[:, -1] % 2).astype(np.int64)  # the class is a property of the last token
    lengths = np.full(16, 6)
    opt = AdamW(model.trainable_params(), lr=0.05)
    first = model.classify(idx, lengths, labels)[1]
    for _ in range(60):
        model.classify(idx, lengths, labels)
        grads = model.backward()
        assert list(grads) == ["score.weight", "score.bias"]
        opt.step(grads)
    assert model.classify(idx, lengths, labels)[1] < 0.5 * first


def test_errors():
    model = FinetuneGPT(tiny(), seed=0)
    idx = np.zeros((2, 3), np.int64)
    with pytest.raises(ConfigError, match="no classification head"):
        model.classify(idx, np.array([3, 3]))
    model.add_classifier(3)
    with pytest.raises(ConfigError, match="already has a classification head"):
        model.add_classifier(3)
    with pytest.raises(ConfigError, match="n_classes must be >= 2"):
        FinetuneGPT(tiny()).add_classifier(1)
    for lengths, match in [(np.array([3, 0]), r"lengths\[1\] = 0 is outside \[1, 3\]"),
                           (np.array([3]), r"shape \(2,\)"), ([3, 3], "integer numpy array")]:
        with pytest.raises((ValueError, TypeError), match=match):
            model.classify(idx, lengths)
    with pytest.raises(ValueError, match=r"labels\[0\] = 3 is outside \[0, 2\]"):
        model.classify(idx, np.array([3, 3]), np.array([3, 0]))
    model.classify(idx, np.array([3, 3]))
    with pytest.raises(RuntimeError, match="needs a loss"):
        model.backward()
