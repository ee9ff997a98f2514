"""The checker of notebook 20's exercise (RMSNorm's backward pass), every way a learner meets
it: a right answer passes, a stub gets "not implemented yet", and typical wrong answers,
written as a learner would write them, are rejected with the wrong output, the worst element
and the likely mistake named."""

import re

import numpy as np
import pytest
from exercise_reports import flat

from numpygpt import layers as L
from numpygpt.course import exercises as E


def rmsnorm_backward(dout, cache):
    """A learner's right answer."""
    x, rstd, w = cache
    xhat = x * rstd
    g = dout * w
    dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx, (dout * xhat).sum(axis=(0, 1))


def test_a_right_answer_passes(capsys):
    report = E.check_rmsnorm_backward(rmsnorm_backward)
    out = capsys.readouterr().out
    assert report.ok and out.rstrip().endswith("all correct, well done!") and "✗" not in out
    assert E.check_rmsnorm_backward(L.rmsnorm_backward, show=False).ok  # the package's own
    assert "T=1" in out  # the second case has a single position


def stub(dout, cache):
    # your code here
    raise NotImplementedError


def test_a_stub_is_not_implemented_yet():
    for fn, said in ((stub, "stub raises NotImplementedError"),
                     (lambda d, c: None, "returned None")):
        report = E.check_rmsnorm_backward(fn, show=False)
        text = str(report)
        assert not report.ok and report.not_implemented and said in text
        assert text.endswith("not implemented yet") and "nan" not in text


# --- wrong answers ---------------------------------------------------------------------------


def copied_from_layernorm(dout, cache):
    """Layer norm's backward with the mean term kept."""
    x, rstd, w = cache
    xhat = x * rstd
    g = dout * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx, (dout * xhat).sum(axis=(0, 1))


def treats_rstd_as_constant(dout, cache):
    x, rstd, w = cache
    return dout * w * rstd, (dout * x * rstd).sum(axis=(0, 1))


def sum_not_mean(dout, cache):
    x, rstd, w = cache
    xhat = x * rstd
    g = dout * w
    return rstd * (g - xhat * (g * xhat).sum(-1, keepdims=True)), (dout * xhat).sum(axis=(0, 1))


def dw_with_x(dout, cache):
    x, rstd, w = cache
    return rmsnorm_backward(dout, cache)[0], (dout * x).sum(axis=(0, 1))


def dw_not_summed(dout, cache):
    x, rstd, w = cache
    return rmsnorm_backward(dout, cache)[0], dout * x * rstd


def no_gain(dout, cache):
    x, rstd, w = cache
    return rmsnorm_backward(dout, (x, rstd, np.ones_like(w)))[0], \
        rmsnorm_backward(dout, cache)[1]


@pytest.mark.parametrize("fn,output,mistake", [
    (copied_from_layernorm, "dx", "layer norm's -mean(g) term is still there"),
    (treats_rstd_as_constant, "dx", "the -xhat*mean(g*xhat) term is missing"),
    (sum_not_mean, "dx", "a sum where the mean belongs"),
    (no_gain, "dx", "forgot the gain"),
    (dw_with_x, "dw", "dw = sum(dout * x)"),
    (dw_not_summed, "dw", "dw not summed over B and T"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_wrong_answers_are_rejected_and_named(fn, output, mistake):
    report = E.check_rmsnorm_backward(fn, show=False)
    text = flat(str(report))
    assert not report.ok and report.wrong == [output]
    assert f"✗ {output} (B=2 T=3 C=6)" in text
    assert f"this looks like: {mistake}" in text
    if "shape" not in text:  # same shape: the worst element, yours and the expected value
        assert re.search(rf"worst at {output}\[[\d, ]+\]: yours -?[\d.e+-]+, expected", text)


def test_the_learners_error_is_shown_with_their_line():
    def broken(dout, cache):
        x, rstd, w = cache
        return dout @ w, w  # matmul of (..., C) with (C,): the wrong shape for dx

    text = str(E.check_rmsnorm_backward(broken, show=False))
    assert "✗" in text and "Traceback" not in text
