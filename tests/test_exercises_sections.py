"""The checkers of notebook 07's dropout and block-backward exercises and of notebook 10's
top-p and KV-cache exercises, every way a learner meets them: a right answer passes (in float32
too where the exercise has a float32 case), a stub gets "not implemented yet", typical wrong
answers written as a learner would write them are rejected with the wrong output and the
likely mistake named, every catalogued mistake is named when made, and a hard-coded answer to
the top-p filter fails."""

import re

import numpy as np
import pytest
from exercise_reports import assert_not_implemented, assert_passes, flat, no_return, stub

from numpygpt import layers as L
from numpygpt.course import exercises as E
from numpygpt.course.exercises import ch07_gpt as C7
from numpygpt.course.exercises import ch10_sampling as C10
from numpygpt.models.gpt import GPT


def assert_named(report, output, sentence):
    """Rejected, `output` among the wrong ones, with the worst element or the shape shown, and
    the catalogued sentence (its first words) named."""
    text = flat(str(report))
    assert not report.ok and output in report.wrong, text
    line = next(ln for ln in text.splitlines() if ln.startswith(f"✗ {output}"))
    assert "wrong" in line, text
    assert re.search(r"yours (\[?-?[\d.]|nan|inf)|has shape", text), text
    assert f"this looks like: {sentence}" in text, text


# --- dropout: right answers, written as a learner would ----------------------------------------


def dropout_forward(x, p, rng):
    if p == 0:
        return x.copy(), None
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    mask = keep / x.dtype.type(1 - p)  # the factor in x's dtype: float32 stays float32
    return x * mask, mask


def dropout_backward(dout, cache):
    return dout if cache is None else dout * cache


def dropout_forward_own_cache(x, p, rng):
    """A right answer whose cache is its own: the keep-mask and p."""
    keep = rng.random(x.shape, dtype=x.dtype) >= p if p else np.ones(x.shape, bool)
    return np.where(keep, x / x.dtype.type(1 - p), x.dtype.type(0)), (keep, p)


def dropout_backward_own_cache(dout, cache):
    keep, p = cache
    return np.where(keep, dout / dout.dtype.type(1 - p), dout.dtype.type(0))


def test_dropout_right_answers_pass_in_float64_and_float32():
    for fwd, bwd in ((dropout_forward, dropout_backward), (L.dropout_forward, L.dropout_backward),
                     (dropout_forward_own_cache, dropout_backward_own_cache)):
        report = E.check_dropout_forward(fwd, show=False)
        assert_passes(report)
        assert "p=0.1, float32" in str(report) and "p=0, evaluation" in str(report)
        assert_passes(E.check_dropout_backward(bwd, fwd, show=False))


def test_dropout_stubs_are_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_dropout_forward(fn, show=False))
        assert_not_implemented(E.check_dropout_backward(fn, dropout_forward, show=False))
    # the backward is checked on the forward's cache: a stub forward stops it the same way
    report = E.check_dropout_backward(dropout_backward, stub, show=False)
    assert_not_implemented(report)
    assert "stub raises NotImplementedError" in str(report)


def test_dropout_backward_needs_a_right_forward_first():
    wrong_forward = lambda x, p, rng: (x * (rng.random(x.shape) >= p), None)  # noqa: E731
    report = E.check_dropout_backward(dropout_backward, wrong_forward, show=False)
    text = flat(str(report))
    assert not report.ok and not report.not_implemented
    assert "make check_dropout_forward pass first" in text, text


def test_a_forward_without_its_cache_is_pointed_out():
    report = E.check_dropout_forward(lambda x, p, rng: dropout_forward(x, p, rng)[0], show=False)
    text = str(report)
    assert not report.ok and report.wrong == ["cache"], text
    assert "return (out, cache)" in flat(text)


