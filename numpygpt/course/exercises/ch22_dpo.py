"""Notebook 22 (preference tuning): the DPO loss, forward and backward.

The learner writes the layer pair of layers/dpo.py,

    my_dpo_loss_forward(logp_c, logp_r, ref_c, ref_r, beta) -> (loss, cache)
    my_dpo_loss_backward(dloss, cache) -> (dlogp_c, dlogp_r, dref_c, dref_r)

with h = beta ((logp_c - ref_c) - (logp_r - ref_r)) and loss = mean_b -log sigmoid(h_b). The
checkers compare with the package's layer (gradient-checked in tests/test_layers.py) on pairs
with small margins, on a batch of one, and on margins up to |h| = 1000 where a naive
log(sigmoid(h)) overflows; once those pass, in float32 (margins up to |h| = 100, past where
exp overflows in float32). The backward is checked on the cache the learner's own forward
returned (so the forward must pass first), with an upstream gradient that is not 1.
"""

import copy

import numpy as np

from ... import layers as L
from .ch07_gpt import named_once
from .checking import Case, Opaque, learner_cache, run, show_report
from .diagnosis import as_array
from .report import Report, fn_name

# --- the cases -----------------------------------------------------------------------------------


def _pairs(seed, B, beta, spread, gap=None):
    """(logp_c, logp_r, ref_c, ref_r, beta): sequence log-probabilities of B pairs (sums over
    a few tokens, so negative numbers of a few units) and the reference's, the policy moved
    from it by `spread`; `gap` fixes the margins' sizes instead (large-margin cases)."""
    rng = np.random.default_rng(seed)
    ref_c = -rng.uniform(1.0, 12.0, B)
    ref_r = -rng.uniform(1.0, 12.0, B)
    if gap is None:
        logp_c = ref_c + rng.normal(0.0, spread, B)
        logp_r = ref_r + rng.normal(0.0, spread, B)
    else:  # the policy's log-ratios give margins h = beta * gap exactly in float64
        logp_c = ref_c + gap / 2
        logp_r = ref_r - gap / 2
    return logp_c, logp_r, ref_c, ref_r, beta


# (label, seed, B, beta, spread, gap, dtype)
_CASES = [
    ("B=6, beta=0.1, margins of a few tenths", 22, 6, 0.1, 3.0, None, np.float64),
    ("B=5, beta=0.5: pairs ranked right and wrong", 23, 5, 0.5, 4.0, None, np.float64),
    ("a batch of one pair, beta=2", 24, 1, 2.0, 1.0, None, np.float64),
    ("large margins, h from -1000 to 1000", 25, 6, 10.0, 0.0,
     np.array([-100.0, -50.0, -5.0, 0.3, 50.0, 100.0]), np.float64),
    ("float32, beta=0.1", 26, 6, 0.1, 3.0, None, np.float32),
    ("float32, large margins, h from -100 to 100", 27, 6, 2.0, 0.0,
     np.array([-50.0, -25.0, -1.0, 0.5, 25.0, 50.0]), np.float32),
]


def _case_inputs(seed, B, beta, spread, gap, dtype):
    logp_c, logp_r, ref_c, ref_r, beta = _pairs(seed, B, beta, spread, gap)
    return tuple(a.astype(dtype) for a in (logp_c, logp_r, ref_c, ref_r)) + (beta,)


def _wide(args):
    """The same values in float64 (the expected outputs are computed from them exactly)."""
    return tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)


# --- the forward pass ------------------------------------------------------------------------


def _h(logp_c, logp_r, ref_c, ref_r, beta):
    return beta * ((logp_c - ref_c) - (logp_r - ref_r))


def _fwd_ref(logp_c, logp_r, ref_c, ref_r, beta, refs=True, with_beta=True, sign=1.0,
             reduce="mean", how="stable", beta_on="both"):
    """The loss, with switches that make the catalogued mistakes."""
    b = beta if with_beta else 1.0
    c, r = (logp_c - ref_c, logp_r - ref_r) if refs else (logp_c, logp_r)
    h = b * (c - r) if beta_on == "both" else b * c - r
    x = sign * h
    if how == "stable":
        per = np.logaddexp(0.0, -x)
    else:  # "log_sigmoid": -log(1 / (1 + exp(-x))): log(0) once exp overflows
        per = -np.log(1.0 / (1.0 + np.exp(-x)))
    return per.mean() if reduce == "mean" else per.sum()


