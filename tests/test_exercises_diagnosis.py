"""The checkers' diagnoses across every checker: outputs returned in the wrong order are called
swapped; thresholds follow the dtype (a right float32 answer passes, a float32 answer lets no
mistake through that float64 would catch); Kingma & Ba's Adam counts as right; the edges each
exercise's text defines are tried and rejected with a clear sentence; a hard-coded answer
(the expected output of one case) never passes."""

import copy
import math
import re

import numpy as np
import pytest
import test_exercises as T
from exercise_reports import flat

from numpygpt import layers as L
from numpygpt.course import exercises as E
from numpygpt.course.exercises import ch04_layernorm
from numpygpt.course.exercises.checking import Case, as_scalar, grad_case, run
from numpygpt.course.exercises.diagnosis import MATCH, rounding, threshold
from numpygpt.training.optim import cosine_lr

EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)


def crosses(text, name):
    return [ln for ln in text.splitlines() if ln.startswith(f"✗ {name}")]


# --- thresholds follow the dtype -------------------------------------------------------------


def test_the_rounding_threshold_is_a_multiple_of_eps_scaled_by_the_sum():
    for dtype, eps in ((np.float64, EPS64), (np.float32, EPS32)):
        for terms in (1, 6, 24, 100):
            thr = rounding(dtype, terms)
            assert 4 * eps * (terms + 8) <= thr < 2 * 4 * eps * (terms + 8)
            assert re.fullmatch(r"\de-\d\d", f"{thr:.0e}") and float(f"{thr:.0e}") == thr
    assert rounding(np.float32, 6) > 1e7 * rounding(np.float64, 6)
    assert rounding(np.float64, 1) < 1e-14 and rounding(np.float32, 1) < 1e-5


def test_the_threshold_printed_is_the_one_used():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    for dtype in (np.float64, np.float32):
        case = Case((x.astype(dtype),), ("y",), (2 * x.astype(dtype).astype(np.float64),))
        thr = threshold(case, np.dtype(dtype))
        assert thr == rounding(dtype, 4)
        scale = float(np.max(np.abs(2 * x)))
        for factor, ok in ((0.5, True), (2.0, False)):
            def answer(a, factor=factor, thr=thr, scale=scale, dtype=dtype):
                out = 2 * a.astype(np.float64)
                out[0, 0] += factor * thr * scale
                return out.astype(dtype)
            text = str(run("double", answer, [case], show=False))
            assert f"(must be < {thr:.0e})" in text and ("✓ y" in text) == ok, text


def test_a_correct_float32_answer_passes_every_float32_case(capsys):
    """The right answers in float32 (the inputs' dtype, as in training), judged by float32's
    rounding: the report shows the float32 threshold."""
    tried = 0
    for checker in T.CHECKERS:
        if checker.__module__.endswith((".ch07_gpt", ".ch10_sampling")):
            continue  # their chapters' own thresholds
        text = str(checker(T.CORRECT[checker], show=False))
        lines = [ln for ln in text.splitlines() if ln.startswith("✓") and "float32" in ln]
        if not lines:
            continue
        tried += 1
        assert text.endswith("all correct, well done!"), text
        for line in lines:
            thr = float(re.search(r"must be < (\S+?)[;)]", line).group(1))
            assert 1e-6 < thr <= 1e-4, line  # float32's, not float64's
    assert tried >= 16


@pytest.mark.parametrize("checker", [E.check_sequence_nll, E.check_cosine_lr],
                         ids=lambda c: c.__name__)
def test_a_float32_number_is_judged_as_float32(checker):
    """A number computed in float32 (a float64 check would reject its rounding as wrong)."""
    def in_float32(*args):
        return np.float32(T.CORRECT[checker](*args))
    text = str(checker(in_float32, show=False))
    assert text.endswith("all correct, well done!"), text
    assert re.search(r"max error \d\.\de-0[78] x .*must be < \de-06", text), text


