"""The checker of notebook 23's exercise (one step of the online softmax), every way a learner
meets it: right answers pass in float64 and float32, a stub gets "not implemented yet", and
typical wrong answers, written as a learner would write them, are rejected with the wrong
output, the worst element and the likely mistake named."""


import numpy as np
from exercise_reports import flat

from numpygpt.course import exercises as E


def online_step(m, l, acc, s, v):
    """A learner's right answer."""
    m_new = np.maximum(m, np.max(s, axis=1, keepdims=True))
    scale = np.exp(m - m_new)
    p = np.exp(s - m_new)
    return m_new, l * scale + p.sum(axis=1, keepdims=True), acc * scale + p @ v


def test_right_answers_pass(capsys):
    report = E.check_online_softmax_step(online_step)
    out = capsys.readouterr().out
    assert report.ok and out.rstrip().endswith("all correct, well done!") and "✗" not in out
    assert "float32" in out and "first block" in out and "masked" in out
    assert E.check_online_softmax_step(E.reference_online_softmax_step, show=False).ok
    assert "✓ acc_new (float32)" in out  # a float32 answer judged by float32's rounding


def test_a_float32_answer_to_float64_inputs_is_told_so():
    def downcast(m, l, acc, s, v):
        return online_step(*(a.astype(np.float32) for a in (m, l, acc, s, v)))

    report = E.check_online_softmax_step(downcast, show=False)
    assert not report.ok and "dtype float32, expected float64" in str(report)


def stub(m, l, acc, s, v):
    # your code here
    raise NotImplementedError


def test_a_stub_is_not_implemented_yet():
    for fn, said in ((stub, "stub raises NotImplementedError"),
                     (lambda *a: None, "returned None")):
        report = E.check_online_softmax_step(fn, show=False)
        text = str(report)
        assert not report.ok and report.not_implemented and said in text
        assert text.endswith("not implemented yet") and "nan" not in text


# --- wrong answers ---------------------------------------------------------------------------


def no_rescale(m, l, acc, s, v):
    """Forgot that the old sums were relative to the old max."""
    m_new = np.maximum(m, s.max(axis=1, keepdims=True))
    p = np.exp(s - m_new)
    return m_new, l + p.sum(axis=1, keepdims=True), acc + p @ v


def acc_not_rescaled(m, l, acc, s, v):
    m_new = np.maximum(m, s.max(axis=1, keepdims=True))
    a = np.exp(m - m_new)
    p = np.exp(s - m_new)
    return m_new, a * l + p.sum(axis=1, keepdims=True), acc + p @ v


def upside_down(m, l, acc, s, v):
    m_new = np.maximum(m, s.max(axis=1, keepdims=True))
    a = np.exp(m_new - m)
    p = np.exp(s - m_new)
    return m_new, a * l + p.sum(axis=1, keepdims=True), a * acc + p @ v


def block_max_only(m, l, acc, s, v):
    m_new = s.max(axis=1, keepdims=True)
    a = np.exp(m - m_new)
    p = np.exp(s - m_new)
    return m_new, a * l + p.sum(axis=1, keepdims=True), a * acc + p @ v


def normalised(m, l, acc, s, v):
    m_new = np.maximum(m, s.max(axis=1, keepdims=True))
    a = np.exp(m - m_new)
    p = np.exp(s - m_new)
    l_new = a * l + p.sum(axis=1, keepdims=True)
    return m_new, l_new, (a * acc + p @ v) / l_new


def test_wrong_answers_get_a_verdict_naming_what_is_wrong():
    for fn, wrong, says in (
        (no_rescale, "l_new", "l was not rescaled"),
        (acc_not_rescaled, "acc_new", "acc was not rescaled"),
        (upside_down, "l_new", "upside down"),
        (block_max_only, "m_new", "m_new is the block's max alone"),
        (normalised, "acc_new", "acc was divided by l"),
    ):
        report = E.check_online_softmax_step(fn, show=False)
        text = flat(str(report))
        assert not report.ok and not report.not_implemented, fn.__name__
        assert any(w.startswith(wrong) for w in report.wrong), (fn.__name__, report.wrong)
        assert says in text, (fn.__name__, text)
        assert "worst at" in text or "first at" in text  # where, with the learner's value


def test_a_sum_over_the_wrong_axis_is_rejected():
    def wrong_axis(m, l, acc, s, v):
        m_new = np.maximum(m, s.max(axis=1, keepdims=True))
        a = np.exp(m - m_new)
        p = np.exp(s - m_new)
        return m_new, a * l + p.sum(axis=0)[:, None][: len(m)], a * acc + p @ v

    report = E.check_online_softmax_step(wrong_axis, show=False)
    assert not report.ok and "l_new" in " ".join(report.wrong)
