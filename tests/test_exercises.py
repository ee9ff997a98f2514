"""Every exercise checker, every way a learner meets it: a correct answer passes, a stub gets
"not implemented yet", typical wrong answers are rejected with a message that names the wrong
output, shows the worst element and both values and, when the mistake is a known one, names
it; an error in the learner's code is shown with the learner's own line, never raised."""

import contextlib
import io
import linecache
import math
import re

import numpy as np
import pytest
from exercise_reports import flat

from numpygpt import layers as L
from numpygpt.course import exercises as E
from numpygpt.course.exercises import ch19_data_parallel as DP
from numpygpt.data.bpe import merge
from numpygpt.models.gpt import param_shapes
from numpygpt.training.optim import cosine_lr

# --- correct answers, written as a learner would ---------------------------------------------


def softmax_backward(p, dp):
    return p * (dp - (dp * p).sum(-1, keepdims=True))


def attention_backward(dout, cache, scale=True, causal=True, dv_att_t=True):
    """Causal attention's backward, written out; the switches make typical mistakes."""
    qkv_cache, q, k, v, att, _, proj_cache = cache
    B, nh, T, hs = q.shape
    dy, dw_proj, db_proj = L.linear_backward(dout, proj_cache)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    if not causal:  # recomputes the probabilities, and forgets the mask
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        att = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    dv = (att.transpose(0, 1, 3, 2) if dv_att_t else att) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True))
    if scale:
        ds = ds / np.sqrt(hs)
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)
                           for d in (dq, dk, dv)], axis=-1)
    dx, dw_attn, db_attn = L.linear_backward(dqkv, qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


def lm_head_backward(dlogits, cache):
    x, wte = cache
    V, C = wte.shape
    return dlogits @ wte, dlogits.reshape(-1, V).T @ x.reshape(-1, C)


def sequence_nll(probs, tokens):
    return -np.mean(np.log(probs[np.arange(len(tokens)), tokens]))


def adamw(p, g, m, v, t, lr, betas, eps, wd):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p * (1 - lr * wd) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


def top_p(probs, top_p):
    order = np.argsort(-probs, axis=-1)
    sp = np.take_along_axis(probs, order, -1)
    keep_sorted = np.cumsum(sp, -1) - sp < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    out = np.where(keep, probs, 0)
    return out / out.sum(-1, keepdims=True)


def cos_sim(E_):
    n = E_ / np.linalg.norm(E_, axis=1, keepdims=True)
    return n @ n.T


def prompt_targets(ids, prompt_len):
    y = ids[:, 1:].copy()
    y[:, : prompt_len - 1] = -1
    return ids[:, :-1], y


def param_count(cfg):
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def surprisal(logits, targets):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(targets)), targets] / np.log(2)


def bigram(ids, V, smoothing):
    counts = np.zeros((V, V))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    counts += smoothing
    return counts / counts.sum(1, keepdims=True)


CORRECT = {
    E.check_embedding_backward: L.embedding_backward,
    E.check_linear_backward: L.linear_backward,
    E.check_gelu_backward: L.gelu_backward,
    E.check_layernorm_backward: L.layernorm_backward,
    E.check_softmax_backward: softmax_backward,
    E.check_attention_backward: attention_backward,
    E.check_cross_entropy_backward: L.softmax_cross_entropy_backward,
    E.check_lm_head_backward: lm_head_backward,
    E.check_sequence_nll: sequence_nll,
    E.check_sinusoidal_table: lambda T, C: L.sinusoidal_table(T, C, np.float64),
    E.check_adamw_step: adamw,
    E.check_cosine_lr: cosine_lr,
    E.check_top_p_filter: top_p,
    E.check_cosine_similarity: cos_sim,
    E.check_prompt_targets: prompt_targets,
    E.check_param_count: param_count,
    E.check_merge: merge,
    E.check_token_surprisal: surprisal,
    E.check_bigram_model: bigram,
}
CHECKERS = list(CORRECT)


def test_every_checker_is_tested():
    every = {getattr(E, n) for n in E.__all__ if n.startswith("check_")} - {E.check_backward}
    assert set(CHECKERS) <= every
    # the checkers notebooks 07, 10, 21, 22 and 23 gained lately are tested with their chapters
    # (21 and 22: tests/test_exercises_dpo.py; 23: tests/test_exercises_flash.py)
    assert all(c.__module__.endswith((".ch07_gpt", ".ch10_sampling", ".ch21_translation",
                                      ".ch22_dpo", ".ch23_flash"))
               for c in every - set(CHECKERS)), every - set(CHECKERS)
    assert not hasattr(E, "check_residual_block_backward")


@pytest.mark.parametrize("checker", CHECKERS, ids=[c.__name__ for c in CHECKERS])
def test_checker_accepts_a_correct_answer(checker, capsys):
    report = checker(CORRECT[checker])
    out = capsys.readouterr().out
    assert report.ok, out
    assert out == str(report) + "\n"
    assert out.rstrip().endswith("all correct, well done!") and "✗" not in out


def _stub(*args):
    """Compute a gradient."""
    # your code here
    raise NotImplementedError


def _no_return(*args):
    _ = args  # the learner forgot `return`