def test_a_float32_answer_still_gets_its_mistake_named():
    # a catalogued mistake, written in float32: matched within float32's rounding, not MATCH
    text = flat(str(E.check_sequence_nll(
        lambda p, t: np.float32(-np.log(p[np.arange(len(t)), t]).astype(np.float32).sum()),
        show=False)))
    assert "this looks like: sum instead of mean" in text
    rng = np.random.default_rng(4)
    case = grad_case(L.layernorm_forward, {"x": rng.standard_normal((2, 3, 6)) * 3 + 1.5,
                                           "w": rng.standard_normal(6),
                                           "b": rng.standard_normal(6)},
                     ["x", "w", "b"], seed=4, dtype=np.float32)
    case.after_pass = False
    def no_mean(dout, cache):  # the learner's own float32 code, not the catalogue's
        return T._ln(dout, cache, mean_term=False)
    report = run("layer norm backward, float32", no_mean, [case],
                 ch04_layernorm.LAYERNORM_MISTAKES, show=False)
    text = flat(str(report))
    assert report.wrong == ["dx"] and "this looks like: the -mean(g) term is missing" in text
    assert threshold(case, np.dtype(np.float32)) > MATCH  # float32's rounding exceeds MATCH


def test_a_float32_answer_does_not_let_a_small_mistake_through():
    def slightly_off(dout, cache):  # a term 1e-6 too small: float64 sees it
        dx, dw, db = L.linear_backward(dout, cache)
        return dx * (1 - 1e-6), dw, db
    report = E.check_linear_backward(slightly_off, show=False)
    assert report.wrong == ["dx"] and "(must be < 1e-07)" in str(report)
    assert "float32" not in str(report)  # the float32 case waits for the float64 ones
    # float32 arrays for float64 inputs: rejected, their rounding could hide such a term
    report = E.check_linear_backward(
        lambda d, c: tuple(a.astype(np.float32) for a in L.linear_backward(d, c)), show=False)
    assert "has dtype float32, expected float64 (the inputs' dtype)" in str(report)
    # what float32 cannot tell apart (documented): the same 1e-6 in a float32 case passes
    rng = np.random.default_rng(2)
    case = grad_case(L.linear_forward, {"x": rng.standard_normal((2, 3, 4)),
                                        "w": rng.standard_normal((4, 5)),
                                        "b": rng.standard_normal(5)}, ["x", "w", "b"],
                     dtype=np.float32)
    case.after_pass = False
    assert run("linear, float32", slightly_off, [case], show=False).ok


def test_float64_from_float32_inputs_is_a_remark_or_a_mistake_where_the_text_says_so():
    def upcast(dout, cache):  # np.float64 scalars turn float32 arrays into float64 ones
        return tuple(a * np.float64(1.0) for a in L.linear_backward(dout, cache))
    report = E.check_linear_backward(upcast, show=False)
    text = flat(str(report))
    assert report.ok and "! dx, dw, db (float32)  are float64 for float32 inputs" in text
    assert text.count("float64 for float32") == 1
    # the embedding's text asks for the cache's dtype: there it is a mistake
    def no_dtype(dout, cache):
        idx, shape, dtype, pad = cache
        dwte = np.zeros(shape)
        np.add.at(dwte, idx, dout)
        if pad is not None:
            dwte[pad] = 0
        return dwte
    text = flat(str(E.check_embedding_backward(no_dtype, show=False)))
    assert "✗ dwte (padding_idx=0, float32)  wrong: has dtype float64, expected float32" in text
    assert "np.zeros(shape) is float64 without dtype=" in text


# --- outputs in the wrong order --------------------------------------------------------------

SWAPS = [
    (E.check_linear_backward, (1, 0, 2)),
    (E.check_layernorm_backward, (0, 2, 1)),
    (E.check_attention_backward, (0, 3, 4, 1, 2)),
    (E.check_lm_head_backward, (1, 0)),
    (E.check_adamw_step, (1, 0, 2)),
    (E.check_adamw_step, (0, 2, 1)),
    (E.check_prompt_targets, (1, 0)),
    (E.check_classifier_backward, (1, 0, 2)),
    (E.check_lora_backward, (0, 2, 1)),
    (E.check_lora_backward, (2, 0, 1)),
    (E.check_rmsnorm_backward, (1, 0)),
    (E.check_data_parallel_grads, (1, 0)),
]


def _permuted(fn, perm):
    def swapped(*args):
        out = fn(*args)
        return tuple(out[i] for i in perm)
    return swapped


@pytest.mark.parametrize("checker,perm", SWAPS,
                         ids=[f"{c.__name__}-{p}" for c, p in SWAPS])