def test_a_float64_mask_on_float32_input_is_a_dtype_mistake():
    def upcast(x, p, rng):
        keep = rng.random(x.shape, dtype=x.dtype) >= p
        return x * (keep / (1 - p)), None  # a bool array / a Python float is float64
    text = str(E.check_dropout_forward(upcast, show=False))
    assert "out (p=0.1, float32)  wrong: has dtype float64, expected float32" in text, text


# --- dropout: wrong answers --------------------------------------------------------------------


def drop_unscaled(x, p, rng):
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    return x * keep, keep


def drop_times_1mp(x, p, rng):
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    return x * keep * x.dtype.type(1 - p), keep


def drop_divided_by_p(x, p, rng):
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    return x * keep / x.dtype.type(p), keep


def drop_p_is_keep(x, p, rng):
    keep = rng.random(x.shape, dtype=x.dtype) < p  # "keep with probability p"
    return x * keep / x.dtype.type(p), keep


def drop_below(x, p, rng):
    keep = rng.random(x.shape, dtype=x.dtype) < 1 - p
    return x * keep / x.dtype.type(1 - p), keep


def drop_float64_draw(x, p, rng):
    keep = rng.random(x.shape) >= p
    return x * keep / x.dtype.type(1 - p), keep


@pytest.mark.parametrize("wrong,output,sentence", [
    (drop_unscaled, "out", "the kept elements are not scaled by 1/(1-p)"),
    (drop_times_1mp, "out", "multiplied by (1-p) instead of divided by it"),
    (drop_divided_by_p, "out", "divided by p instead of 1-p"),
    (drop_p_is_keep, "out", "p taken as the probability to keep"),
    (drop_below, "out", "the mask is right in law but not the package's"),
    (drop_float64_draw, "out", "the uniform numbers drawn in float64"),
], ids=["unscaled", "times-1-p", "by-p", "p-is-keep", "u-below-1-p", "float64-draw"])
def test_dropout_forward_mistakes_are_named(wrong, output, sentence):
    assert_named(E.check_dropout_forward(wrong, show=False), output, sentence)


def test_p_as_keep_probability_is_not_the_identity_at_p0():
    text = str(E.check_dropout_forward(drop_p_is_keep, show=False))
    assert "out (p=0, evaluation)  wrong" in text, text


def forward_keeping_the_rng(x, p, rng):
    """A forward whose cache is (p, rng): its backward will draw again."""
    out, _ = dropout_forward(x, p, rng)
    return out, (p, rng)


def backward_new_mask(dout, cache):
    p, rng = cache
    if p == 0:
        return dout
    return dout * ((rng.random(dout.shape, dtype=dout.dtype) >= p) / dout.dtype.type(1 - p))


def backward_unscaled(dout, cache):
    return dout if cache is None else dout * (cache != 0)


def backward_identity(dout, cache):
    return dout


def backward_scale_only(dout, cache):
    return dout if cache is None else dout * cache.max()


@pytest.mark.parametrize("forward,wrong,sentence", [
    (forward_keeping_the_rng, backward_new_mask, "a new mask drawn in the backward"),
    (dropout_forward, backward_unscaled, "dx not scaled by 1/(1-p)"),
    (dropout_forward, backward_identity, "dx = dout: a dropped element"),
    (dropout_forward, backward_scale_only, "dx scaled by 1/(1-p) but not masked"),
], ids=["new-mask", "unscaled", "identity", "not-masked"])
def test_dropout_backward_mistakes_are_named(forward, wrong, sentence):
    assert_named(E.check_dropout_backward(wrong, forward, show=False), "dx", sentence)


def test_every_dropout_mistake_in_the_catalogue_is_named():
    for sentence, mistake in C7.DROPOUT_FORWARD_MISTAKES:
        assert_named(E.check_dropout_forward(mistake, show=False), "out", sentence)
    # a backward mistake as the catalogue computes it, from the case's p and seed
    seeds = {p: seed for _, _, p, _, seed in C7._DROPOUT_CASES}
    for sentence, mistake in C7.DROPOUT_BACKWARD_MISTAKES:
        def wrong(dout, cache, mistake=mistake):
            p, _ = cache
            mask = L.dropout_forward(np.zeros(dout.shape, dout.dtype), p,
                                     np.random.default_rng(seeds[p]))[1]
            return mistake(dout, (mask, p, seeds[p], dout.shape, dout.dtype))
        report = E.check_dropout_backward(wrong, forward_keeping_the_rng, show=False)
        assert_named(report, "dx", sentence)


