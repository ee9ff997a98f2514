"""Notebook 18 (LoRA): the backward pass of a linear layer with a LoRA adapter."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run, show_report, variant
from .report import fn_name


def _lora(dout, cache, scale=True, adapter=True, dA_t=False, dB_t=False):
    x, w, A, B, u, s = cache
    s = s if scale else 1.0
    Din, Dout = w.shape
    dy = dout.reshape(-1, Dout)
    x2 = x.reshape(-1, Din)
    du = s * dy @ B.T  # (N, r)
    dB = s * u.T @ dy  # (r, Dout)
    dA = x2.T @ du  # (Din, r)
    dx = dy @ w.T + (du @ A.T if adapter else 0.0)
    return dx.reshape(x.shape), (dA.T if dA_t else dA), (dB.T if dB_t else dB)


LORA_MISTAKES = [
    ("forgot the scale s = alpha / r: the adapter's output is s (x A) B, so s multiplies "
     "dA, dB and the adapter's share of dx", variant(_lora, scale=False)),
    ("dx without the adapter's term: x also flows through A, so dx = dy w^T + s (dy B^T) A^T",
     variant(_lora, adapter=False)),
    ("dA transposed (r, Din): dA = x^T (s dy B^T) has A's shape (Din, r)",
     variant(_lora, dA_t=True)),
    ("dB transposed (Dout, r): dB = s (x A)^T dy has B's shape (r, Dout)",
     variant(_lora, dB_t=True)),
]


def check_lora_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dA, dB), with cache = (x, w, A, B, u, scale) as made by
    layers.lora_forward(x, w, b, A, B, scale): x (B, T, Din), w (Din, Dout) frozen, A
    (Din, r), B (r, Dout), u = x @ A flattened to (N, r). w and b are frozen: no dw, no db.
    Tried with B != 0 (after some training: at B = 0, dA would be 0), with rank 1, then in
    float32."""
    rng = np.random.default_rng(18)

    def case(r, alpha, seed, label, dtype=np.float64):
        w, b = randn(rng, 5, 4).astype(dtype), randn(rng, 4).astype(dtype)  # frozen
        scale = alpha / r
        return grad_case(lambda x, A, B: L.lora_forward(x, w, b, A, B, scale),
                         {"x": randn(rng, 2, 3, 5), "A": randn(rng, 5, r), "B": randn(rng, r, 4)},
                         ["x", "A", "B"], seed=seed, label=label, dtype=dtype)

    cases = [case(2, 3.0, 18, "r=2, alpha=3"), case(1, 4.0, 19, "r=1, alpha=4"),
             case(2, 3.0, 20, "r=2, alpha=3, float32", np.float32)]
    returned = []

    def counted(dout, cache):
        out = fn(dout, cache)
        returned.append(len(out) if isinstance(out, (tuple, list)) else 1)
        return out

    counted.__name__ = fn_name(fn)
    report = run("LoRA backward", counted if callable(fn) else fn, cases, LORA_MISTAKES, {
        "call": "shapes: dout (B, T, Dout); cache = (x, w, A, B, u, scale) with u = x @ A of "
                "shape (N, r), N = B T; flatten x and dout to (N, Din) and (N, Dout)",
        "dx": "x reaches the output along two paths: through w, and through A then B",
        "dA": "with u = x @ A, find du first: the adapter's output is scale * u @ B",
        "dB": "the adapter's output is scale * u @ B: a linear layer on u"}, show=False)
    if 4 in returned:
        at = next(i for i, ln in enumerate(report.lines) if ln.startswith("✗ outputs"))
        report.lines.insert(at + 1, "    this looks like: 4 values, a dw too? w is frozen: the "
                                    "layer returns no dw (not computing it is what LoRA saves)")
    return show_report(report, show)