def test_swapped_outputs_are_called_swapped(checker, perm):
    report = checker(_permuted(T.CORRECT[checker], perm), show=False)
    text = flat(str(report))
    names = text.split("return (", 1)[1].split(")", 1)[0].split(", ")
    moved = [names[k] for k in range(len(perm)) if perm[k] != k]
    assert sorted(report.wrong) == sorted(moved), text
    for k in range(len(perm)):
        if perm[k] != k:
            line = crosses(text, names[k])[0]
            assert (f"wrong: what you return as {names[k]} is the expected {names[perm[k]]}: "
                    f"the outputs look swapped, return ({', '.join(names)}) in this order"
                    in line), text
            assert "max error" not in line
    # said once, for the first case only
    assert text.count("look swapped") == len(moved), text


def test_outputs_swapped_and_wrong_are_called_swapped_by_their_shapes():
    def swapped_and_doubled(dout, cache):
        dx, dw, db = L.linear_backward(dout, cache)
        return 2 * dw, dx, db
    text = flat(str(E.check_linear_backward(swapped_and_doubled, show=False)))
    assert ("✗ dx  wrong: what you return as dx has the shape (4, 5) of dw: the outputs look "
            "swapped, return (dx, dw, db) in this order") in text
    assert "compared with the expected dw, yours is wrong too: max error 1 x max|expected|" \
        in text
    assert "✗ dw  wrong: what you return as dw is the expected dx" in text


def test_an_output_returned_twice_is_pointed_at_and_a_catalogued_one_is_not_called_swapped():
    def twice(dout, cache):
        dx, dw, db = L.linear_backward(dout, cache)
        return dx, dx, db
    report = E.check_linear_backward(twice, show=False)
    assert report.wrong == ["dw"]
    assert "what you return as dw is the expected dx: the outputs look swapped (or one of " \
           "them returned twice)" in flat(str(report))
    # dw = db is a catalogued mistake of the layer norm (dw = sum(dout)): named as that
    text = flat(str(E.check_layernorm_backward(
        lambda d, c: (lambda dx, dw, db: (dx, db.copy(), db))(*L.layernorm_backward(d, c)),
        show=False)))
    assert "this looks like: dw = sum(dout)" in text and "swapped" not in text


# --- Adam: Kingma & Ba's form is right, the real mistakes are not ---------------------------


def kingma_ba(p, g, m, v, t, lr, betas, eps, weight_decay):
    """The paper's efficient form, in the arrays' own dtype."""
    b1, b2 = betas
    p = p * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    alpha_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    return p - alpha_t * m / (np.sqrt(v) + eps), m, v


def test_kingma_and_ba_form_of_adam_is_accepted_in_float64_and_float32():
    report = E.check_adamw_step(kingma_ba, show=False)
    text = flat(str(report))
    assert report.ok, text
    assert "✓ your step is Kingma & Ba's form" in text and "float32" in text
    assert text.count("Kingma") == 1 and "\n! " not in text  # no upcast remark


@pytest.mark.parametrize("mistake", [
    "t not incremented", "weight decay coupled", "decay after", "no bias correction",
    "eps inside", "decay without lr", "v of g"])
def test_adam_mistakes_are_still_rejected(mistake):
    def wrong(p, g, m, v, t, lr, betas, eps, wd):
        b1, b2 = betas
        if mistake == "t not incremented":
            t = t - 1
        if mistake == "weight decay coupled":
            g, wd = g + wd * p, 0.0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g if mistake == "v of g" else g * g)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        if mistake == "no bias correction":
            mh, vh = m, v
        den = np.sqrt(vh + eps) if mistake == "eps inside" else np.sqrt(vh) + eps
        if mistake == "decay after":
            return (p - lr * mh / den) * (1 - lr * wd), m, v
        decay = wd if mistake == "decay without lr" else lr * wd
        return p * (1 - decay) - lr * mh / den, m, v
    report = E.check_adamw_step(wrong, show=False)
    text = flat(str(report))
    assert not report.ok and "p" in report.wrong and "Kingma" not in text
    assert "this looks like:" in text


# --- the edges the exercises define ---------------------------------------------------------


def lr_divides_by_zero(it, lr, min_lr, warmup_iters, lr_decay_iters):
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    r = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def lr_warmup_to_the_end(it, lr, min_lr, warmup_iters, lr_decay_iters):
    if it <= warmup_iters:  # fine while W < D (the cosine starts at lr), not when D <= W
        return lr * (it + 1) / (warmup_iters + 1)
    return cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters)


