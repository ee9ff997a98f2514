"""Checkers for the course's exercises.

A learner writes a piece of the model in a notebook cell (say, the layer-norm backward pass)
and calls a checker from here. The checker runs the learner's function on random float64
inputs, compares each result with the package's own implementation and, for gradients, with
finite differences, and prints which output is right and which is wrong, and by how much:

    >>> from numpygpt.exercises import check_layernorm_backward
    >>> check_layernorm_backward(my_layernorm_backward)
    ✓ dx  max rel error 3.1e-10  (expected < 1e-07)
    ✗ dw  max rel error 4.9e-01  (expected < 1e-07): this gradient is wrong
    ...

Every checker returns a Report: `report.ok` is True when everything matched, `report.wrong`
lists the names of the outputs that did not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import layers as L
from .gradcheck import THRESHOLD, numerical_gradient, rel_error


@dataclass
class Report:
    """The verdict of a checker: one line per output, and the names of the wrong ones."""

    title: str
    lines: list = field(default_factory=list)
    wrong: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.wrong

    def add(self, name, err, threshold, hint=""):
        good = err <= threshold
        mark = "✓" if good else "✗"
        line = f"{mark} {name:<8} max rel error {err:.1e}  (expected < {threshold:.0e})"
        if not good:
            line += ": this is wrong" + (f" ({hint})" if hint else "")
            self.wrong.append(name)
        self.lines.append(line)

    def fail(self, name, message):
        self.lines.append(f"✗ {name:<8} {message}")
        self.wrong.append(name)

    def __str__(self):
        verdict = "all correct, well done!" if self.ok else "wrong: " + ", ".join(self.wrong)
        return "\n".join([self.title, *self.lines, verdict])

    def _repr_pretty_(self, p, cycle):  # how IPython displays it
        p.text(str(self))


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _compare(report, names, got, expected, threshold=THRESHOLD, scaled=False):
    """Compare each output with the reference; shape and dtype first, then values.

    scaled=True measures max|got - expected| / max|expected| (for comparing two analytic
    results, where an entry that is 0 in exact arithmetic may be 1e-16 in one and 1e-15 in
    the other, a huge error elementwise but no error at all).
    """
    got = _as_tuple(got)
    if len(got) != len(names):
        report.fail("outputs", f"returned {len(got)} value(s); expected {len(names)}: "
                               + ", ".join(names))
        return report
    for name, g, e in zip(names, got, expected, strict=True):
        g = np.asarray(g)
        if g.shape != np.shape(e):
            report.fail(name, f"has shape {g.shape}; expected {np.shape(e)}")
        elif not np.all(np.isfinite(g)):
            report.fail(name, "contains nan or inf")
        elif scaled:
            e = np.asarray(e)
            report.add(name, float(np.max(np.abs(g - e), initial=0.0)
                                   / max(np.max(np.abs(e), initial=0.0), 1e-300)), threshold)
        else:
            report.add(name, rel_error(g, e), threshold)
    return report


def check_backward(title, user_backward, forward, args, wrt, show=True, reference=None):
    """Check a learner's backward pass for `forward` on the arrays in `args`.

    The learner's function is called as user_backward(dout, cache) with the cache made by the
    package's forward, and each returned gradient is compared with finite differences, or,
    when `reference` is given, with the package's own (gradient-checked) backward pass.
    """
    rng = np.random.default_rng(0)
    values = list(args.values())
    out, cache = forward(*values)
    dout = rng.standard_normal(np.shape(out))
    report = Report(title)
    try:
        got = user_backward(dout if np.ndim(out) else float(dout), cache)
    except Exception as e:  # the learner's code failed: say so instead of a traceback wall
        report.fail("call", f"raised {type(e).__name__}: {e}")
        return _show(report, show)
    names = ["d" + n for n in wrt]
    if reference is not None:
        _compare(report, names, got, _as_tuple(reference(dout, cache)), scaled=True)
    else:
        expected = [numerical_gradient(lambda: forward(*values)[0], args[n], dout) for n in wrt]
        _compare(report, names, got, expected)
    return _show(report, show)


def _show(report, show):
    if show:
        print(report)
    return report


def _r(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# --- layer backward passes ---------------------------------------------------------------


def check_embedding_backward(fn, show=True):
    """fn(dout, cache) -> dwte, with cache = (idx, wte_shape, dtype, padding_idx) and repeated
    token ids (which must accumulate)."""
    rng = np.random.default_rng(1)
    idx = np.array([[1, 2, 2, 5, 1], [6, 1, 0, 2, 2]])
    return check_backward("embedding backward", fn, L.embedding_forward,
                          {"idx": idx, "wte": _r(rng, 7, 4)}, ["wte"], show)


def check_linear_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w) and x of shape (B, T, Din)."""
    rng = np.random.default_rng(2)
    return check_backward("linear backward", fn, L.linear_forward,
                          {"x": _r(rng, 2, 3, 4), "w": _r(rng, 4, 5), "b": _r(rng, 5)},
                          ["x", "w", "b"], show)


