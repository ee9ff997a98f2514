"""The checkers of notebook 21 (the Chinese numeral of a number) and notebook 22 (the DPO loss,
forward and backward), every way a learner meets them: right answers pass (in float64 and
float32 for the DPO loss; written several ways), a stub gets "not implemented yet", and
typical wrong answers written as a learner would write them are rejected with the wrong
output, the case and the likely mistake (or the rule broken) named."""

import re

import numpy as np
import pytest
from exercise_reports import assert_not_implemented, assert_passes, flat, no_return, stub

from numpygpt import layers as L
from numpygpt.course import exercises as E
from numpygpt.finetune import numbers

# --- notebook 21: my_chinese -----------------------------------------------------------------

DIGITS = "零一二三四五六七八九"
UNITS = ("万", "千", "百", "十", "")


def chinese(n, ten_alone=True, one_ling=True, trailing=False, liang=False, inner_yi=True):
    """A learner's numeral, right by default; each switch makes one typical mistake."""
    five = [int(d) for d in f"{n:05d}"]
    first = next(i for i, d in enumerate(five) if d)
    out, due = [], False
    for i in range(first, 5):
        d = five[i]
        if d == 0:
            if not one_ling and i < 4 and any(five[i + 1:]):
                out.append("零")  # a 零 for every zero
            due = True
            continue
        if due and one_ling:
            out.append("零")
        due = False
        if d == 1 and i == 3 and ((i == first and ten_alone) or (i != first and not inner_yi)):
            pass  # 十 without its 一
        else:
            out.append("两" if liang and d == 2 and i < 3 else DIGITS[d])
        out.append(UNITS[i])
    if trailing and five[-1] == 0:
        out.append("零")
    return "".join(out)


def chinese_from_dict(n):
    """Right, written another way: a table of the groups."""
    return numbers.chinese(n)


def test_right_numerals_pass():
    assert all(chinese(n) == numbers.chinese(n) for n in range(1, numbers.MAX_NUMBER + 1))
    for fn in (chinese, chinese_from_dict, E.reference_chinese,
               lambda n: " " + numbers.chinese(n) + "\n"):  # spaces around are forgiven
        report = E.check_my_chinese(fn, show=False)
        assert_passes(report)
        assert "✓ every number from 1 to 99,999" in str(report)


def test_my_chinese_stubs_are_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_my_chinese(fn, show=False))


@pytest.mark.parametrize("switch,case,rule,likely", [
    (dict(ten_alone=False), "chinese(10) = '一十', expected '十'",
     "a number that is 10-19 itself drops the 一", "一十 for a number that is 10-19 itself"),
    (dict(inner_yi=False), "chinese(110) = '一百十', expected '一百一十'",
     "inside a number the 一 before 十 stays", "the 一 before 十 dropped inside a number"),
    (dict(one_ling=False), "chinese(1001) = '一千零零一', expected '一千零一'",
     "one 零 for each run of zeros between non-zero digits", "a 零 for each zero of the run"),
    (dict(trailing=True), "chinese(10) = '十零', expected '十'",
     "zeros at the end get no 零", "a 零 for zeros that no non-zero digit follows"),
    (dict(liang=True), "chinese(12345) = '一万两千三百四十五', expected '一万二千三百四十五'",
     "2 is 二, never 两", "两 written"),
], ids=["yi-shi-alone", "shi-inside", "ling-per-zero", "trailing-ling", "liang"])
def test_numeral_mistakes_name_the_case_and_the_rule(switch, case, rule, likely):
    def wrong(n):
        return chinese(n, **switch)

    wrong.__name__ = "chinese"
    report = E.check_my_chinese(wrong, show=False)
    text = flat(str(report))
    assert not report.ok and "every number" in report.wrong, text
    assert case in text, text
    assert f"rule: {rule}" in text and f"this looks like: {likely}" in text, text
    assert re.search(r"wrong: [\d,]+ of the 99,999 numbers", text), text


def test_missing_ling_names_the_zero_rule_whichever_case_shows_it():
    def no_ling(n):
        return numbers.chinese(n).replace("零", "")

    text = flat(str(E.check_my_chinese(no_ling, show=False)))
    assert "no_ling(101) = '一百一', expected '一百零一'" in text, text
    assert text.count("rule: one 零 for each run of zeros") == 1, text  # said once
    assert "rule: as above" in text and "零 missing between non-zero digits" in text, text


def test_a_numeral_that_is_not_a_str_or_raises_is_said():
    text = str(E.check_my_chinese(lambda n: n, show=False))
    assert "returned int 1; expected the str '一'" in text, text

    def crashes(n):
        return DIGITS[n]  # an IndexError from 10 on

    report = E.check_my_chinese(crashes, show=False)
    text = str(report)
    assert not report.ok and "raised IndexError" in text, text
    assert "in crashes" in text and "return DIGITS[n]" in text, text  # the learner's line
    assert "crashes(10) raised IndexError" in text, text