# --- one block's backward ----------------------------------------------------------------------


def mlp_branch(d, cache, grads):
    """The gradient of x_mid through the MLP branch, from the gradient of its output."""
    dm = L.dropout_backward(d, cache.mlp_drop)
    dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = L.linear_backward(dm, cache.mlp_proj)
    dh = L.gelu_backward(dg, cache.gelu)
    dln2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = L.linear_backward(dh, cache.c_fc)
    dx, grads["ln_2.weight"], grads["ln_2.bias"] = L.layernorm_backward(dln2, cache.ln_2)
    return dx


def attention_branch(d, cache, grads):
    """The gradient of x_in through the attention branch, from the gradient of its output."""
    da = L.dropout_backward(d, cache.attn_drop)
    dy, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = L.linear_backward(da, cache.c_proj)
    dqkv = L.attention_core_backward(dy, cache.attn)
    dln1, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = \
        L.linear_backward(dqkv, cache.c_attn)
    dx, grads["ln_1.weight"], grads["ln_1.bias"] = L.layernorm_backward(dln1, cache.ln_1)
    return dx


def block_backward(dx_out, cache, grads):
    """A right answer, written from the listing of notebook 07."""
    dx_mid = dx_out + mlp_branch(dx_out, cache, grads)
    return dx_mid + attention_branch(dx_mid, cache, grads)


def test_block_backward_right_answers_pass():
    report = E.check_block_backward(block_backward, show=False)
    assert_passes(report)
    text = str(report)
    assert "✓ dx" in text and all(f"✓ grads['{n}']" in text for n in C7.BLOCK_PARAMS)
    # the package's own block backward, its names without the "h.0." prefix
    model = GPT(C7._block_model().config, dtype=np.float64)

    def package(dx_out, cache, grads):
        g = {}
        dx = model.block_backward(0, dx_out, cache, g)
        grads.update({k.removeprefix("h.0."): v for k, v in g.items()})
        return dx
    assert_passes(E.check_block_backward(package, show=False))


def test_block_backward_stub_is_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_block_backward(fn, show=False))


def test_a_gradient_not_stored_is_named():
    def forgets_ln_1(dx_out, cache, grads):
        dx = block_backward(dx_out, cache, grads)
        del grads["ln_1.weight"], grads["ln_1.bias"]
        return dx
    report = E.check_block_backward(forgets_ln_1, show=False)
    text = str(report)
    assert report.wrong == ["grads['ln_1.weight']", "grads['ln_1.bias']"], text
    assert "✗ grads['ln_1.weight']  missing: forgets_ln_1 did not store it in grads" in text


def no_skip_at_mid(dx_out, cache, grads):
    dx_mid = mlp_branch(dx_out, cache, grads)
    return dx_mid + attention_branch(dx_mid, cache, grads)


def no_skip_at_in(dx_out, cache, grads):
    dx_mid = dx_out + mlp_branch(dx_out, cache, grads)
    return attention_branch(dx_mid, cache, grads)


def residual_twice(dx_out, cache, grads):
    dx_mid = dx_out + mlp_branch(dx_out, cache, grads)
    return dx_mid + dx_out + attention_branch(dx_mid, cache, grads)


def attention_gets_dx_out(dx_out, cache, grads):
    dx_mid = dx_out + mlp_branch(dx_out, cache, grads)
    return dx_mid + attention_branch(dx_out, cache, grads)


def attention_first(dx_out, cache, grads):
    dx_mid = dx_out + attention_branch(dx_out, cache, grads)
    return dx_mid + mlp_branch(dx_mid, cache, grads)