def _loss_variant(**switches):
    return lambda *args: (_fwd_ref(*args, **switches), None)


DPO_FORWARD_MISTAKES = [
    ("summed over the pairs instead of averaged: the loss is the mean over the batch (a sum "
     "makes the step size grow with B)", _loss_variant(reduce="sum")),
    ("beta left out: h = beta ((logp_c - ref_c) - (logp_r - ref_r)); beta sets how sharp the "
     "loss is", _loss_variant(with_beta=False)),
    ("beta applied to the chosen log-ratio only: it multiplies the whole difference of the "
     "two log-ratios", _loss_variant(beta_on="chosen")),
    ("the reference log-probabilities left out: DPO's reward is the log-ratio to the reference, "
     "logp - ref, not logp itself", _loss_variant(refs=False)),
    ("the sign of the margin flipped: the loss is -log sigmoid(h), small when the chosen "
     "answer's log-ratio is the larger (h > 0); this is -log sigmoid(-h)",
     _loss_variant(sign=-1.0)),
    ("-log sigmoid(h) computed as written, as -log(1 / (1 + exp(-h))) or log(1 + exp(-h)): at "
     "a large negative margin exp(-h) overflows to inf (h < -709 in float64, h < -88 in "
     "float32) and the loss becomes inf; -log sigmoid(h) = softplus(-h), which "
     "np.logaddexp(0, -h) computes without overflow", _loss_variant(how="log_sigmoid")),
]


def _loss_of(result, seen):
    """The loss of a forward that must return (loss, cache); notes when it did not."""
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0]
    if result is not None:
        seen.append(type(result).__name__)
    return result


def _forward_case(label, seed, B, beta, spread, gap, dtype, not_pairs):
    args = _case_inputs(seed, B, beta, spread, gap, dtype)
    loss = L.dpo_loss_forward(*_wide(args))[0]  # float64, from the same values
    return Case(args, ("loss",), (np.float64(loss),), label, dtype=dtype,
                call=lambda f, a: _loss_of(f(*a), not_pairs),
                arg_names=("logp_c", "logp_r", "ref_c", "ref_r", "beta"),
                after_pass=dtype != np.float64, terms=B)


def check_dpo_loss_forward(fn, show=True):
    """fn(logp_c, logp_r, ref_c, ref_r, beta) -> (loss, cache): the mean over the B pairs of
    -log sigmoid(h), h = beta ((logp_c - ref_c) - (logp_r - ref_r)), the four inputs (B,)
    arrays. Tried on small margins, on one pair, on margins up to |h| = 1000 (where a naive
    log(sigmoid) overflows), then in float32 (margins up to |h| = 100)."""
    not_pairs = []
    cases = [_forward_case(*c, not_pairs) for c in _CASES]
    report = run("DPO loss forward", fn, cases, DPO_FORWARD_MISTAKES, {
        "call": "logp_c, logp_r, ref_c, ref_r are (B,) arrays, beta a number; return "
                "(loss, cache) with loss a single number",
        "loss": "h_b = beta ((logp_c - ref_c) - (logp_r - ref_r)); the loss is the mean of "
                "-log sigmoid(h_b)"}, show=False)
    if not_pairs and not report.not_implemented:
        report.fail("cache", f"missing: {fn_name(fn)} returned one value ({not_pairs[0]}); "
                             "return (loss, cache), the cache holding what the backward needs")
    return show_report(report, show)


# --- the backward pass -----------------------------------------------------------------------