def test_a_hard_coded_table_of_the_rule_cases_fails_the_sweep():
    known = {n: numbers.chinese(n) for _, ns, _ in E.ch21_translation.RULES for n in ns}
    report = E.check_my_chinese(lambda n: known.get(n, "一"), show=False)
    assert report.wrong == ["every number"], str(report)


# --- notebook 22: the DPO loss -------------------------------------------------------------------


def dpo_forward(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
    return np.logaddexp(0, -h).mean(), (h, beta)


def dpo_backward(dloss, cache):
    h, beta = cache
    e = np.exp(-np.abs(h))
    sig_neg = np.where(h >= 0, e / (1 + e), 1 / (1 + e))
    dh = -sig_neg * dloss / len(h)
    return beta * dh, -beta * dh, -beta * dh, beta * dh


def dpo_forward_softplus(logp_c, logp_r, ref_c, ref_r, beta):
    """Right, written another way: softplus(x) = max(x, 0) + log1p(exp(-|x|)), cache kept
    as the four inputs."""
    x = -beta * ((logp_c - ref_c) - (logp_r - ref_r))
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).mean(), \
        (logp_c, logp_r, ref_c, ref_r, beta)


def dpo_backward_from_inputs(dloss, cache):
    logp_c, logp_r, ref_c, ref_r, beta = cache
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
    sig_neg = np.exp(-np.logaddexp(0, h))  # sigmoid(-h) = exp(-softplus(h))
    g = beta * sig_neg * dloss / len(h)
    return -g, g, g, -g


def test_right_dpo_losses_pass_in_float64_and_float32():
    for fwd, bwd in ((dpo_forward, dpo_backward), (L.dpo_loss_forward, L.dpo_loss_backward),
                     (dpo_forward_softplus, dpo_backward_from_inputs)):
        report = E.check_dpo_loss_forward(fwd, show=False)
        assert_passes(report)
        text = str(report)
        assert "float32, beta=0.1" in text and "float32, large margins" in text, text
        assert "h from -1000 to 1000" in text
        report = E.check_dpo_loss_backward(bwd, fwd, show=False)
        assert_passes(report)
        assert "dref_r (float32, large margins, h from -100 to 100)" in str(report)


def test_dpo_stubs_are_not_implemented_yet():
    for fn in (stub, no_return):
        assert_not_implemented(E.check_dpo_loss_forward(fn, show=False))
        assert_not_implemented(E.check_dpo_loss_backward(fn, dpo_forward, show=False))
    report = E.check_dpo_loss_backward(dpo_backward, stub, show=False)
    assert_not_implemented(report)
    assert "stub raises NotImplementedError" in str(report)


def test_the_backward_needs_a_right_forward_first():
    def summed(logp_c, logp_r, ref_c, ref_r, beta):
        loss, cache = dpo_forward(logp_c, logp_r, ref_c, ref_r, beta)
        return loss * len(logp_c), cache

    report = E.check_dpo_loss_backward(dpo_backward, summed, show=False)
    assert not report.ok and not report.not_implemented
    assert "make check_dpo_loss_forward pass first" in flat(str(report))


def test_a_forward_without_its_cache_is_pointed_out():
    report = E.check_dpo_loss_forward(lambda *a: dpo_forward(*a)[0], show=False)
    assert not report.ok and report.wrong == ["cache"], str(report)
    assert "return (loss, cache)" in flat(str(report))