def swapped_layer_norm_caches(dx_out, cache, grads):
    return block_backward(dx_out, cache._replace(ln_1=cache.ln_2, ln_2=cache.ln_1), grads)


def no_dropout_backward(dx_out, cache, grads):
    return block_backward(dx_out, cache._replace(attn_drop=None, mlp_drop=None), grads)


def swapped_dropout_masks(dx_out, cache, grads):
    return block_backward(dx_out, cache._replace(attn_drop=cache.mlp_drop,
                                                 mlp_drop=cache.attn_drop), grads)


@pytest.mark.parametrize("wrong,output,sentence", [
    (no_skip_at_mid, "dx", "forgot the residual path at x_mid"),
    (no_skip_at_mid, "grads['attn.c_proj.weight']", "forgot the residual path at x_mid"),
    (no_skip_at_in, "dx", "forgot the residual path at x_in"),
    (residual_twice, "dx", "the upstream gradient added twice"),
    (attention_gets_dx_out, "grads['ln_1.weight']", "the attention branch got dx_out"),
    (attention_first, "grads['mlp.c_fc.weight']", "the branches in the wrong order"),
    (swapped_layer_norm_caches, "grads['ln_2.weight']", "ln_1's and ln_2's caches swapped"),
    (no_dropout_backward, "grads['mlp.c_fc.bias']", "the dropout masks skipped"),
    (swapped_dropout_masks, "dx", "the two dropout masks swapped"),
], ids=["no-skip-mid-dx", "no-skip-mid-param", "no-skip-in", "twice", "attn-dx-out",
        "attn-first", "ln-caches", "no-dropout", "dropout-swapped"])
def test_block_backward_mistakes_are_named(wrong, output, sentence):
    assert_named(E.check_block_backward(wrong, show=False), output, sentence)


def test_every_block_mistake_in_the_catalogue_is_named_once_in_full():
    for sentence, mistake in C7.BLOCK_MISTAKES:
        report = E.check_block_backward(mistake, show=False)
        assert_named(report, report.wrong[0], sentence)
        text = flat(str(report))
        assert text.count(sentence) == 1, text  # then "the same mistake as above"
        if len(report.wrong) > 1:
            assert "this looks like: the same mistake as above" in text


def test_only_the_gradients_a_mistake_touches_are_wrong():
    report = E.check_block_backward(no_skip_at_in, show=False)
    assert report.wrong == ["dx"], str(report)
    report = E.check_block_backward(no_skip_at_mid, show=False)
    assert "grads['mlp.c_fc.weight']" not in report.wrong and "dx" in report.wrong


# --- top-p -------------------------------------------------------------------------------------


def top_p(probs, top_p):
    """A right answer with a loop over the rows and searchsorted."""
    out = np.zeros_like(probs)
    for b, row in enumerate(probs):
        order = np.argsort(-row)
        n = np.searchsorted(np.cumsum(row[order]), top_p) + 1  # the token reaching top_p, in
        kept = order[:n]
        out[b, kept] = row[kept] / row[kept].sum()
    return out


def test_top_p_right_answers_pass_and_every_case_is_tried():
    report = E.check_top_p_filter(top_p, show=False)
    assert_passes(report)
    text = str(report)
    for label in ("random rows", "top_p=1.0", "top_p=1e-9", "exactly a running total"):
        assert label in text, text
    assert_passes(E.check_top_p_filter(E.reference_top_p_filter, show=False))


def test_top_p_cases_cover_the_edges():
    cases = C10._top_p_cases()
    ps = [t for _, _, t in cases]
    assert 1.0 in ps and min(ps) < 1e-6 and len(set(ps)) >= 5
    for label, probs, t in cases:
        kept = (E.reference_top_p_filter(probs, t) > 0).sum(-1)
        if t == 1.0:
            assert (kept == probs.shape[1]).all()
        if t < 1e-6:
            assert (kept == 1).all()
        if "exactly" in label:  # the kept mass is exactly top_p, in every row
            mass = np.where(E.reference_top_p_filter(probs, t) > 0, probs, 0).sum(-1)
            assert (mass == t).all()
    # rows that differ: nuclei of different sizes within one batch
    label, probs, t = cases[1]
    assert len(set((E.reference_top_p_filter(probs, t) > 0).sum(-1).tolist())) > 1