def _sig(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _bwd_ref(dloss, known, sig_of="minus", with_beta=True, mean=True, upstream=True, sign=1.0,
             refs="opposite", how="stable"):
    """The four gradients from what the checker knows (the inputs), with switches that make
    the catalogued mistakes."""
    logp_c, logp_r, ref_c, ref_r, beta = known
    h = _h(logp_c, logp_r, ref_c, ref_r, beta)
    x = -h if sig_of == "minus" else h
    if how == "stable":
        s = _sig(x)
    else:  # exp(x) / (1 + exp(x)): inf / inf at a large x
        s = np.exp(x) / (1 + np.exp(x))
    d = dloss if upstream else 1.0
    dh = -sign * s * d / (len(h) if mean else 1)
    b = beta if with_beta else 1.0
    dc, dr = b * dh, -b * dh
    if refs == "zero":
        return dc, dr, np.zeros_like(dc), np.zeros_like(dr)
    if refs == "same":
        return dc, dr, dc.copy(), dr.copy()
    return dc, dr, -dc, -dr


class _Known:
    """A catalogued mistake of the backward: computed from the inputs the checker knows,
    since the learner's cache can hold anything."""

    def __init__(self, **switches):
        self.switches = switches

    def __call__(self, dloss, known):
        return _bwd_ref(dloss, known, **self.switches)


DPO_BACKWARD_MISTAKES = [
    ("sigmoid(h) where sigmoid(-h) belongs: d/dh [-log sigmoid(h)] = -(1 - sigmoid(h)) = "
     "-sigmoid(-h), large for a pair ranked wrongly (h < 0), small for one ranked right",
     _Known(sig_of="plus")),
    ("beta left out: h = beta (...), so each gradient carries the factor beta",
     _Known(with_beta=False)),
    ("the 1/B of the batch mean left out", _Known(mean=False)),
    ("forgot to multiply by dloss (the upstream gradient; here it is not 1)",
     _Known(upstream=False)),
    ("every sign flipped: the loss falls as the chosen answer's log-probability rises, so "
     "dloss/dlogp_c is negative and dloss/dlogp_r positive", _Known(sign=-1.0)),
    ("the reference gradients set to 0: the reference is frozen in training, but the layer "
     "returns one gradient per input, as every backward does (the caller drops them); ref_c "
     "enters h with a minus sign, ref_r with a plus", _Known(refs="zero")),
    ("the reference gradients given the policy's signs: ref_c enters h with a minus sign "
     "(dref_c = -dlogp_c), ref_r with a plus (dref_r = -dlogp_r)", _Known(refs="same")),
    ("sigmoid computed as exp(x) / (1 + exp(x)): at a large margin both overflow to inf and "
     "inf / inf is nan; use 1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0",
     _Known(how="naive")),
]

BACKWARD_NAMES = ("dlogp_c", "dlogp_r", "dref_c", "dref_r")
DLOSS = 0.7  # an upstream gradient that is not 1


def _backward_call(f, a):
    dloss, cache, known = a
    if isinstance(f, _Known):
        return f(dloss, known)
    return f(dloss, copy.deepcopy(cache.value))


def check_dpo_loss_backward(fn, forward, show=True):
    """fn(dloss, cache) -> (dlogp_c, dlogp_r, dref_c, dref_r), each (B,), with `cache` what
    the learner's forward(logp_c, logp_r, ref_c, ref_r, beta) returned. The forward must pass
    check_dpo_loss_forward first (the same cases); the expected gradients are the package's
    (layers.dpo_loss_backward), with dloss = 0.7."""
    title = "DPO loss backward"
    report = Report(title)
    cases = []
    for label, seed, B, beta, spread, gap, dtype in _CASES:
        args = _case_inputs(seed, B, beta, spread, gap, dtype)
        wide = _wide(args)
        right, cache64 = L.dpo_loss_forward(*wide)

        def judge(result, right=right, dtype=dtype):
            loss = as_array(result[0]) if isinstance(result, (tuple, list)) and \
                len(result) == 2 else None
            if loss is None:
                return "does not return (loss, cache)"
            if loss.shape != () or not abs(float(loss) - float(right)) <= \
                    (1e-4 if dtype == np.float32 else 1e-9) * max(1.0, abs(float(right))):
                return "does not compute the right loss"
            return ""

        result = learner_cache(report, forward, args, judge, "check_dpo_loss_forward", label)
        if result is None:
            return show_report(report, show)
        expected = tuple(np.asarray(g, dtype=np.float64)
                         for g in L.dpo_loss_backward(DLOSS, cache64))
        cases.append(Case((DLOSS, Opaque(result[1]), wide), BACKWARD_NAMES, expected, label,
                          dtype=dtype, strict_dtype=False, call=_backward_call,
                          arg_names=("dloss", "cache", "inputs"),
                          after_pass=dtype != np.float64, terms=B))
    report = run(title, fn, cases, DPO_BACKWARD_MISTAKES, {
        "call": f"dloss is a number ({DLOSS} here); cache is what your my_dpo_loss_forward "
                "returned; return the four gradients, each (B,)",
        "dlogp_c": "write the loss of one pair as a function of h first, then h as a function "
                   "of each input"}, show=False)
    report.lines = named_once(report.lines)  # four outputs: a mistake spelled out once
    return show_report(report, show)


__all__ = ["check_dpo_loss_forward", "check_dpo_loss_backward"]