@pytest.mark.parametrize("checker", CHECKERS, ids=[c.__name__ for c in CHECKERS])
def test_checker_rejects_a_stub_and_a_none(checker):
    for fn, said in ((_stub, "_stub raises NotImplementedError: not implemented yet"),
                     (_no_return, "_no_return returned None: not implemented yet")):
        report = checker(fn, show=False)
        text = str(report)
        assert not report.ok and report.not_implemented
        assert said in text and text.endswith("not implemented yet")
        assert "nan" not in text and "Traceback" not in text


# --- wrong answers, each as a learner would write it ------------------------------------------


def emb_fancy_index(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = np.zeros(shape, dtype)
    dwte[idx] += dout
    if pad is not None:
        dwte[pad] = 0
    return dwte


def emb_no_padding(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = np.zeros(shape, dtype)
    np.add.at(dwte, idx, dout)
    return dwte


def lin_db_not_summed(dout, cache):
    x, w = cache
    return dout @ w.T, np.einsum("bti,btj->ij", x, dout), dout


def lin_dw_transposed(dout, cache):
    x, w = cache
    return dout @ w.T, np.einsum("bti,btj->ji", x, dout), dout.sum((0, 1))


def lin_mean(dout, cache):
    x, w = cache
    return dout @ w.T, np.einsum("bti,btj->ij", x, dout) / 6, dout.mean((0, 1))


def gelu_erf(dout, cache):
    x, _ = cache
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)
    pdf = np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)
    return dout * (cdf + x * pdf)


def gelu_no_s1s(dout, cache):
    x, s = cache
    return dout * s


def gelu_no_cubic(dout, cache):
    x, s = cache
    return dout * (s + 2 * x * s * (1 - s) * np.sqrt(2 / np.pi))


def _ln(dout, cache, mean_term=True, var_term=True, sum_dw=True):
    x, w, mean, rstd = cache
    xhat = (x - mean) * rstd
    g = dout * w
    dx = g.copy()
    if mean_term:
        dx -= g.mean(-1, keepdims=True)
    if var_term:
        dx -= xhat * (g * xhat).mean(-1, keepdims=True)
    dw, db = (dout * xhat, dout) if not sum_dw else ((dout * xhat).sum((0, 1)), dout.sum((0, 1)))
    return dx * rstd, dw, db


def _att_mistake(**kw):
    return lambda dout, cache: attention_backward(dout, cache, **kw)


def att_db_proj_not_summed(dout, cache):
    dx, dw_attn, db_attn, dw_proj, _ = attention_backward(dout, cache)
    return dx, dw_attn, db_attn, dw_proj, dout