def test_top_p_stub_is_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_top_p_filter(fn, show=False))


def test_a_hard_coded_top_p_answer_fails():
    old = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.05, 0.8, 0.1, 0.05]])
    answer = E.reference_top_p_filter(old, 0.75)  # the old checker's only case
    for fn in (lambda probs, p: answer.copy(),
               lambda probs, p: answer if probs.shape == answer.shape else top_p(probs, 0.75),
               lambda probs, p: top_p(probs, 0.75)):  # ignores top_p
        report = E.check_top_p_filter(fn, show=False)
        assert not report.ok and not report.not_implemented, str(report)


def top_p_excludes_crossing(probs, p):
    order = np.argsort(-probs, -1)
    sp = np.take_along_axis(probs, order, -1)
    keep_sorted = np.cumsum(sp, -1) < p
    keep_sorted[..., 0] = True  # not empty at least
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    out = np.where(keep, probs, 0)
    return out / out.sum(-1, keepdims=True)


def top_p_less_equal(probs, p):
    order = np.argsort(-probs, -1, kind="stable")
    sp = np.take_along_axis(probs, order, -1)
    keep_sorted = np.cumsum(sp, -1) - sp <= p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    out = np.where(keep, probs, 0)
    return out / out.sum(-1, keepdims=True)


def top_p_sorted_output(probs, p):
    return -np.sort(-top_p(probs, p), -1)


@pytest.mark.parametrize("wrong,sentence", [
    (top_p_excludes_crossing, "nucleus excludes the token that crosses top_p"),
    (top_p_less_equal, "one token too many when the running total lands exactly on top_p"),
    (lambda probs, p: np.where(top_p(probs, p) > 0, probs, 0), "not renormalised"),
    (top_p_sorted_output, "the kept probabilities were not put back in vocabulary order"),
], ids=["excludes-crossing", "less-equal", "not-renormalised", "still-sorted"])
def test_top_p_mistakes_are_named(wrong, sentence):
    assert_named(E.check_top_p_filter(wrong, show=False), "probs", sentence)


def test_every_top_p_mistake_in_the_catalogue_is_named():
    for sentence, mistake in C10.TOP_P_MISTAKES:
        assert_named(E.check_top_p_filter(mistake, show=False), "probs", sentence)


# --- one attention step with a KV cache ----------------------------------------------------------


def cached_step(q, k, v, past_k, past_v):
    """A right answer, written with einsum."""
    k_all = np.concatenate([past_k, k], axis=2)
    v_all = np.concatenate([past_v, v], axis=2)
    s = np.einsum("bhqd,bhkd->bhqk", q, k_all) / q.shape[-1] ** 0.5
    a = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", a / a.sum(-1, keepdims=True), v_all), k_all, v_all


def package_step(q, k, v, past_k, past_v):
    """The package's attention_core_cached, on per-head tensors."""
    B, nh, _, hs = q.shape
    qkv = np.concatenate([a.transpose(0, 2, 1, 3).reshape(B, 1, nh * hs) for a in (q, k, v)], -1)
    y, (k_all, v_all) = L.attention_core_cached(qkv, nh, (past_k, past_v))
    return y.reshape(B, 1, nh, hs).transpose(0, 2, 1, 3), k_all, v_all


def test_cached_step_right_answers_pass_in_float64_and_float32():
    for fn in (cached_step, package_step, E.reference_cached_attention_step):
        report = E.check_cached_attention_step(fn, show=False)
        assert_passes(report)
        assert "float32" in str(report) and "T_past=0" in str(report)


