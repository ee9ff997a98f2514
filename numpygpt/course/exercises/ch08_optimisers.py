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


def _kingma_ba(p, g, m, v, t, lr, betas, eps, wd):
    """Kingma & Ba's efficient form of the same step (their section 2): the bias corrections
    folded into the step size, alpha_t = lr sqrt(1 - b2^t) / (1 - b1^t), applied to
    m / (sqrt(v) + eps). It equals the textbook step with eps scaled by sqrt(1 - b2^t):
    the same update, but for where eps enters."""
    b1, b2 = betas
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    alpha_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    return p - alpha_t * m / (np.sqrt(v) + eps), m, v


EQUIVALENT_FORMS = [
    ("your step is Kingma & Ba's form, lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + "
     "eps): the same update but for where eps enters, so it counts as right", _kingma_ba),
]


def _adam_case(label, seed, shape, t, lr, betas, eps, wd, first=False, quiet_rows=0,
               dtype=np.float64):
    """p, g, m, v of one 2-D weight; `first`: zero moments (the first update); `quiet_rows`
    rows whose gradient has been ~0 (v tiny, so eps decides the step)."""
    rng = np.random.default_rng(seed)
    p, g = randn(rng, *shape), randn(rng, *shape)
    m, v = randn(rng, *shape) * 0.1, np.abs(randn(rng, *shape)) * 0.1
    if first:
        m, v = np.zeros(shape), np.zeros(shape)
    g[:quiet_rows], m[:quiet_rows], v[:quiet_rows] = 0.0, m[:quiet_rows] * 1e-3, 1e-12
    arrays = tuple(a.astype(dtype) for a in (p, g, m, v))
    args = (*arrays, t, lr, betas, eps, wd)
    wide = (*(a.astype(np.float64) for a in arrays), t, lr, betas, eps, wd)
    return Case(args, ("p", "m", "v"), _adamw_ref(*wide), label,
                arg_names=("p", "g", "m", "v", "t", "lr", "betas", "eps", "weight_decay"),
                alternatives=EQUIVALENT_FORMS, strict_dtype=False,
                after_pass=dtype != np.float64)


def check_adamw_step(fn, show=True):
    """fn(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v) after one AdamW update of a
    2-D weight, where t is the step number (1 for the first update). Tried at the first
    update (zero moments), at t = 3, at t = 10 with rows whose gradient has been 0 (where
    eps decides the step) and no weight decay, then in float32. Kingma & Ba's form of the
    step, which differs only in where eps enters, counts as right."""
    cases = [_adam_case("t=1, first update", 11, (2, 5), 1, 1e-3, (0.9, 0.999), 1e-8, 0.01,
                        first=True),
             _adam_case("t=3", 10, (3, 4), 3, 0.01, (0.9, 0.99), 1e-6, 0.1),
             _adam_case("t=10, quiet rows, weight_decay=0", 12, (4, 3), 10, 0.05, (0.8, 0.95),
                        1e-3, 0.0, quiet_rows=2),
             _adam_case("t=10, quiet rows, float32", 13, (4, 3), 10, 0.05, (0.8, 0.95),
                        1e-3, 0.1, quiet_rows=1, dtype=np.float32)]
    return run("AdamW step", fn, cases, ADAMW_MISTAKES, {
        "m": "m is a moving average of the gradient with weight beta1",
        "v": "v is a moving average of the squared gradient with weight beta2",
        "p": "AdamW: decay p, then step by lr * m_hat / (sqrt(v_hat) + eps)"}, show)
