"""Notebook 09 (training): the warmup + cosine learning-rate schedule."""

import math

import numpy as np

from ...training.optim import cosine_lr
from .checking import Case, as_scalar, run

_LR_ITS = (0, 5, 9, 10, 30, 55, 99, 100, 101, 150)
_LR_ARGS = (1e-3, 1e-4, 10, 100)


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


def check_cosine_lr(fn, show=True):
    """fn(it, lr, min_lr, warmup_iters, lr_decay_iters) -> the learning rate (nanoGPT's),
    tried at iterations across the warmup, the decay and after it."""
    def call(f, args):
        out = []
        for it in _LR_ITS:
            value = f(it, *_LR_ARGS)
            if value is None:
                return None
            out.append(as_scalar(value))
        try:
            return np.array(out, dtype=np.float64)
        except (TypeError, ValueError):
            return out

    expected = np.array([cosine_lr(i, *_LR_ARGS) for i in _LR_ITS])
    case = Case((), ("lr",), (expected,), call=call,
                index=lambda i: f"lr(it={_LR_ITS[i[0]]})")
    return run("warmup + cosine learning rate (lr=1e-3, min_lr=1e-4, warmup_iters=10, "
               "lr_decay_iters=100)", fn, [case], COSINE_LR_MISTAKES, {
        "lr": "three pieces: a linear warmup, a cosine from lr down to min_lr, then min_lr"},
        show)
