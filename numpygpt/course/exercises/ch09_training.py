"""Notebook 09 (training): the warmup + cosine learning-rate schedule."""

import math

import numpy as np

from ...training.optim import cosine_lr
from .checking import Case, as_scalar, run

# (label, (lr, min_lr, warmup_iters, lr_decay_iters), the steps tried, hint): every piece,
# its boundaries, and the edges the exercise's text defines
_LR_CASES = [
    ("lr=1e-3, min_lr=1e-4, W=10, D=100", (1e-3, 1e-4, 10, 100),
     (0, 5, 9, 10, 30, 55, 99, 100, 101, 150), ""),
    ("W = D = 20: no decay", (6e-4, 6e-5, 20, 20), (0, 10, 19, 20, 21, 40),
     "with lr_decay_iters <= warmup_iters there is no decay: min_lr from step warmup_iters "
     "on (the cosine's progress would divide by D - W = 0)"),
    ("W = 30 > D = 20: no decay", (6e-4, 6e-5, 30, 20), (0, 19, 20, 25, 29, 30, 31, 50),
     "with lr_decay_iters <= warmup_iters the warmup still runs up to warmup_iters, then "
     "the rate is min_lr"),
    ("W = 0: no warmup", (1e-3, 1e-5, 0, 50), (0, 1, 25, 49, 50, 51, 80),
     "with warmup_iters = 0 there is no warmup: step 0 is the top of the cosine, lr"),
    ("min_lr = lr", (3e-4, 3e-4, 5, 40), (0, 4, 5, 20, 40, 41),
     "with min_lr = lr the cosine runs between two equal levels: lr from warmup_iters on"),
]


def _lr_no_warmup(it, lr, min_lr, warmup, decay):
    return cosine_lr(max(it, warmup), lr, min_lr, warmup, decay)


def _lr_no_floor(it, lr, min_lr, warmup, decay):
    if it < warmup:
        return cosine_lr(it, lr, min_lr, warmup, decay)
    r = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def _lr_to_zero(it, lr, min_lr, warmup, decay):
    return cosine_lr(it, lr, 0.0, warmup, decay)


def _lr_warmup(shift, denom_shift):
    def f(it, lr, min_lr, warmup, decay):
        if it < warmup:
            return lr * (it + shift) / (warmup + denom_shift)
        return cosine_lr(it, lr, min_lr, warmup, decay)
    return f


def _lr_ratio_from_zero(it, lr, min_lr, warmup, decay):
    if it < warmup or it > decay:
        return cosine_lr(it, lr, min_lr, warmup, decay)
    return min_lr + 0.5 * (1 + math.cos(math.pi * it / decay)) * (lr - min_lr)


COSINE_LR_MISTAKES = [
    ("no warmup: for it < warmup_iters the rate climbs linearly, lr * (it + 1) / "
     "(warmup_iters + 1)", _lr_no_warmup),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(0, 0)),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(1, 0)),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(0, 1)),
    ("no min_lr floor after the decay: past lr_decay_iters the rate stays at min_lr (the "
     "cosine would climb back up)", _lr_no_floor),
    ("decays to 0 instead of min_lr", _lr_to_zero),
    ("the cosine's progress counted from 0, not from the end of the warmup",
     _lr_ratio_from_zero),
]


def _lr_call(f, args):
    """The learner's rate at every step of the case, as one array (float32 if the learner's
    numbers are float32: judged by float32's rounding); an error says at which step."""
    its, params = args
    out = []
    for it in its:
        try:
            value = f(it, *params)
        except Exception as e:
            e.add_note(f"at it={it}")
            raise
        if value is None:
            return None
        out.append(as_scalar(value))
    try:
        wide = any(isinstance(v, (float, np.float64)) for v in out)
        return np.array(out, dtype=np.float64 if wide else np.result_type(*out, np.float32))
    except (TypeError, ValueError):
        return out


def check_cosine_lr(fn, show=True):
    """fn(it, lr, min_lr, warmup_iters, lr_decay_iters) -> the learning rate (nanoGPT's),
    tried at steps across the warmup, the decay and after it, the boundaries included, and on
    the edges the exercise defines: W = D and W > D (no decay: min_lr from step W on), W = 0
    (no warmup) and min_lr = lr."""
    cases = []
    for label, params, its, hint in _LR_CASES:
        expected = np.array([cosine_lr(i, *params) for i in its])
        cases.append(Case((its, params), ("lr",), (expected,), label, call=_lr_call,
                          arg_names=("it", "params"), dtype=(np.float64, np.float32),
                          index=lambda i, its=its: f"lr(it={its[i[0]]})", hint=hint))
    return run("warmup + cosine learning rate", fn, cases, COSINE_LR_MISTAKES, {
        "lr": "three pieces: a linear warmup, a cosine from lr down to min_lr, then min_lr"},
        show)
