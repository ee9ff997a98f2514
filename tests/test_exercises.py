"""Every exercise checker, both ways: a correct answer passes, a wrong one is caught and the
report names the wrong output."""

import numpy as np
import pytest

from numpygpt import exercises as E
from numpygpt import layers as L
from numpygpt.optim import cosine_lr


def _softmax_backward(p, dp):
    return p * (dp - (dp * p).sum(-1, keepdims=True))


def _adamw(p, g, m, v, t, lr, betas, eps, wd):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p * (1 - lr * wd) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


def _top_p(probs, top_p):
    order = np.argsort(-probs, axis=-1)
    sp = np.take_along_axis(probs, order, -1)
    keep_sorted = np.cumsum(sp, -1) - sp < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    out = np.where(keep, probs, 0)
    return out / out.sum(-1, keepdims=True)


def _cos(E_):
    n = E_ / np.linalg.norm(E_, axis=1, keepdims=True)
    return n @ n.T


def _prompt_targets(ids, prompt_len):
    y = ids[:, 1:].copy()
    y[:, : prompt_len - 1] = -1
    return ids[:, :-1], y


def _scale(fn, i, factor=1.3):
    """Wrap a correct function so that its i-th output is wrong by a factor."""
    def wrong(*a):
        out = fn(*a)
        if isinstance(out, tuple):
            out = list(out)
            out[i] = out[i] * factor
            return tuple(out)
        return out * factor
    return wrong


# (checker, correct solution, index of the output to break, name the report must give)
CASES = [
    (E.check_embedding_backward, L.embedding_backward, 0, "dwte"),
    (E.check_linear_backward, L.linear_backward, 1, "dw"),
    (E.check_gelu_backward, L.gelu_backward, 0, "dx"),
    (E.check_layernorm_backward, L.layernorm_backward, 0, "dx"),
    (E.check_softmax_backward, _softmax_backward, 0, "ds"),
    (E.check_attention_backward, L.attention_backward, 2, "db_attn"),
    (E.check_cross_entropy_backward, L.softmax_cross_entropy_backward, 0, "dlogits"),
    (E.check_residual_block_backward, lambda dout, df: dout + df, 0, "dx"),
    (E.check_sequence_nll, lambda p, t: -np.mean(np.log(p[np.arange(len(t)), t])), 0, "nll"),
    (E.check_sinusoidal_table, lambda T, C: L.sinusoidal_table(T, C, np.float64), 0, "table"),
    (E.check_adamw_step, _adamw, 2, "v"),
    (E.check_cosine_lr, cosine_lr, 0, "lr"),
    (E.check_top_p_filter, _top_p, 0, "probs"),
    (E.check_cosine_similarity, _cos, 0, "sim"),
    (E.check_prompt_targets, _prompt_targets, 1, "y"),
]


@pytest.mark.parametrize("checker,solution,i,name", CASES, ids=[c[0].__name__ for c in CASES])
def test_checker_accepts_correct_and_names_the_wrong_output(checker, solution, i, name, capsys):
    report = checker(solution)
    assert report.ok, str(report)
    assert "all correct" in capsys.readouterr().out
    if name == "y":  # integer targets: break them differently
        def wrong(ids, n):
            x, y = solution(ids, n)
            return x, ids[:, 1:]  # forgot to mask the prompt
    else:
        wrong = _scale(solution, i)
    report = checker(wrong)
    assert not report.ok and report.wrong == [name], str(report)
    out = capsys.readouterr().out
    assert f"✗ {name}" in out and "wrong" in out


def test_attention_checker_catches_a_subtle_mistake():
    """Forgetting the 1/sqrt(hs) scale in the backward: only q and k gradients go wrong."""
    def no_scale(dout, cache):
        q = cache.q
        hs = q.shape[-1]
        fixed = cache._replace(q=q * np.sqrt(hs), k=cache.k)  # wrong on purpose
        return L.attention_backward(dout, fixed)
    report = E.check_attention_backward(no_scale, show=False)
    assert not report.ok and "dw_attn" in report.wrong and "dw_proj" not in report.wrong


def test_layernorm_checker_catches_forgetting_the_mean_term():
    def forgot(dout, cache):
        x, w, mean, rstd = cache
        xhat = (x - mean) * rstd
        g = dout * w
        dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))  # missing - mean(g)
        return dx, (dout * xhat).sum((0, 1)), dout.sum((0, 1))
    report = E.check_layernorm_backward(forgot, show=False)
    assert report.wrong == ["dx"]


def test_embedding_checker_catches_fancy_index_accumulation_bug():
    def buggy(dout, cache):
        idx, shape, dtype, _ = cache
        dwte = np.zeros(shape, dtype)
        dwte[idx.reshape(-1)] += dout.reshape(-1, shape[1])  # drops repeated ids
        return dwte
    assert E.check_embedding_backward(buggy, show=False).wrong == ["dwte"]


def test_checker_reports_wrong_shape_count_and_exceptions():
    r = E.check_linear_backward(lambda dout, cache: (dout, dout), show=False)
    assert r.wrong == ["outputs"]
    r = E.check_linear_backward(lambda dout, cache: (dout, dout, dout), show=False)
    assert "dx" in r.wrong and "has shape" in str(r)
    r = E.check_linear_backward(lambda dout, cache: 1 / 0, show=False)
    assert r.wrong == ["call"] and "ZeroDivisionError" in str(r)


def test_param_count_checker():
    assert E.check_param_count(E.param_count, show=False).ok
    assert not E.check_param_count(lambda cfg: E.param_count(cfg) + 1, show=False).ok


def test_fast_mode(monkeypatch):
    monkeypatch.delenv("NUMPYGPT_FAST", raising=False)
    monkeypatch.setenv("CI", "true")
    assert E.fast_mode()
    monkeypatch.setenv("CI", "")
    assert not E.fast_mode()
    monkeypatch.setenv("NUMPYGPT_FAST", "1")
    assert E.fast_mode()