def check_gelu_backward(fn, show=True):
    """fn(dout, cache) -> dx, with cache = (x, s), s = sigmoid(2u) as in layers/gelu.py."""
    # a grid over the interesting range; it steers clear of x = -0.75, where gelu'(x) = 0 and
    # a relative error would only measure rounding noise
    x = np.linspace(-3.0, 3.0, 21).reshape(3, 7)
    return check_backward("GELU backward", fn, L.gelu_forward, {"x": x}, ["x"], show)


def check_layernorm_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w, mean, rstd)."""
    rng = np.random.default_rng(4)
    return check_backward("layer norm backward", fn, L.layernorm_forward,
                          {"x": _r(rng, 2, 3, 6, scale=3.0) + 1.5, "w": _r(rng, 6),
                           "b": _r(rng, 6)}, ["x", "w", "b"], show)


def check_softmax_backward(fn, show=True):
    """fn(p, dp) -> ds: the gradient through p = softmax(s) along the last axis."""
    rng = np.random.default_rng(5)
    s = _r(rng, 2, 3, 5)

    def forward(s):
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        return p, p

    return check_backward("softmax backward", lambda dp, p: fn(p, dp), forward, {"s": s}, ["s"],
                          show)


def check_attention_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw_attn, db_attn, dw_proj, db_proj) for causal multi-head
    attention, with the AttentionCache made by layers.attention_forward."""
    rng = np.random.default_rng(6)
    C = 8
    args = {"x": _r(rng, 2, 4, C), "w_attn": _r(rng, C, 3 * C, scale=0.5),
            "b_attn": _r(rng, 3 * C, scale=0.5), "w_proj": _r(rng, C, C, scale=0.5),
            "b_proj": _r(rng, C)}

    def forward(*a):
        return L.attention_forward(*a, n_head=2)

    # Compared with the package's backward rather than finite differences: the key bias has a
    # zero gradient (softmax ignores a shift of all scores) that differences only resolve to
    # ~1e-11, which would look like a large *relative* error.
    return check_backward("attention backward", fn, forward, args, list(args), show,
                          reference=L.attention_backward)


def check_cross_entropy_backward(fn, show=True):
    """fn(dloss, cache) -> dlogits, with cache = (probs, yv, valid, n_valid, shape) and some
    targets ignored (-1)."""
    rng = np.random.default_rng(7)
    targets = np.array([[0, -1, 2], [-1, 3, 4]])
    return check_backward("softmax cross-entropy backward", fn,
                          lambda z, y: L.softmax_cross_entropy_forward(z, y),
                          {"logits": _r(rng, 2, 3, 6, scale=2.0), "targets": targets},
                          ["logits"], show)


def check_residual_block_backward(fn, show=True):
    """fn(dout, df_dx) -> dx for y = x + f(x): the gradient of a residual connection, given
    the upstream gradient dout and the gradient df_dx that flowed back through f."""
    rng = np.random.default_rng(8)
    dout, df = _r(rng, 2, 3, 4), _r(rng, 2, 3, 4)
    report = Report("residual connection backward")
    _compare(report, ["dx"], fn(dout, df), [dout + df])
    return _show(report, show)


# --- values that are not gradients ---------------------------------------------------------


def check_sequence_nll(fn, show=True):
    """fn(probs, tokens) -> the mean negative log-likelihood -(1/T) sum_t log P(x_t | x_<t),
    with probs (T, V) the model's next-token distributions and tokens (T,) the actual tokens."""
    rng = np.random.default_rng(9)
    e = np.exp(_r(rng, 6, 5))
    probs = e / e.sum(-1, keepdims=True)
    tokens = rng.integers(0, 5, 6)
    expected = -np.mean(np.log(probs[np.arange(6), tokens]))
    report = Report("sequence negative log-likelihood")
    _compare(report, ["nll"], float(fn(probs, tokens)), [expected], 1e-10)
    return _show(report, show)


def check_sinusoidal_table(fn, show=True):
    """fn(T, C) -> the (T, C) table PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(...)."""
    report = Report("sinusoidal position table")
    _compare(report, ["table"], np.asarray(fn(16, 8), dtype=np.float64),
             [L.sinusoidal_table(16, 8, np.float64)], 1e-6)
    return _show(report, show)