def test_cached_step_stub_is_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_cached_attention_step(fn, show=False))


def test_cached_step_expects_the_full_forward_last_position():
    case = C10._step_case("x", 2, 3, 4, 5, np.float64, 0)
    q, k, v, past_k, past_v = case.args
    k_all, v_all = (np.concatenate(pair, 2) for pair in ((past_k, k), (past_v, v)))
    q_all = np.concatenate([np.zeros_like(past_k), q], 2)  # the last row reads only its q
    B, nh, T, hs = k_all.shape
    qkv = np.concatenate([a.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)
                          for a in (q_all, k_all, v_all)], -1)
    y_last = L.attention_core_forward(qkv, nh)[0][:, -1].reshape(B, nh, hs)
    assert np.allclose(case.expected[0][:, :, 0], y_last, rtol=0, atol=1e-12)
    assert np.array_equal(case.expected[1], k_all) and np.array_equal(case.expected[2], v_all)


def no_append(q, k, v, past_k, past_v):
    s = q @ past_k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    a = np.exp(s - s.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ past_v, past_k, past_v


def masked_as_position_0(q, k, v, past_k, past_v):
    k_all = np.concatenate([past_k, k], axis=2)
    v_all = np.concatenate([past_v, v], axis=2)
    T = k_all.shape[2]
    s = q @ k_all.swapaxes(-1, -2) / q.dtype.type(np.sqrt(q.shape[-1]))
    s = s + L.causal_mask(T, q.dtype)[:1]  # the first row of the mask
    a = np.exp(s - s.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ v_all, k_all, v_all


def scaled_by_hs(q, k, v, past_k, past_v):
    k_all = np.concatenate([past_k, k], axis=2)
    v_all = np.concatenate([past_v, v], axis=2)
    s = q @ k_all.swapaxes(-1, -2) / q.shape[-1]
    a = np.exp(s - s.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ v_all, k_all, v_all


def new_key_first(q, k, v, past_k, past_v):
    y, _, _ = cached_step(q, k, v, past_k, past_v)
    return y, np.concatenate([k, past_k], 2), np.concatenate([v, past_v], 2)


def wrong_axis(q, k, v, past_k, past_v):
    k_all = np.concatenate([past_k, k], axis=-1)
    v_all = np.concatenate([past_v, v], axis=-1)
    return cached_step(q, k, v, past_k, past_v)[0], k_all, v_all


@pytest.mark.parametrize("wrong,output,sentence", [
    (no_append, "k_all", "the new key and value not appended"),
    (masked_as_position_0, "y", "the causal mask applied to the new query as if it were "
                                "position 0"),
    (scaled_by_hs, "y", "scores scaled by 1/hs instead of 1/sqrt(hs)"),
    (new_key_first, "k_all", "the new key and value put first"),
], ids=["no-append", "mask-row-0", "scale-hs", "new-first"])
def test_cached_step_mistakes_are_named(wrong, output, sentence):
    assert_named(E.check_cached_attention_step(wrong, show=False), output, sentence)


def test_concatenating_on_the_wrong_axis_shows_the_error_and_the_time_axis():
    text = flat(str(E.check_cached_attention_step(wrong_axis, show=False)))
    assert "wrong_axis raised ValueError" in text and "time is axis 2" in text, text


def test_every_cached_step_mistake_in_the_catalogue_is_named():
    for sentence, mistake in C10.CACHED_STEP_MISTAKES:
        report = E.check_cached_attention_step(mistake, show=False)
        assert_named(report, report.wrong[0], sentence)


def test_a_float64_constant_in_float32_is_a_dtype_mistake():
    def upcast(q, k, v, past_k, past_v):
        y, k_all, v_all = cached_step(q, k, v, past_k, past_v)
        return y * np.float64(1.0), k_all, v_all
    text = str(E.check_cached_attention_step(upcast, show=False))
    assert "wrong: has dtype float64, expected float32" in text, text
