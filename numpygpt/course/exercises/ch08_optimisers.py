"""Notebook 08 (optimisers): one AdamW step."""

import numpy as np

from .checking import Case, randn, run, variant


def _adamw_ref(p, g, m, v, t, lr, betas, eps, wd, bias=True, l2=False, decay_after=False,
               eps_in=False, v_g=False, decay_no_lr=False, t_minus=0):
    b1, b2 = betas
    if l2:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g if v_g else g * g)
    tt = t - t_minus
    mh, vh = (m / (1 - b1**tt), v / (1 - b2**tt)) if bias else (m, v)
    step = mh / (np.sqrt(vh + eps) if eps_in else np.sqrt(vh) + eps)
    if l2:
        return p - lr * step, m, v
    if decay_after:
        return (p - lr * step) * (1 - lr * wd), m, v
    return p * (1 - (wd if decay_no_lr else lr * wd)) - lr * step, m, v


ADAMW_MISTAKES = [
    ("no bias correction: m and v start at 0, so early on they are too small by "
     "(1 - beta^t)", variant(_adamw_ref, bias=False)),
    ("weight decay added to the gradient (Adam + L2, not AdamW): AdamW shrinks p directly, "
     "p *= 1 - lr * weight_decay", variant(_adamw_ref, l2=True)),
    ("weight decay applied after the update: decay the old p",
     variant(_adamw_ref, decay_after=True)),
    ("eps inside the square root: it is added to sqrt(v_hat)", variant(_adamw_ref, eps_in=True)),
    ("v averages g, not g * g (the squared gradient)", variant(_adamw_ref, v_g=True)),
    ("weight decay without the learning rate: p *= 1 - lr * weight_decay",
     variant(_adamw_ref, decay_no_lr=True)),
    ("bias correction with t - 1: t is already 1 at the first update",
     variant(_adamw_ref, t_minus=1)),
]


def check_adamw_step(fn, show=True):
    """fn(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v) after one AdamW update of a
    2-D weight, where t is the step number (1 for the first update)."""
    rng = np.random.default_rng(10)
    p, g = randn(rng, 3, 4), randn(rng, 3, 4)
    m, v = randn(rng, 3, 4) * 0.1, np.abs(randn(rng, 3, 4)) * 0.1
    args = (p, g, m, v, 3, 0.01, (0.9, 0.99), 1e-6, 0.1)
    case = Case(args, ("p", "m", "v"), _adamw_ref(*args),
                arg_names=("p", "g", "m", "v", "t", "lr", "betas", "eps", "weight_decay"))
    return run("AdamW step", fn, [case], ADAMW_MISTAKES, {
        "m": "m is a moving average of the gradient with weight beta1",
        "v": "v is a moving average of the squared gradient with weight beta2",
        "p": "AdamW: decay p, then step by lr * m_hat / (sqrt(v_hat) + eps)"}, show)
