"""The fast kernels (numpygpt/kernels/fast.py) against their plain twins (numpygpt/layers), and
the one switch between them (numpygpt.kernels).

Attention's heads in blocks of queries: each block is computed against only the keys it may
see. Whatever the block size, the numbers are those of the plain vectorised layer and of the
loop reference, the future gets exactly zero probability, and the gradients pass finite
differences, including blocks that do not divide T and a last block of one query. GELU's
fast twin gives the plain layer's bits, AdamW's the plain update's numbers (tests/test_optim.py).
A whole model gives the same numbers with every fast kernel or none.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from numpygpt import GPT, GPTConfig, Llama, LlamaConfig, TrainConfig
from numpygpt import layers as L
from numpygpt.gradcheck import THRESHOLD, check_layer
from numpygpt.kernels import FAST, NAMES, PLAIN, fast, kernels, ops, which_kernels
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


def _blocked_against_plain_and_loops(B, T, C, nh, p, seed):
    rng = np.random.default_rng(seed)
    x, w_attn, b_attn, w_proj, b_proj = _args(rng, B, T, C)
    qkv = x @ w_attn + b_attn  # (B, T, 3C)
    y_f, cache_f = fast.attention_core_forward(qkv, nh, p, np.random.default_rng(5))
    y_p, cache_p = L.attention_core_forward(qkv, nh, p, np.random.default_rng(5))
    out_r, cache_r = L.attention_reference_forward(x, w_attn, b_attn, w_proj, b_proj, nh,
                                                   attn_pdrop=p, rng=np.random.default_rng(5))
    assert np.max(np.abs(y_f - y_p)) <= MATCH
    assert np.max(np.abs(y_f @ w_proj + b_proj - out_r)) <= MATCH
    assert np.max(np.abs(cache_f.probs - cache_r.probs)) <= MATCH
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert np.all(cache_f.probs[..., future] == 0.0)  # never written, exactly 0
    assert np.all(cache_p.probs[..., future] == 0.0)  # exp(-inf), exactly 0
    dout = rng.standard_normal(out_r.shape)  # the whole layer's upstream gradient
    dy = dout @ w_proj.T  # the heads' (out = y @ w_proj + b_proj)
    dqkv_f = fast.attention_core_backward(dy, cache_f)
    assert np.max(np.abs(dqkv_f - L.attention_core_backward(dy, cache_p))) <= MATCH
    dx_r = L.attention_reference_backward(dout, cache_r)[0]  # dx = dqkv @ w_attn.T
    assert np.max(np.abs(dqkv_f @ w_attn.T - dx_r)) <= MATCH


@pytest.mark.parametrize("B,T,C,nh,p", [(1, 7, 8, 2, 0.0), (2, 5, 12, 3, 0.3), (1, 1, 4, 1, 0.0)])
def test_blocked_heads_equal_the_plain_layer_and_the_loop_reference(query_block, B, T, C, nh, p):
    _blocked_against_plain_and_loops(B, T, C, nh, p, seed=3)


def test_several_default_blocks_equal_the_plain_layer():
    """T = 130 with the default block of 64: three blocks, the last of 2 queries."""
    assert fast.QUERY_BLOCK < 130
    _blocked_against_plain_and_loops(1, 130, 8, 2, 0.1, seed=4)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_blocked_heads_pass_finite_differences(query_block, p):
    rng = np.random.default_rng(7)
    B, T, C, nh = 2, 5, 8, 2
    qkv = rng.standard_normal((B, T, 3 * C))

    def forward(qkv):  # the same dropout mask in every call
        return fast.attention_core_forward(qkv, nh, p, np.random.default_rng(8))

    errors = check_layer(forward, fast.attention_core_backward, {"qkv": qkv}, ["qkv"], rng=rng)
    assert max(errors.values()) <= THRESHOLD, errors


@pytest.mark.parametrize("core", [fast, L], ids=["fast", "plain"])
def test_attention_float32_stays_float32(core):
    rng = np.random.default_rng(9)
    qkv = rng.standard_normal((2, 5, 24)).astype(np.float32)
    y, cache = core.attention_core_forward(qkv, 2)
    assert y.dtype == cache.probs.dtype == np.float32
    assert core.attention_core_backward(np.ones_like(y), cache).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_gelu_gives_the_plain_layers_bits(dtype):
    x = (np.random.default_rng(1).standard_normal((3, 70_000)) * 4).astype(dtype)  # 3+ blocks
    x[0, :3] = [-100.0, 0.0, 100.0]  # exp overflows harmlessly at the far left
    out_f, cache_f = fast.gelu_forward(x)
    out_p, cache_p = L.gelu_forward(x)
    np.testing.assert_array_equal(out_f, out_p)
    dout = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(fast.gelu_backward(dout, cache_f),
                                  L.gelu_backward(dout, cache_p))
    assert out_f.dtype == dtype
    # and the sigmoid form is the tanh formula (gelu_reference), to rounding
    ref, _ = L.gelu_reference_forward(x.astype(np.float64))
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert np.max(np.abs(out_p - ref)) <= tol * max(1.0, np.abs(ref).max())


# --- the switch ----------------------------------------------------------------------------


def test_the_table_holds_every_name_and_the_plain_twins_are_the_layers():
    assert set(PLAIN) == set(FAST) == set(NAMES)
    assert all(PLAIN[n] is getattr(L, n) for n in NAMES)
    twins = {n for n in NAMES if FAST[n] is not PLAIN[n]}
    assert twins == {"attention_core_forward", "attention_core_backward", "gelu_forward",
                     "gelu_backward", "adamw_update"}
    assert all(FAST[n] is getattr(fast, n) for n in twins)


def test_kernels_context_switches_and_restores():
    before = which_kernels()
    with kernels("plain"):
        assert which_kernels() == "plain" and ops.gelu_forward is L.gelu_forward
        with kernels("fast"):
            assert ops.gelu_forward is fast.gelu_forward
        assert ops.gelu_forward is L.gelu_forward
    assert which_kernels() == before
    with pytest.raises(ValueError, match="fast, plain"):
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
        with kernels("fast"):
            logits_f, loss_f, grads_f = _step(model, idx, targets)
        with kernels("plain"):
            logits_p, loss_p, grads_p = _step(model, idx, targets)
        assert abs(loss_f - loss_p) <= tol * abs(loss_p)
        assert np.max(np.abs(logits_f - logits_p)) <= tol * np.abs(logits_p).max()
        for k in grads_p:
            assert np.max(np.abs(grads_f[k] - grads_p[k])) <= tol * np.abs(grads_p[k]).max(), k
            assert grads_f[k].dtype == dtype


def test_training_gives_the_same_losses_with_every_fast_kernel_or_none(tmp_path):
    cfg = TrainConfig.preset_config("tiny", max_iters=12, eval_interval=6, eval_iters=2)
    runs = {}
    for which in ("fast", "plain"):
        with kernels(which):
            cfg.out = str(tmp_path / which)
            runs[which] = train(cfg, progress=False).history
    losses = {w: [r.get("loss", r.get("val_loss")) for r in h] for w, h in runs.items()}
    np.testing.assert_allclose(losses["fast"], losses["plain"], rtol=1e-5)


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