def ce_all_rows(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    d = probs.copy()
    d[np.arange(len(yv)), yv] -= 1
    d[~valid] = 0
    return (dloss * d / len(yv)).reshape(shape)


def ce_not_zeroed(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    d = probs.copy()
    d[np.arange(len(yv)), yv] -= 1
    return (dloss * d / max(n_valid, 1)).reshape(shape)


def ce_nan_when_all_ignored(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    d = probs.copy()
    d[np.arange(len(yv)), yv] -= 1
    d[~valid] = 0
    return (dloss * d / n_valid).reshape(shape)


def ce_no_dloss(dloss, cache):
    return L.softmax_cross_entropy_backward(1.0, cache)


def lm_dwte_transposed(dlogits, cache):
    x, wte = cache
    return dlogits @ wte, np.einsum("btc,btv->cv", x, dlogits)


def lm_dx_wte_t(dlogits, cache):
    x, wte = cache
    return dlogits @ wte.T, np.einsum("btc,btv->vc", x, dlogits)


def lm_first_sequence(dlogits, cache):
    x, wte = cache
    return dlogits @ wte, dlogits[0].T @ x[0]


def pe_table(T, C, swap=False, half_index=False, halves=False):
    pos = np.arange(T)[:, None]
    i = np.arange((C + 1) // 2)
    angle = pos / 10000 ** ((i if half_index else 2 * i) / C)
    a, b = (np.cos, np.sin) if swap else (np.sin, np.cos)
    if halves:
        return np.concatenate([a(angle), b(angle[:, : C // 2])], axis=1)
    table = np.zeros((T, C))
    table[:, 0::2] = a(angle)
    table[:, 1::2] = b(angle[:, : C // 2])
    return table


def adamw_no_bias_correction(p, g, m, v, t, lr, betas, eps, wd):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    return p - lr * wd * p - lr * m / (np.sqrt(v) + eps), m, v


def adamw_l2(p, g, m, v, t, lr, betas, eps, wd):
    return adamw(p, g + wd * p, m, v, t, lr, betas, eps, 0.0)


def adamw_eps_inside(p, g, m, v, t, lr, betas, eps, wd):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p * (1 - lr * wd) - lr * (m / (1 - b1**t)) / np.sqrt(v / (1 - b2**t) + eps)
    return p, m, v


def lr_no_warmup(it, lr, min_lr, warmup_iters, lr_decay_iters):
    if it > lr_decay_iters:
        return min_lr
    r = max(it - warmup_iters, 0) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def lr_warmup_off_by_one(it, lr, min_lr, warmup_iters, lr_decay_iters):
    if it < warmup_iters:
        return lr * it / warmup_iters
    return cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters)


def lr_no_floor(it, lr, min_lr, warmup_iters, lr_decay_iters):
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    r = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def top_p_excludes_crossing(probs, p):
    order = np.argsort(-probs, axis=-1)
    sp = np.take_along_axis(probs, order, -1)
    keep = np.zeros(probs.shape, bool)
    np.put_along_axis(keep, order, np.cumsum(sp, -1) < p, -1)
    out = np.where(keep, probs, 0)
    return out / out.sum(-1, keepdims=True)


def top_p_not_renormalised(probs, p):
    out = top_p(probs, p)
    return np.where(out > 0, probs, 0)


def cos_columns(E_):
    n = E_ / np.linalg.norm(E_, axis=0)
    return n @ n.T


def pt_mask_too_many(ids, n):
    y = ids[:, 1:].copy()
    y[:, :n] = -1
    return ids[:, :-1], y


def pt_in_place(ids, n):
    x, y = ids[:, :-1], ids[:, 1:]
    y[:, : n - 1] = -1
    return x, y


def pt_mask_with_zero(ids, n):
    y = ids[:, 1:].copy()
    y[:, : n - 1] = 0
    return ids[:, :-1], y


def pc_no_biases(cfg):
    return sum(math.prod(s) for k, s in param_shapes(cfg).items()
               if not (k.endswith("bias") and ("attn" in k or "mlp" in k)))


def pc_wpe_always(cfg):
    return param_count(cfg) + (cfg.block_size * cfg.n_embd
                               if cfg.pos_encoding == "sinusoidal" else 0)


def pc_head_twice(cfg):
    return param_count(cfg) + cfg.vocab_size * cfg.n_embd


def merge_overlapping(ids, pair, new_id):
    out = list(ids)
    starts = [i for i in range(len(ids) - 1) if ids[i] == pair[0] and ids[i + 1] == pair[1]]
    for i in starts[::-1]:
        out[i:i + 2] = [new_id]
    return out


def merge_no_skip(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
    return out


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def surprisal_nats(logits, targets):
    return surprisal(logits, targets) * np.log(2)


def surprisal_naive(logits, targets):
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return -np.log2(p[np.arange(len(targets)), targets])


def surprisal_axis0(logits, targets):
    z = logits - logits.max(0, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(0, keepdims=True)
    return -np.log2(p[np.arange(len(targets)), targets])


def bigram_counts(ids, V, smoothing):
    counts = np.zeros((V, V))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    return counts + smoothing


def bigram_no_smoothing(ids, V, smoothing):
    return bigram(ids, V, 0.0)


def bigram_transposed(ids, V, smoothing):
    counts = np.zeros((V, V))
    np.add.at(counts, (ids[1:], ids[:-1]), 1)
    counts += smoothing
    return counts / counts.sum(1, keepdims=True)


# (checker, wrong answer, output the report must name, catalogued sentence or None)
WRONG = [
    pytest.param(E.check_embedding_backward, emb_fancy_index, "dwte", "drops repeated ids",
                 id="embedding-fancy-index"),
    pytest.param(E.check_embedding_backward, emb_no_padding, "dwte", "padding row not zeroed",
                 id="embedding-padding"),
    pytest.param(E.check_linear_backward, lin_db_not_summed, "db", "db not summed",
                 id="linear-db-not-summed"),
    pytest.param(E.check_linear_backward, lin_dw_transposed, "dw", "dw = dout.T @ x",
                 id="linear-dw-transposed"),
    pytest.param(E.check_linear_backward, lin_mean, "dw", "averaged over positions",
                 id="linear-mean"),
    pytest.param(E.check_gelu_backward, gelu_erf, "dx", "exact erf-GELU derivative",
                 id="gelu-erf"),
    pytest.param(E.check_gelu_backward, gelu_no_s1s, "dx", "dropped the s(1-s) term",
                 id="gelu-no-s1s"),
    pytest.param(E.check_gelu_backward, gelu_no_cubic, "dx", "without the cubic term",
                 id="gelu-no-cubic"),
    pytest.param(E.check_layernorm_backward, lambda d, c: _ln(d, c, mean_term=False), "dx",
                 "the -mean(g) term is missing", id="layernorm-no-mean"),
    pytest.param(E.check_layernorm_backward, lambda d, c: _ln(d, c, var_term=False), "dx",
                 "the -xhat*mean(g*xhat) term is missing", id="layernorm-no-var"),
    pytest.param(E.check_layernorm_backward, lambda d, c: _ln(d, c, sum_dw=False), "dw",
                 "not summed over B and T", id="layernorm-dw-not-summed"),
    pytest.param(E.check_softmax_backward, lambda p, dp: p * dp, "ds",
                 "the -sum(dp*p) term is missing", id="softmax-no-sum"),
    pytest.param(E.check_softmax_backward,
                 lambda p, dp: p * (dp - (dp * p).sum(0, keepdims=True)), "ds",
                 "summed over the wrong axis", id="softmax-axis"),
    pytest.param(E.check_softmax_backward, lambda p, dp: p * (1 - p) * dp, "ds",
                 "only the diagonal of the Jacobian", id="softmax-diagonal"),
    pytest.param(E.check_attention_backward, _att_mistake(scale=False), "dw_attn",
                 "forgot the 1/sqrt(hs) scale", id="attention-no-scale"),
    pytest.param(E.check_attention_backward, _att_mistake(causal=False), "dx",
                 "causal mask not applied", id="attention-no-mask"),
    pytest.param(E.check_attention_backward, _att_mistake(dv_att_t=False), "dw_attn",
                 "dv = att @ dy", id="attention-dv"),
    pytest.param(E.check_attention_backward, att_db_proj_not_summed, "db_proj", None,
                 id="attention-db-proj-not-summed"),
    pytest.param(E.check_cross_entropy_backward, ce_all_rows, "dlogits",
                 "divided by the number of all targets", id="ce-all-rows"),
    pytest.param(E.check_cross_entropy_backward, ce_not_zeroed, "dlogits",
                 "ignored targets not zeroed", id="ce-not-zeroed"),
    pytest.param(E.check_cross_entropy_backward, ce_nan_when_all_ignored, "dlogits", None,
                 id="ce-nan-all-ignored"),
    pytest.param(E.check_cross_entropy_backward, ce_no_dloss, "dlogits",
                 "forgot to multiply by dloss", id="ce-no-dloss"),
    pytest.param(E.check_lm_head_backward, lm_dwte_transposed, "dwte", "dwte transposed",
                 id="lm-head-dwte-transposed"),
    pytest.param(E.check_lm_head_backward, lm_dx_wte_t, "dx", "dx used wte.T",
                 id="lm-head-dx-wte-t"),
    pytest.param(E.check_lm_head_backward, lm_first_sequence, "dwte", "first sequence only",
                 id="lm-head-first-sequence"),
    pytest.param(E.check_sequence_nll, lambda p, t: -np.log(p[np.arange(len(t)), t]).sum(),
                 "nll", "sum instead of mean", id="nll-sum"),
    pytest.param(E.check_sequence_nll, lambda p, t: -np.log(p[:, t]).mean(), "nll",
                 "log of the wrong entries", id="nll-wrong-entries"),
    pytest.param(E.check_sequence_nll, lambda p, t: -np.log2(p[np.arange(len(t)), t]).mean(),
                 "nll", "log base 2", id="nll-log2"),
    pytest.param(E.check_sinusoidal_table, lambda T, C: pe_table(T, C, swap=True), "table",
                 "sin and cos swapped", id="sinusoidal-swapped"),
    pytest.param(E.check_sinusoidal_table, lambda T, C: pe_table(T, C, half_index=True),
                 "table", "exponent 2i/C written as i/C", id="sinusoidal-exponent"),
    pytest.param(E.check_sinusoidal_table, lambda T, C: pe_table(T, C, halves=True), "table",
                 "sines in the first half", id="sinusoidal-halves"),
    pytest.param(E.check_adamw_step, adamw_no_bias_correction, "p", "no bias correction",
                 id="adamw-no-bias-correction"),
    pytest.param(E.check_adamw_step, adamw_l2, "m", "weight decay added to the gradient",
                 id="adamw-l2"),
    pytest.param(E.check_adamw_step, adamw_eps_inside, "p", "eps inside the square root",
                 id="adamw-eps"),
    pytest.param(E.check_cosine_lr, lr_no_warmup, "lr", "no warmup", id="lr-no-warmup"),
    pytest.param(E.check_cosine_lr, lr_warmup_off_by_one, "lr", "warmup off by one",
                 id="lr-warmup-off-by-one"),
    pytest.param(E.check_cosine_lr, lr_no_floor, "lr", "no min_lr floor", id="lr-no-floor"),
    pytest.param(E.check_top_p_filter, top_p_excludes_crossing, "probs",
                 "excludes the token that crosses top_p", id="top-p-crossing"),
    pytest.param(E.check_top_p_filter, top_p_not_renormalised, "probs", "not renormalised",
                 id="top-p-not-renormalised"),
    pytest.param(E.check_cosine_similarity, lambda E_: E_ @ E_.T, "sim", "not normalised",
                 id="cos-not-normalised"),
    pytest.param(E.check_cosine_similarity, cos_columns, "sim", "normalised the columns",
                 id="cos-columns"),
    pytest.param(E.check_prompt_targets, pt_mask_too_many, "y",
                 "masked one position too many", id="prompt-too-many"),
    pytest.param(E.check_prompt_targets, pt_in_place, "ids", "modified ids in place",
                 id="prompt-in-place"),
    pytest.param(E.check_prompt_targets, pt_mask_with_zero, "y", "masked with 0",
                 id="prompt-zero"),
    pytest.param(E.check_param_count, pc_no_biases, "n_params", "forgot the biases",
                 id="params-no-biases"),
    pytest.param(E.check_param_count, pc_wpe_always, "n_params",
                 "counted wpe with sinusoidal positions", id="params-wpe"),
    pytest.param(E.check_param_count, pc_head_twice, "n_params",
                 "counted the tied head twice", id="params-head-twice"),
    pytest.param(E.check_merge, merge_overlapping, "out", "overlapping pairs merged twice",
                 id="merge-overlapping"),
    pytest.param(E.check_merge, merge_no_skip, "out", "second token was not skipped",
                 id="merge-no-skip"),
    pytest.param(E.check_merge, merge_drops_last, "out", "the last token is dropped",
                 id="merge-drops-last"),
    pytest.param(E.check_token_surprisal, surprisal_nats, "bits",
                 "natural log instead of bits", id="surprisal-nats"),
    pytest.param(E.check_token_surprisal, surprisal_naive, "bits",
                 "overflow: exp of logits", id="surprisal-overflow"),
    pytest.param(E.check_token_surprisal, surprisal_axis0, "bits",
                 "softmax over the wrong axis", id="surprisal-axis"),
    pytest.param(E.check_bigram_model, bigram_counts, "P", "rows not normalised",
                 id="bigram-not-normalised"),
    pytest.param(E.check_bigram_model, bigram_no_smoothing, "P", "smoothing forgotten",
                 id="bigram-no-smoothing"),
    pytest.param(E.check_bigram_model, bigram_transposed, "P", "counts transposed",
                 id="bigram-transposed"),
]


def test_enough_wrong_answers_for_every_checker():
    per_checker = {c: 0 for c in CHECKERS}
    for p in WRONG:
        per_checker[p.values[0]] += 1
    assert len(WRONG) >= 40 and min(per_checker.values()) >= 2, per_checker


@pytest.mark.parametrize("checker,wrong,name,mistake", WRONG)
def test_checker_rejects_a_wrong_answer_and_says_why(checker, wrong, name, mistake):
    report = checker(wrong, show=False)
    text = flat(str(report))
    assert not report.ok and name in report.wrong, text
    assert text.endswith("wrong: " + ", ".join(report.verdict[7:].split(", ")))
    line = next(ln for ln in text.splitlines() if ln.startswith(f"✗ {name}"))
    assert "wrong" in line, text
    if name in ("ids",):  # an input changed in place: no values to compare
        assert "changed in place" in line
    elif "has shape" in line and name != "out":  # values compared after a transpose or sum
        assert re.search(rf"{name}(\.T| summed over its leading axes) (would be right|is wrong"
                         rf" too: .* worst at {name}\[.*yours .* expected)", text), text
    else:
        # both values, and the index of the worst element when the output is an array
        assert re.search(r"yours (\[?-?[\d.]|nan|inf)", text) and "expected" in text, text
        if name not in ("nll", "n_params", "out"):
            assert re.search(rf"(worst|first) at ({re.escape(name)}\[|lr\(it=)", text), text
    if mistake:
        assert f"this looks like: {mistake}" in text or \
            re.search(r"this looks like: [^\n]*" + re.escape(mistake), text), text


# --- the generic diagnoses --------------------------------------------------------------------


def _scaled(fn, i, factor):
    def wrong(*a):
        out = list(fn(*a))
        out[i] = out[i] * factor
        return tuple(out)
    return wrong


def test_a_constant_factor_is_measured_without_saturating_and_named():
    for factor, shown in ((2.0, "max error 1 x"), (100.0, "max error 99 x")):
        text = str(E.check_linear_backward(_scaled(L.linear_backward, 0, factor), show=False))
        assert shown in text and f"yours = {int(factor)} x expected" in text, text
    text = str(E.check_linear_backward(_scaled(L.linear_backward, 1, 1 / math.sqrt(8)),
                                       show=False))
    assert "yours = 0.354 = 1/sqrt(8) x expected: a missing or extra scale factor?" in text


def test_opposite_sign_and_transposed_values_are_recognised():
    text = str(E.check_linear_backward(_scaled(L.linear_backward, 2, -1.0), show=False))
    assert "opposite sign" in text and "✗ db" in text
    text = str(E.check_lm_head_backward(
        lambda d, c: (lm_head_backward(d, c)[0], lm_head_backward(d, c)[1].T), show=False))
    assert "yours is the expected one transposed" in text  # the V = C case
    assert "that is the expected shape transposed" in text  # the V != C case


def test_wrong_shapes_and_dtypes_are_explained():
    text = str(E.check_linear_backward(lambda d, c: (d @ c[1].T, c[0][0].T @ d[0], d.sum(0)),
                                       show=False))
    assert "✗ db  wrong: has shape (3, 5), expected (5,)" in text
    assert "extra leading axes (3,)" in text
    text = str(E.check_layernorm_backward(lambda d, c: tuple(
        a.astype(np.float32) for a in L.layernorm_backward(d, c)), show=False))
    assert "has dtype float32, expected float64" in text
    text = str(E.check_sequence_nll(lambda p, t: -np.log(p[np.arange(len(t)), t]), show=False))
    assert "expected a single number" in text
    text = str(E.check_embedding_backward(lambda d, c: (L.embedding_backward(d, c),),
                                          show=False))
    assert "returned a tuple of 1" in text
    report = E.check_linear_backward(lambda d, c: L.linear_backward(d, c)[:2], show=False)
    assert report.wrong == ["outputs"] and "returned 2 value(s); expected 3: dx, dw, db" in \
        str(report)


def test_a_partly_written_answer_names_the_missing_outputs():
    report = E.check_linear_backward(lambda d, c: (L.linear_backward(d, c)[0], None, None),
                                     show=False)
    assert report.wrong == ["dw", "db"]
    assert "✗ dw  is None: not implemented yet" in str(report)


def test_two_mistakes_at_once_are_both_named_and_a_partial_match_is_not():
    def two(dout, cache):
        dx, dw, db = L.linear_backward(dout, cache)
        return dx, dw.T, dout  # dw transposed and db not summed
    text = flat(str(E.check_linear_backward(two, show=False)))
    assert "this looks like: dw = dout.T @ x" in text and \
        "this looks like: db not summed over positions" in text
    # y unmasked looks like the y of "masked x instead of y", but x is not masked: not named
    text = str(E.check_prompt_targets(lambda ids, n: (ids[:, :-1], ids[:, 1:]), show=False))
    assert "this looks like" not in text and "hint: targets are the next tokens" in text


def test_only_the_wrong_rows_are_pointed_at():
    def one_row_wrong(dout, cache):
        dwte = L.embedding_backward(dout, cache)
        dwte[3] += 1.0
        return dwte
    text = str(E.check_embedding_backward(one_row_wrong, show=False))
    assert "wrong only at dwte[3, :] (1 of 7 rows); the others are right" in text


def test_an_error_in_the_learner_code_shows_it_and_the_learner_line():
    def my_sinusoidal_table(T, C):
        pos = np.arange(T)[:, None]
        angle = pos / 10000 ** (np.arange(0, C, 2) / C)
        table = np.zeros((T, C))
        table[:, 0::2] = np.sin(angle)
        table[:, 1::2] = np.cos(angle)  # breaks for an odd C
        return table
    report = E.check_sinusoidal_table(my_sinusoidal_table, show=False)
    text = str(report)
    assert report.wrong == ["call"] and not report.ok
    assert "✓ table (T=16, C=8)" in text
    assert "✗ call (T=7, C=5)  my_sinusoidal_table raised ValueError" in text
    assert "test_exercises.py, line" in text and "in my_sinusoidal_table:" in text
    assert "table[:, 1::2] = np.cos(angle)  # breaks for an odd C" in text
    assert "exercises.py, line" not in text.replace("test_exercises.py, line", "")
    assert "hint: with an odd C" in text

    def divides(dout, cache):
        return 1 / 0
    text = str(E.check_linear_backward(divides, show=False))
    assert "raised ZeroDivisionError: division by zero" in text and "in divides:" in text


def test_an_error_in_a_notebook_cell_shows_the_cell_line_and_no_checker_file(monkeypatch):
    # IPython compiles a cell under a file name like this one and puts its lines in linecache
    cell = "/tmp/ipykernel_4242/1234567890.py"
    source = ("def my_cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters):\n"
              "    if it < warmup_iters:\n"
              "        return lr * (it + 1) / (warmup_iters + 1)\n"
              "    return lr * undefined_ratio  # a typo\n")
    monkeypatch.setitem(linecache.cache, cell,
                        (len(source), None, source.splitlines(True), cell))
    namespace = {}
    exec(compile(source, cell, "exec"), namespace)
    # check_cosine_lr calls the learner's function from its own chapter module, through
    # the shared machinery: both are checker files, neither may show
    report = E.check_cosine_lr(namespace["my_cosine_lr"], show=False)
    text = str(report)
    assert report.wrong == ["call"]
    assert "raised NameError: name 'undefined_ratio' is not defined" in text
    frames = [ln for ln in text.splitlines() if ln.startswith("    at ")]
    assert frames == ["    at line 4, in my_cosine_lr:  return lr * undefined_ratio  # a typo"]


def test_a_function_that_is_not_callable_is_explained():
    report = E.check_gelu_backward(np.zeros(3), show=False)
    assert not report.ok and "without calling it" in str(report)


def test_an_input_changed_in_place_is_pointed_out():
    def in_place(dout, cache):
        grads = L.linear_backward(dout, cache)
        dout *= 2.0  # the caller's dout changed
        return grads
    report = E.check_linear_backward(in_place, show=False)
    assert report.ok  # a remark, not a mistake: the gradients are right
    assert "! dout  changed in place by in_place" in str(report)


def test_show_false_prints_nothing_and_show_prints_the_report(capsys):
    for checker in CHECKERS:
        checker(CORRECT[checker], show=False)
        checker(_stub, show=False)
    assert capsys.readouterr().out == ""
    report = E.check_gelu_backward(gelu_no_s1s)
    assert capsys.readouterr().out == str(report) + "\n"


def test_thresholds_print_one_digit_and_never_zero():
    texts = [str(c(CORRECT[c], show=False)) for c in CHECKERS]
    texts += [str(c(w, show=False)) for c, w, *_ in (p.values for p in WRONG)]
    for text in texts:
        assert "< 0e+00" not in text
        for thr in re.findall(r"must be < (\S+)\)", text):
            assert re.fullmatch(r"\de-\d\d", thr), thr
    assert "must match exactly" in str(E.check_merge(merge, show=False))


def test_report_api():
    r = E.Report("demo")
    r.add("dx", 1e-9, 1e-7)
    r.add("dw", 0.5, 1e-7, hint="dw sums over positions", details=["worst at dw[0]"])
    assert not r.ok and r.wrong == ["dw"]
    assert str(r).splitlines() == [
        "demo", "✓ dx  max error 1.0e-09 x max|expected| (must be < 1e-07)",
        "✗ dw  wrong: max error 0.5 x max|expected| (must be < 1e-07)",
        "    worst at dw[0]", "    hint: dw sums over positions", "wrong: dw"]


def test_check_backward_for_any_layer():
    rng = np.random.default_rng(0)
    args = {"x": rng.standard_normal((2, 3)), "w": rng.standard_normal((3, 4)),
            "b": rng.standard_normal(4)}
    report = E.check_backward("linear", L.linear_backward, L.linear_forward, args,
                              ["x", "w", "b"], show=False)
    assert report.ok, str(report)
    report = E.check_backward("linear", lambda d, c: (d @ c[1].T, c[0].T @ d, -d.sum(0)),
                              L.linear_forward, args, ["x", "w", "b"], show=False,
                              mistakes=[("db sign", lambda d, c: (*L.linear_backward(d, c)[:2],
                                                                  -d.sum(0)))],
                              hints={"db": "b is added"})
    assert report.wrong == ["db"] and "this looks like: db sign" in str(report)


def test_a_hint_is_shown_when_no_known_mistake_matches():
    def dx_off(dout, cache):
        dx, dw, db = L.layernorm_backward(dout, cache)
        return dx + 0.1 * dout, dw, db
    text = str(E.check_layernorm_backward(dx_off, show=False))
    assert "hint: x reaches xhat three ways" in text and "this looks like" not in text


def test_the_module_docstring_example_is_what_the_checker_prints():
    example = E.__doc__.split(">>> report = check_layernorm_backward(my_layernorm_backward)\n")[1]
    example = "\n".join(ln[4:] for ln in example.split("\n\n")[0].splitlines())

    def my_layernorm_backward(dout, cache):
        x, w, mean, rstd = cache
        xhat = (x - mean) * rstd
        g = dout * w
        dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))  # the -mean(g) term forgotten
        return dx, (dout * xhat).sum((0, 1)), dout.sum((0, 1))

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        E.check_layernorm_backward(my_layernorm_backward)

    def tiny(text):  # the rounding noise of a right answer differs between machines
        return re.sub(r"\d\.\de-1\d", "<tiny>", text)
    assert tiny(buf.getvalue().rstrip("\n")) == tiny(example)


def test_bigram_model_reference():
    ids = np.array([0, 1, 0, 2, 2, 1])
    P = E.bigram_model(ids, 4, 0.5)
    assert P.shape == (4, 4) and np.allclose(P.sum(1), 1)
    assert np.isclose(P[0, 1], 1.5 / 4) and np.isclose(P[3, 0], 0.25)
    assert np.array_equal(P, bigram(ids, 4, 0.5))
    assert np.isnan(E.bigram_model(ids, 4, 0.0)[3]).all()


def test_param_count_formula_matches_the_model():
    from numpygpt.models.gpt import GPT, GPTConfig
    for cfg in (GPTConfig(), GPTConfig(pos_encoding="sinusoidal", n_layer=2)):
        assert E.param_count(cfg) == GPT(cfg).num_params() == param_count(cfg)


def test_fast_mode(monkeypatch):
    monkeypatch.delenv("NUMPYGPT_FAST", raising=False)
    monkeypatch.setenv("CI", "true")
    assert E.fast_mode()
    monkeypatch.setenv("CI", "")
    assert not E.fast_mode()
    monkeypatch.setenv("NUMPYGPT_FAST", "1")
    assert E.fast_mode()


# --- the fine-tuning checkers (notebooks 16-18) ---------------------------------------------


def classifier_backward(dlogits, cache):
    h_shape, lengths, last, w = cache
    dh = np.zeros(h_shape)
    dh[np.arange(len(lengths)), lengths - 1] = dlogits @ w.T
    return dh, last.T @ dlogits, dlogits.sum(0)


def sequence_mean_ce_backward(dloss, cache):
    probs, targets = cache
    valid = targets != -1
    weight = valid / (targets.shape[0] * valid.sum(1, keepdims=True))
    onehot = np.zeros_like(probs)
    b, t = np.nonzero(valid)
    onehot[b, t, targets[b, t]] = 1
    return dloss * (probs - onehot) * weight[..., None]


def lora_backward(dout, cache):
    x, w, A, B, u, s = cache
    dy, x2 = dout.reshape(-1, w.shape[1]), x.reshape(-1, w.shape[0])
    du = s * dy @ B.T
    return (dy @ w.T + du @ A.T).reshape(x.shape), x2.T @ du, s * u.T @ dy


FINETUNE_CORRECT = {
    E.check_classifier_backward: classifier_backward,
    E.check_sequence_mean_ce_backward: sequence_mean_ce_backward,
    E.check_lora_backward: lora_backward,
}
CORRECT.update(FINETUNE_CORRECT)
CHECKERS = CHECKERS + list(FINETUNE_CORRECT)  # a new list: the parametrized tests above keep theirs
FINETUNE_CHECKERS = list(FINETUNE_CORRECT)


@pytest.mark.parametrize("checker", FINETUNE_CHECKERS, ids=[c.__name__ for c in FINETUNE_CHECKERS])
def test_finetune_checker_accepts_a_correct_answer_and_rejects_a_stub(checker, capsys):
    test_checker_accepts_a_correct_answer(checker, capsys)
    test_checker_rejects_a_stub_and_a_none(checker)
    assert checker(E.sequence_mean_ce_backward if checker is E.check_sequence_mean_ce_backward
                   else getattr(L, checker.__name__[6:]), show=False).ok  # the package's own


def cls_last_position(dlogits, cache):
    dh, dw, db = classifier_backward(dlogits, cache)
    h_shape, lengths, last, w = cache
    dh = np.zeros(h_shape)
    dh[:, -1] = dlogits @ w.T
    return dh, dw, db


def cls_everywhere(dlogits, cache):
    dh, dw, db = classifier_backward(dlogits, cache)
    return np.broadcast_to((dlogits @ cache[3].T)[:, None], dh.shape).copy(), dw, db


def sce_token_mean(dloss, cache):
    probs, targets = cache
    valid = targets != -1
    return sequence_mean_ce_backward(dloss, cache) * (targets.shape[0] * valid.sum(1))[
        :, None, None] / valid.sum()


def sce_not_zeroed(dloss, cache):
    probs, targets = cache
    valid = targets != -1
    onehot = np.zeros_like(probs)
    b, t = np.nonzero(valid)
    onehot[b, t, targets[b, t]] = 1
    return dloss * (probs - onehot) / (targets.shape[0] * valid.sum(1))[:, None, None]


def sce_n_b_only(dloss, cache):
    return sequence_mean_ce_backward(dloss, cache) * cache[1].shape[0]


def lora_no_scale(dout, cache):
    x, w, A, B, u, s = cache
    return lora_backward(dout, (x, w, A, B, u, 1.0))


def lora_no_adapter_dx(dout, cache):
    dx, dA, dB = lora_backward(dout, cache)
    return dout @ cache[1].T, dA, dB


def lora_dA_with_B(dout, cache):  # dA = (x^T dy B^T)^T: B where B^T belongs, shapes swapped
    x, w, A, B, u, s = cache
    dx, dA, dB = lora_backward(dout, cache)
    return dx, dA.T, dB


def lora_with_dw(dout, cache):
    x, w = cache[0], cache[1]
    dx, dA, dB = lora_backward(dout, cache)
    return dx, x.reshape(-1, w.shape[0]).T @ dout.reshape(-1, w.shape[1]), dA, dB


WRONG += [
    pytest.param(E.check_classifier_backward, cls_last_position, "dh", "position T-1",
                 id="classifier-last-position"),
    pytest.param(E.check_classifier_backward, cls_everywhere, "dh", "spread over every",
                 id="classifier-everywhere"),
    pytest.param(E.check_classifier_backward, lambda d, c: (*classifier_backward(d, c)[:1],
                                                            d.T @ c[2], d.sum(0)),
                 "dw", "transposed", id="classifier-dw-transposed"),
    pytest.param(E.check_classifier_backward, lambda d, c: (*classifier_backward(d, c)[:2],
                                                            d.copy()),
                 "db", "db not summed over the batch", id="classifier-db-not-summed"),
    pytest.param(E.check_sequence_mean_ce_backward, sce_token_mean, "dlogits",
                 "the token mean's gradient", id="sequence-ce-token-mean"),
    pytest.param(E.check_sequence_mean_ce_backward, sce_not_zeroed, "dlogits",
                 "ignored rows not zeroed", id="sequence-ce-not-zeroed"),
    pytest.param(E.check_sequence_mean_ce_backward, sce_n_b_only, "dlogits",
                 "divided by n_b only", id="sequence-ce-n-b-only"),
    pytest.param(E.check_lora_backward, lora_no_scale, "dA", "forgot the scale",
                 id="lora-no-scale"),
    pytest.param(E.check_lora_backward, lora_no_adapter_dx, "dx", "dx without the adapter",
                 id="lora-dx-no-adapter"),
    pytest.param(E.check_lora_backward, lora_dA_with_B, "dA", "dA transposed",
                 id="lora-dA-transposed"),
]


def test_lora_checker_names_a_dw_returned_too():
    report = E.check_lora_backward(lora_with_dw, show=False)
    text = flat(str(report))
    assert not report.ok and "returned 4 value(s); expected 3: dx, dA, dB" in text
    assert "this looks like: 4 values, a dw too? w is frozen" in text


def test_sequence_mean_ce_reference_weighs_each_sequence_alike():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 5))
    targets = np.array([[1, -1, -1, -1], [2, 3, 4, 0]])
    loss, _ = E.sequence_mean_ce_forward(logits, targets)
    per = [L.softmax_cross_entropy_forward(logits[b], targets[b])[0] for b in range(2)]
    assert np.isclose(loss, np.mean(per))
    assert not np.isclose(loss, L.softmax_cross_entropy_forward(logits, targets)[0])


# --- notebook 20 (from GPT-2 to Llama); more in tests/test_exercises_llama.py ---------------

CORRECT[E.check_rmsnorm_backward] = L.rmsnorm_backward
CHECKERS = CHECKERS + [E.check_rmsnorm_backward]
WRONG += [
    # layer norm's backward with mean 0: its -mean(g) term kept
    pytest.param(E.check_rmsnorm_backward, lambda d, c: (
        L.layernorm_backward(d, (c[0], c[2], 0 * c[1], c[1]))[0], L.rmsnorm_backward(d, c)[1]),
        "dx", "-mean(g) term is still there", id="rmsnorm-layernorm-mean-term"),
    pytest.param(E.check_rmsnorm_backward, lambda d, c: (d * c[2] * c[1],
                                                         L.rmsnorm_backward(d, c)[1]),
                 "dx", "-xhat*mean(g*xhat) term is missing", id="rmsnorm-rstd-constant"),
]


# --- notebook 19 (data parallelism); more in tests/test_exercises_parallel.py -----------------

CORRECT[E.check_data_parallel_grads] = E.reference_data_parallel_grads
CHECKERS = CHECKERS + [E.check_data_parallel_grads]
WRONG += [
    pytest.param(E.check_data_parallel_grads, lambda w, x, y, N: DP._dp(w, x, y, N, grad_div=1),
                 "grads", "the losses averaged but the gradients summed", id="ddp-grads-summed"),
    pytest.param(E.check_data_parallel_grads, lambda w, x, y, N: DP._dp(
        w, x, y, N, shard=lambda r, B, N: (slice(0, B // N),)),
        "grads", "every worker took the first B/N rows", id="ddp-first-rows"),
]