def lr_relative(it, lr, min_lr, warmup_iters, lr_decay_iters):
    # the cosine written around a relative floor: min_lr / lr, then times lr ... and the
    # progress computed from the rate itself, which divides by lr - min_lr
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    rate = cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters)
    share = (rate - min_lr) / (lr - min_lr)
    return min_lr + share * (lr - min_lr)


def bigram_zero_rows(ids, V, smoothing):
    counts = np.zeros((V, V))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    counts += smoothing
    total = counts.sum(1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def emb_row_0(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = np.zeros(shape, dtype)
    np.add.at(dwte, idx, dout)
    if pad is not None:
        dwte[0] = 0  # the padding row taken to be row 0
    return dwte


def softmax_masked_special_case(p, dp):
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return np.where(p == 0, dp, ds)  # "masked entries pass dp through"


def attention_two_heads(dout, cache):
    """A right backward, but with n_head = 2 written in."""
    qkv_cache, q, k, v, att, _, proj_cache = cache
    B, T_, C = dout.shape
    nh, hs = 2, C // 2
    dy, dw_proj, db_proj = L.linear_backward(dout, proj_cache)
    dy = dy.reshape(B, T_, nh, hs).transpose(0, 2, 1, 3)
    dv = att.transpose(0, 1, 3, 2) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / math.sqrt(hs)
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T_, C) for d in (dq, dk, dv)],
                          axis=-1)
    dx, dw_attn, db_attn = L.linear_backward(dqkv, qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


def cos_with_guard(E_):
    n = E_ / (np.linalg.norm(E_, axis=1, keepdims=True) + 1e-2)  # a guard against 0/0
    return n @ n.T


def pt_two_masked(ids, prompt_len):
    y = ids[:, 1:].copy()
    y[:, :2] = -1  # prompt_len 3 written in
    return ids[:, :-1], y


def adam_t_minus_1(p, g, m, v, t, lr, betas, eps, wd):
    return T.adamw(p, g, m, v, t - 1, lr, betas, eps, wd)


def ce_upcast(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()
    dz[np.arange(len(yv)), yv] -= 1
    return (dz * (valid * dloss / max(n_valid, 1))[:, None]).reshape(shape)  # float64 weights


EDGES = [
    pytest.param(E.check_cosine_lr, lr_divides_by_zero, "call (W = D = 20: no decay)", [
        "raised ZeroDivisionError: division by zero (at it=20)",
        "hint: with lr_decay_iters <= warmup_iters there is no decay: min_lr from step "
        "warmup_iters on"], id="lr-W-equals-D"),
    pytest.param(E.check_cosine_lr, lr_warmup_to_the_end, "lr (W = 30 > D = 20: no decay)", [
        "worst at lr(it=30): yours 0.0006, expected 6e-05",
        "hint: with lr_decay_iters <= warmup_iters the warmup still runs up to warmup_iters"],
        id="lr-W-above-D"),
    pytest.param(E.check_cosine_lr, lr_relative, "call (min_lr = lr)", [
        "raised ZeroDivisionError", "hint: with min_lr = lr the cosine runs between two "
        "equal levels"], id="lr-min-lr-equals-lr"),
    pytest.param(E.check_bigram_model, bigram_zero_rows, "P (smoothing=0.0)", [
        "wrong: 12 of 36 entries are numbers where nan is expected (0/0)",
        "first at P[4, 0]: yours 0, expected nan", "hint: with smoothing 0 the rows of tokens 4 "
        "and 5"], id="bigram-smoothing-0"),
    pytest.param(E.check_bigram_model, T.bigram_no_smoothing, "P (smoothing=1.0)", [
        "12 of 36 entries are nan or inf", "this looks like: smoothing forgotten"],
        id="bigram-smoothing-positive"),
    pytest.param(E.check_embedding_backward, emb_row_0, "dwte (padding_idx=3)", [
        "wrong only at dwte[0, :], dwte[3, :] (2 of 7 rows)",
        "this looks like: row 0 zeroed instead of row padding_idx"], id="embedding-padding-3"),
    pytest.param(E.check_softmax_backward, softmax_masked_special_case,
                 "ds (causal mask: p = 0 above the diagonal)", [
                     "expected 0", "hint: p_j = exp(s_j) / sum exp"], id="softmax-masked"),
    pytest.param(E.check_attention_backward, attention_two_heads,
                 "call (B=1, T=5, 3 heads)", ["raised ValueError"], id="attention-3-heads"),
    pytest.param(E.check_cosine_similarity, cos_with_guard,
                 "sim (N=4, C=6, lengths 0.01 to 300)",
                 ["worst at sim[0, 0]: yours 0.3559, expected 1"],
                 id="cosine-short-rows"),
    pytest.param(E.check_prompt_targets, pt_two_masked, "y (prompt_len=1: nothing to mask)", [
        "wrong: 6 of 12 entries differ", "first at y[0, 0]: yours -1, expected 5"],
        id="prompt-len-1"),
    pytest.param(E.check_prompt_targets, pt_two_masked, "y (prompt_len=T=4: one answer token)",
                 ["wrong: 2 of 8 entries differ", "this looks like: masked one position too "
                  "few"], id="prompt-len-T"),
    pytest.param(E.check_adamw_step, adam_t_minus_1, "p (t=1, first update)", [
        "wrong: 10 of 10 entries are nan or inf",
        "this looks like: bias correction with t - 1: t is already 1 at the first update"],
        id="adam-first-update"),
    pytest.param(E.check_adamw_step, T.adamw_eps_inside, "p (t=10, quiet rows, weight_decay=0)",
                 ["wrong: max error 0.00428 x max|expected|",
                  "this looks like: eps inside the square root"], id="adam-quiet-rows"),
    pytest.param(E.check_cross_entropy_backward, ce_upcast,
                 "dlogits (some targets ignored, float32)",
                 ["wrong: has dtype float64, expected float32 (the inputs' dtype)"],
                 id="ce-float32-dtype"),
    pytest.param(E.check_merge, T.merge_overlapping, "out (merge([7, 7, 7], (7, 7), 300))", [
        "yours [300], expected [300, 7]", "this looks like: overlapping pairs merged twice"],
        id="merge-text-example"),
]


@pytest.mark.parametrize("checker,wrong,line,says", EDGES)
def test_the_edges_are_rejected_with_a_clear_sentence(checker, wrong, line, says):
    report = checker(wrong, show=False)
    text = flat(str(report))
    assert not report.ok and crosses(text, line), text
    block = text.split(f"✗ {line}", 1)[1].split("\n✗", 1)[0].split("\n✓", 1)[0]
    for s in says:
        assert s in block, text


def test_every_case_label_names_its_edge():
    text = str(E.check_cosine_lr(cosine_lr, show=False))
    for edge in ("W = D = 20: no decay", "W = 30 > D = 20: no decay", "W = 0: no warmup",
                 "min_lr = lr"):
        assert f"✓ lr ({edge})" in text
    assert "✓ P (smoothing=0.0)" in str(E.check_bigram_model(T.bigram, show=False))
    assert "✓ loss (B=3, N=1: one worker)" in str(E.check_data_parallel_grads(
        E.reference_data_parallel_grads, show=False))


# --- a hard-coded answer never passes --------------------------------------------------------


def _hard_coded(checker):
    """The expected output of the first case, returned whatever the inputs."""
    correct = T.CORRECT[checker]
    if checker is E.check_cosine_lr:
        table = {it: cosine_lr(it, 1e-3, 1e-4, 10, 100) for it in range(200)}
        return lambda it, *rest: table[it]
    first = []

    def hard_coded(*args):
        if not first:
            first.append(correct(*args))
        return copy.deepcopy(first[0])
    return hard_coded


@pytest.mark.parametrize("checker", T.CHECKERS, ids=[c.__name__ for c in T.CHECKERS])
def test_a_hard_coded_answer_fails(checker):
    report = checker(_hard_coded(checker), show=False)
    assert not report.ok and not report.not_implemented, str(report)
    assert report.lines[0].startswith("✓")  # right where it was copied from, wrong elsewhere


# --- the shared helpers other chapters use ---------------------------------------------------


def test_as_scalar_keeps_the_dtype():
    assert as_scalar(np.array(2.5, np.float32)).dtype == np.float32
    assert as_scalar(np.array(2.5)) == 2.5 and as_scalar(3) == 3
    assert as_scalar(np.ones(1)).shape == (1,)