def check_adamw_step(fn, show=True):
    """fn(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v) after one AdamW update of a
    2-D weight, where t is the step number (1 for the first update)."""
    rng = np.random.default_rng(10)
    p, g = _r(rng, 3, 4), _r(rng, 3, 4)
    m, v = _r(rng, 3, 4) * 0.1, np.abs(_r(rng, 3, 4)) * 0.1
    lr, (b1, b2), eps, wd, t = 0.01, (0.9, 0.99), 1e-8, 0.1, 3
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    p2 = p * (1 - lr * wd) - lr * (m2 / (1 - b1**t)) / (np.sqrt(v2 / (1 - b2**t)) + eps)
    report = Report("AdamW step")
    got = fn(p.copy(), g.copy(), m.copy(), v.copy(), t, lr, (b1, b2), eps, wd)
    _compare(report, ["p", "m", "v"], got, [p2, m2, v2], 1e-10)
    return _show(report, show)


def check_cosine_lr(fn, show=True):
    """fn(it, lr, min_lr, warmup_iters, lr_decay_iters) -> the learning rate (nanoGPT's)."""
    from .optim import cosine_lr

    its = [0, 5, 9, 10, 30, 55, 99, 100, 150]
    got = np.array([fn(i, 1e-3, 1e-4, 10, 100) for i in its], dtype=np.float64)
    expected = np.array([cosine_lr(i, 1e-3, 1e-4, 10, 100) for i in its])
    report = Report("warmup + cosine learning rate")
    _compare(report, ["lr"], got, [expected], 1e-9)
    return _show(report, show)


def check_top_p_filter(fn, show=True):
    """fn(probs, top_p) -> probs with everything outside the nucleus set to 0 and the rest
    renormalised; probs is (B, V), the nucleus is the smallest set of most likely tokens whose
    probability sums to >= top_p."""
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    expected = np.array([[0.5 / 0.8, 0.3 / 0.8, 0, 0], [0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]])
    report = Report("top-p (nucleus) filter")
    _compare(report, ["probs"], np.asarray(fn(probs.copy(), 0.75)), [expected], 1e-10)
    return _show(report, show)


def check_cosine_similarity(fn, show=True):
    """fn(E) -> the (N, N) matrix of cosine similarities between the rows of E (N, C)."""
    E = _r(np.random.default_rng(11), 5, 3)
    n = E / np.linalg.norm(E, axis=1, keepdims=True)
    report = Report("cosine similarity matrix")
    _compare(report, ["sim"], np.asarray(fn(E)), [n @ n.T], 1e-10)
    return _show(report, show)


def check_prompt_targets(fn, show=True):
    """fn(ids, prompt_len) -> (x, y) for training on 'prompt -> answer' examples: x = ids[:-1],
    y = ids[1:] with every target that lies inside the prompt set to -1 (ignored), so the
    loss only counts the answer. ids is (B, T+1), prompt_len the number of prompt tokens."""
    ids = np.array([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]])
    y = ids[:, 1:].copy()
    y[:, : 3 - 1] = -1  # targets at positions < prompt_len - 1 are prompt tokens
    report = Report("prompt masking for continuation tasks")
    _compare(report, ["x", "y"], fn(ids, 3), [ids[:, :-1], y], 0.0)
    return _show(report, show)


def param_count(cfg):
    """Number of parameters of a GPT with config cfg, by formula (for checking exercises)."""
    C, V, Lr = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    per_block = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) \
        + (4 * C * C + C)
    wpe = cfg.block_size * C if cfg.pos_encoding == "learned" else 0
    return V * C + wpe + Lr * per_block + 2 * C


def check_param_count(fn, show=True):
    """fn(cfg) -> the number of parameters of a GPT with that GPTConfig."""
    from .model import GPT, GPTConfig

    report = Report("parameter count")
    for cfg in (GPTConfig(), GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12,
                                       n_embd=768)):
        expected = GPT(cfg).num_params() if cfg.n_embd < 512 else param_count(cfg)
        got = fn(cfg)
        name = f"n_embd={cfg.n_embd}"
        if got == expected:
            report.lines.append(f"✓ {name}: {got:,}")
        else:
            report.fail(name, f"got {got:,}, expected {expected:,}")
    return _show(report, show)


def fast_mode():
    """True in CI (CI=true) or with NUMPYGPT_FAST=1: notebooks shrink their training runs."""
    return os.environ.get("NUMPYGPT_FAST", "") not in ("", "0") or \
        os.environ.get("CI", "").lower() in ("1", "true", "yes")


__all__ = [name for name in dir() if name.startswith("check_")] + ["Report", "fast_mode",
                                                                    "param_count"]
