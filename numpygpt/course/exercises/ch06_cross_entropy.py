"""Notebook 06 (cross-entropy): the fused softmax cross-entropy's backward pass."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run


def _ce_all_rows(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()
    dz[np.arange(len(yv)), yv] -= 1
    dz *= (valid * dloss / len(yv))[:, None]
    return dz.reshape(shape)


def _ce_not_zeroed(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()
    dz[np.arange(len(yv)), yv] -= 1
    return (dz * dloss / max(n_valid, 1)).reshape(shape)


def _ce_no_dloss(dloss, cache):
    return L.softmax_cross_entropy_backward(1.0, cache)


def _ce_no_onehot(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    return (probs * (valid * dloss / max(n_valid, 1))[:, None]).reshape(shape)


CROSS_ENTROPY_MISTAKES = [
    ("divided by the number of all targets instead of the valid ones (the loss is a mean "
     "over the targets that count)", _ce_all_rows),
    ("ignored targets not zeroed: a row whose target is -1 gets no gradient at all",
     _ce_not_zeroed),
    ("forgot to multiply by dloss (the upstream gradient; here it is not 1)", _ce_no_dloss),
    ("forgot to subtract the one-hot target: d(-log p_y)/dz = p - onehot(y)", _ce_no_onehot),
]


def check_cross_entropy_backward(fn, show=True):
    """fn(dloss, cache) -> dlogits, with cache = (probs, yv, valid, n_valid, shape) as made
    by layers.softmax_cross_entropy_forward. Tried with some targets ignored (-1), with all
    of them ignored (then the loss is 0 and so is its gradient), with none ignored, then in
    float32 (dlogits of probs' dtype)."""
    rng = np.random.default_rng(7)

    def forward(z, y):
        return L.softmax_cross_entropy_forward(z, y)

    def case(targets, seed, label, dtype=np.float64, hint=""):
        return grad_case(forward, {"logits": randn(rng, *targets.shape, 6, scale=2.0),
                                   "targets": targets}, ["logits"], seed=seed,
                         arg_names=("dloss", "cache"), label=label, dtype=dtype,
                         strict_dtype=True, hint=hint)

    some = np.array([[0, -1, 2], [-1, 3, 4]])
    cases = [
        case(some, 7, "some targets ignored"),
        case(np.full((2, 3), -1), 8, "all targets ignored",
             hint="with every target ignored, n_valid is 0: nothing to learn from, so the "
                  "gradient is all zeros (not 0/0 = nan)"),
        case(np.array([[5, 0, 0, 1]]), 9, "no target ignored"),
        case(some, 10, "some targets ignored, float32", np.float32),
    ]
    return run("softmax cross-entropy backward", fn, cases, CROSS_ENTROPY_MISTAKES, {
        "dlogits": "the loss is the mean of -log softmax(z)[y] over the valid targets"}, show)