def fwd_sum(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
    return np.logaddexp(0, -h).sum(), h


def fwd_no_beta(logp_c, logp_r, ref_c, ref_r, beta):
    h = (logp_c - ref_c) - (logp_r - ref_r)
    return np.logaddexp(0, -h).mean(), h


def fwd_no_ref(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * (logp_c - logp_r)
    return np.logaddexp(0, -h).mean(), h


def fwd_sign(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * ((logp_r - ref_r) - (logp_c - ref_c))  # chosen and rejected swapped
    return np.logaddexp(0, -h).mean(), h


def fwd_naive(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
    return -np.log(1 / (1 + np.exp(-h))).mean(), h


def fwd_log1p(logp_c, logp_r, ref_c, ref_r, beta):
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))
    return np.log1p(np.exp(-h)).mean(), h


@pytest.mark.parametrize("wrong,case,sentence", [
    (fwd_sum, "B=6, beta=0.1", "summed over the pairs instead of averaged"),
    (fwd_no_beta, "B=6, beta=0.1", "beta left out"),
    (fwd_no_ref, "B=6, beta=0.1", "the reference log-probabilities left out"),
    (fwd_sign, "B=6, beta=0.1", "the sign of the margin flipped"),
    (fwd_naive, "large margins, h from -1000 to 1000", "-log sigmoid(h) computed as written"),
    (fwd_log1p, "large margins, h from -1000 to 1000", "-log sigmoid(h) computed as written"),
], ids=["sum", "no-beta", "no-ref", "sign", "naive-log-sigmoid", "log1p-exp"])
def test_dpo_forward_mistakes_are_named(wrong, case, sentence):
    report = E.check_dpo_loss_forward(wrong, show=False)
    text = flat(str(report))
    assert not report.ok and "loss" in report.wrong, text
    line = next(ln for ln in text.splitlines() if ln.startswith("✗ loss"))
    assert case in line and "wrong" in line, text
    assert f"this looks like: {sentence}" in text, text


def test_naive_log_sigmoid_passes_small_margins_and_fails_only_large_ones():
    report = E.check_dpo_loss_forward(fwd_naive, show=False)
    assert report.failed == ["loss (large margins, h from -1000 to 1000)"], str(report)
    assert "yours is inf" in str(report)


def bwd_sig_plus(dloss, cache):
    h, beta = cache
    s = 1 / (1 + np.exp(-h))  # sigmoid(h): the wrong one
    dh = -s * dloss / len(h)
    return beta * dh, -beta * dh, -beta * dh, beta * dh


def bwd_no_beta(dloss, cache):
    h, beta = cache
    dh = -np.exp(-np.logaddexp(0, h)) * dloss / len(h)
    return dh, -dh, -dh, dh


def bwd_no_mean(dloss, cache):
    h, beta = cache
    dh = -np.exp(-np.logaddexp(0, h)) * dloss
    return beta * dh, -beta * dh, -beta * dh, beta * dh


def bwd_no_dloss(dloss, cache):
    return dpo_backward(1.0, cache)


def bwd_flipped(dloss, cache):
    return tuple(-g for g in dpo_backward(dloss, cache))


def bwd_frozen_refs(dloss, cache):
    dc, dr, _, _ = dpo_backward(dloss, cache)
    return dc, dr, np.zeros_like(dc), np.zeros_like(dr)


def bwd_ref_signs(dloss, cache):
    dc, dr, _, _ = dpo_backward(dloss, cache)
    return dc, dr, dc, dr


def bwd_naive_sigmoid(dloss, cache):
    h, beta = cache
    s = np.exp(-h) / (1 + np.exp(-h))  # sigmoid(-h), but inf / inf at h = -1000
    dh = -s * dloss / len(h)
    return beta * dh, -beta * dh, -beta * dh, beta * dh


def bwd_swapped(dloss, cache):
    dc, dr, drc, drr = dpo_backward(dloss, cache)
    return dr, dc, drc, drr


@pytest.mark.parametrize("wrong,outputs,sentence", [
    (bwd_sig_plus, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"], "sigmoid(h) where sigmoid(-h)"),
    (bwd_no_beta, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"], "beta left out"),
    (bwd_no_mean, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"], "the 1/B of the batch mean"),
    (bwd_no_dloss, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"], "forgot to multiply by dloss"),
    (bwd_flipped, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"], "every sign flipped"),
    (bwd_frozen_refs, ["dref_c", "dref_r"], "the reference gradients set to 0"),
    (bwd_ref_signs, ["dref_c", "dref_r"], "the reference gradients given the policy's signs"),
    (bwd_naive_sigmoid, ["dlogp_c", "dlogp_r", "dref_c", "dref_r"],
     "sigmoid computed as exp(x) / (1 + exp(x))"),
], ids=["sigmoid-h", "no-beta", "no-mean", "no-dloss", "flipped", "zero-refs", "ref-signs",
        "naive-sigmoid"])
def test_dpo_backward_mistakes_are_named(wrong, outputs, sentence):
    report = E.check_dpo_loss_backward(wrong, dpo_forward, show=False)
    text = flat(str(report))
    assert not report.ok and sorted(report.wrong) == sorted(outputs), text
    assert text.count(f"this looks like: {sentence}") == 1, text  # spelled out once
    assert re.search(r"yours (-?[\d.]|nan|inf)", text), text


def test_swapped_gradients_are_called_swapped():
    report = E.check_dpo_loss_backward(bwd_swapped, dpo_forward, show=False)
    text = flat(str(report))
    assert sorted(report.wrong) == ["dlogp_c", "dlogp_r"], text
    assert "what you return as dlogp_c is the expected dlogp_r: the outputs look swapped" in text


def test_a_float64_answer_to_float32_inputs_is_a_remark_not_a_mistake():
    def upcast(dloss, cache):
        h, beta = cache
        return dpo_backward(dloss, (h.astype(np.float64), beta))

    report = E.check_dpo_loss_backward(upcast, dpo_forward, show=False)
    assert report.ok, str(report)
    assert "float64 for float32 inputs" in str(report)
