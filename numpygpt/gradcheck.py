"""Gradient checks: compare a hand-written backward pass with central finite differences.

For a layer out = f(x) and a random upstream gradient dout, the backward pass claims
dx = d(sum(out * dout))/dx. Nudging one element of x by +-h gives the same number numerically:
    dx[i] ~ sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2h)                   (error O(h^2))
The suite below (and the whole-model check) uses the five-point version of the same idea,
with h = 1e-3:
    dx[i] ~ sum((8 (f(x + h e_i) - f(x - h e_i)) - (f(x + 2h e_i) - f(x - 2h e_i))) * dout) / (12h)
                                                                               (error O(h^4))
Always check in float64: float32's rounding alone gives relative errors around 1e-3.

Used by the tests, the notebooks and `python -m numpygpt gradcheck`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import layers as L
from .finetune.model import FinetuneGPT
from .kernels import fast, flash, norms
from .models.gpt import GPTConfig
from .models.llama import Llama, LlamaConfig

THRESHOLD = 1e-7  # max relative error a correct layer stays under in float64
MODEL_THRESHOLD = 1e-6  # whole model: more layers in the chain, a little more rounding


def rel_error(a, b):
    """Max over elements of |a - b| / max(1e-8, |a| + |b|): ~1e-8 or smaller means agreement."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def masked_error(analytic, numeric, zero):
    """rel_error where finite differences can judge, and where they cannot (the boolean mask
    `zero`: gradients that must be exactly 0) the largest |analytic| value, an absolute error."""
    leak = float(np.max(np.abs(analytic[zero]), initial=0.0))
    return max(rel_error(analytic[~zero], numeric[~zero]), leak)


def numerical_gradient(f, x, dout, h=1e-5, order=2):
    """Central-difference gradient of sum(f() * dout) with respect to the array x.

    f takes no arguments and reads x (which we nudge in place, then restore exactly).
    order=2 is the textbook (f(x+h) - f(x-h)) / 2h, error O(h^2). order=4 is the five-point
    stencil (8(f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h, error O(h^4): it allows a
    larger h, so float64 rounding in f (about 1e-16 |f| / h) hurts less. The whole-model
    check needs that: its f is one scalar loss, so no untouched entries cancel, and its
    smallest gradient entries would drown in that rounding with order=2.
    Returns an array shaped like x.
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4, got {order}")

    def f_at(step):  # f() with x[i] nudged by step, then x[i] restored exactly
        old = x[i]
        x[i] = old + step
        value = np.array(f(), dtype=np.float64)  # a copy: f may reuse its output buffer
        x[i] = old
        return value

    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        # subtract the outputs *before* summing: entries that x[i] does not touch cancel
        # exactly, instead of adding the rounding noise of the whole sum
        if order == 2:
            diff = (f_at(h) - f_at(-h)) / (2 * h)
        else:
            diff = (8 * (f_at(h) - f_at(-h)) - (f_at(2 * h) - f_at(-2 * h))) / (12 * h)
        grad[i] = np.sum(diff * dout)
    return grad


def check_layer(forward, backward, args, wrt, rng=None, h=1e-5, zero_grad=None, order=2):
    """Check every gradient of a forward/backward pair.

    Inputs:
    - forward: called as forward(*args.values()), returns (out, cache)
    - backward: called as backward(dout, cache), returns the gradients of the arrays named
      in `wrt`, in that order (a single array when there is one)
    - args: dict name -> argument, in the forward's order (arrays are float64 for a check)
    - wrt: names of the arguments that get gradients
    - rng: Generator for the random upstream gradient dout
    - h, order: step and stencil of the finite differences (see numerical_gradient)
    - zero_grad: optional dict name -> boolean mask of elements whose gradient the layer must
      report as zero, where finite differences cannot tell: the padding row of an embedding
      (zero by convention), or the key bias of attention (zero in exact arithmetic, since
      softmax ignores a shift shared by all scores, but ~1e-11 of rounding noise numerically).
      There the error reported is the largest |analytic| value (absolute), elsewhere relative.

    Returns a dict name -> max relative error between analytic and numerical gradients.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    values = list(args.values())
    out, cache = forward(*values)
    dout = rng.standard_normal(np.shape(out))  # random, so no error can hide behind a symmetry
    grads = backward(dout if np.ndim(out) else float(dout), cache)
    if len(wrt) == 1:
        grads = (grads,)
    if len(grads) != len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(wrt)} inputs")
    errors = {}
    for name, analytic in zip(wrt, grads, strict=True):
        x = args[name]
        if np.shape(analytic) != x.shape:
            raise ValueError(f"gradient of {name} has shape {np.shape(analytic)}, not {x.shape}")
        numeric = numerical_gradient(lambda: forward(*values)[0], x, dout, h, order)
        if zero_grad and name in zero_grad:
            errors[name] = masked_error(analytic, numeric, zero_grad[name])
        else:
            errors[name] = rel_error(analytic, numeric)
    return errors


# --- the suite of layer checks used by the tests and the CLI ------------------------------


@dataclass
class GradCase:
    """One gradient check: a layer on one set of shapes."""

    layer: str
    label: str  # what is special about these inputs
    forward: Callable
    backward: Callable
    args: dict
    wrt: list
    zero_grad: dict = field(default_factory=dict)  # see check_layer
    threshold: float = THRESHOLD

    def run(self, seed=0):
        """Returns {tensor name: max relative error}. Uses the five-point stencil with
        h = 1e-3 (worst error over the suite ~2e-9, against ~5e-8 for the two-point one with
        h = 1e-5), so a correct layer passes with a wide margin."""
        return check_layer(self.forward, self.backward, self.args, self.wrt,
                           rng=np.random.default_rng(seed), zero_grad=self.zero_grad,
                           h=1e-3, order=4)


def _fixed_rng(seed):
    """A fresh Generator per call: every forward call draws the same dropout mask."""
    return lambda: np.random.default_rng(seed)


def key_bias_mask(C):
    """Marks the key part of c_attn's bias (3C,): q.(k + b_k) = q.k + q.b_k shifts every score
    of a query row by the same amount, which softmax ignores, so its true gradient is 0."""
    mask = np.zeros(3 * C, dtype=bool)
    mask[C:2 * C] = True
    return mask


def layer_cases(seed=0):
    """Gradient checks for every layer, on shapes that catch the usual bugs: B=1 and B>1,
    T=1 and T>1, one head and several, duplicate token ids, ignored targets, random
    layer-norm gains and biases (ones and zeros would hide mistakes). All float64.
    """
    rng = np.random.default_rng(seed)

    def r(*shape, scale=1.0):
        return rng.standard_normal(shape) * scale

    # the kernels added later (flash, layer norm, cross-entropy, embedding) draw from a
    # generator of their own, so the other cases keep the inputs they were checked on
    kernel_rng = np.random.default_rng(seed + 23)

    def rk(*shape, scale=1.0):
        return kernel_rng.standard_normal(shape) * scale

    cases = []

    # token embedding: repeated ids must accumulate; the padding row gets nothing
    V, C = 7, 4
    for label, idx, pad in [
        ("B=1 T=1", np.array([[3]]), None),
        ("B=2 T=5 duplicate ids", np.array([[1, 2, 2, 5, 1], [6, 1, 0, 2, 2]]), None),
        ("padding_idx=0", np.array([[0, 2, 0], [2, 0, 4]]), 0),
    ]:
        cases.append(GradCase(
            "embedding", label,
            lambda idx, wte, pad=pad: L.embedding_forward(idx, wte, padding_idx=pad),
            L.embedding_backward, {"idx": idx, "wte": r(V, C)}, ["wte"],
            zero_grad={} if pad is None else {"wte": np.arange(V) == pad}))

    # positional encodings
    for label, (B, T) in [("B=1 T=1", (1, 1)), ("B=2 T=3", (2, 3))]:
        cases.append(GradCase(
            "learned_positional", label, L.learned_positional_forward,
            L.learned_positional_backward, {"x": r(B, T, C), "wpe": r(5, C)}, ["x", "wpe"]))
    cases.append(GradCase(
        "sinusoidal_positional", "B=2 T=3 C=5 (odd)", L.sinusoidal_positional_forward,
        L.sinusoidal_positional_backward, {"x": r(2, 3, 5)}, ["x"]))

    # linear, any number of leading dims
    for label, xshape in [("x (1, 1, 4)", (1, 1, 4)), ("x (2, 3, 4)", (2, 3, 4)),
                          ("x (4,)", (4,))]:
        cases.append(GradCase(
            "linear", label, L.linear_forward, L.linear_backward,
            {"x": r(*xshape), "w": r(4, 5), "b": r(5)}, ["x", "w", "b"]))

    # LoRA: x, A and B get gradients (w, b and the scale are held fixed: frozen); B is
    # random, not the zero it starts as, or dA = x^T (dy B^T) s would be 0 and prove nothing
    for label, xshape, rank in [("x (2, 3, 5) r=2", (2, 3, 5), 2),
                                ("x (1, 1, 5) r=1", (1, 1, 5), 1)]:
        w, b = r(5, 6), r(6)
        cases.append(GradCase(
            "lora", label,
            lambda x, A, B, w=w, b=b: L.lora_forward(x, w, b, A, B, 1.5),
            L.lora_backward, {"x": r(*xshape), "A": r(5, rank), "B": r(rank, 6)},
            ["x", "A", "B"]))

    # layer norm with random gains and biases, inputs off-centre and scaled
    for label, xshape in [("B=1 T=1", (1, 1, 6)), ("B=2 T=3", (2, 3, 6))]:
        cases.append(GradCase(
            "layernorm", label, L.layernorm_forward, L.layernorm_backward,
            {"x": r(*xshape, scale=3.0) + 1.5, "w": r(6), "b": r(6)}, ["x", "w", "b"]))

    # GELU over its interesting range (both tails and the bend near 0): fast and reference
    x = r(2, 3, 8, scale=2.5)
    cases.append(GradCase("gelu", "x in [-5, 5]", L.gelu_forward, L.gelu_backward,
                          {"x": x}, ["x"]))
    cases.append(GradCase("gelu_reference", "x in [-5, 5]", L.gelu_reference_forward,
                          L.gelu_reference_backward, {"x": x.copy()}, ["x"]))

    # MLP
    for label, (B, T) in [("B=1 T=1", (1, 1)), ("B=2 T=3", (2, 3))]:
        cases.append(GradCase(
            "mlp", label, L.mlp_forward, L.mlp_backward,
            {"x": r(B, T, 4), "w_fc": r(4, 16, scale=0.5), "b_fc": r(16, scale=0.5),
             "w_proj": r(16, 4, scale=0.5), "b_proj": r(4)},
            ["x", "w_fc", "b_fc", "w_proj", "b_proj"]))

    # attention: vectorised and loop reference, with and without attention dropout
    att_wrt = ["x", "w_attn", "b_attn", "w_proj", "b_proj"]
    for (fwd, bwd, name) in [(L.attention_forward, L.attention_backward, "attention"),
                             (L.attention_reference_forward, L.attention_reference_backward,
                              "attention_reference")]:
        for label, (B, T, C, nh, p) in [
            ("B=1 T=1 nh=1", (1, 1, 4, 1, 0.0)),
            ("B=2 T=4 nh=1", (2, 4, 4, 1, 0.0)),
            ("B=2 T=4 nh=2", (2, 4, 6, 2, 0.0)),
            ("B=1 T=5 nh=4 dropout 0.3", (1, 5, 8, 4, 0.3)),
        ]:
            new_rng = _fixed_rng(seed + 1)
            cases.append(GradCase(
                name, label,
                lambda *a, fwd=fwd, nh=nh, p=p, new_rng=new_rng: fwd(
                    *a, n_head=nh, attn_pdrop=p, rng=new_rng()),
                bwd,
                {"x": r(B, T, C), "w_attn": r(C, 3 * C, scale=0.5), "b_attn": r(3 * C, scale=0.5),
                 "w_proj": r(C, C, scale=0.5), "b_proj": r(C)},
                att_wrt,
                zero_grad={"b_attn": key_bias_mask(C)}))

    # the heads alone (what the model calls between c_attn and c_proj), plain and as the fast
    # kernel (numpygpt/kernels/fast.py; T > 64 puts the queries in more than one block): the
    # key part of qkv gets real gradients here, only a bias shared by every position gets 0
    for name, core, shapes in [
        ("attention_core", L, [("B=2 T=4 nh=2", (2, 4, 6, 2, 0.0)),
                               ("B=1 T=5 nh=4 dropout 0.3", (1, 5, 8, 4, 0.3))]),
        ("attention_core (fast kernel)", fast, [("B=2 T=4 nh=2", (2, 4, 6, 2, 0.0)),
                                                ("B=1 T=70 nh=2 dropout 0.3", (1, 70, 4, 2, 0.3))]),
        # flash attention (numpygpt/kernels/flash.py): T = 70 puts the queries in two blocks,
        # each with its dropout mask drawn by rows; many key blocks: tests/test_kernels.py
        ("attention_core (flash kernel)", flash, [("B=2 T=4 nh=2", (2, 4, 6, 2, 0.0)),
                                                  ("B=1 T=70 nh=2 dropout 0.3",
                                                   (1, 70, 4, 2, 0.3))]),
    ]:
        for label, (B, T, C, nh, p) in shapes:
            new_rng = _fixed_rng(seed + 1)
            cases.append(GradCase(
                name, label,
                lambda qkv, core=core, nh=nh, p=p, new_rng=new_rng: core.attention_core_forward(
                    qkv, nh, attn_pdrop=p, rng=new_rng()),
                core.attention_core_backward,
                {"qkv": (rk if core is flash else r)(B, T, 3 * C)}, ["qkv"]))
    cases.append(GradCase("gelu (fast kernel)", "x in [-5, 5]", fast.gelu_forward,
                          fast.gelu_backward, {"x": x.copy()}, ["x"]))
    cases.append(GradCase(  # layer norm by blocks of rows (numpygpt/kernels/norms.py)
        "layernorm (fast kernel)", "B=2 T=3", norms.layernorm_forward, norms.layernorm_backward,
        {"x": rk(2, 3, 6, scale=3.0) + 1.5, "w": rk(6), "b": rk(6)}, ["x", "w", "b"]))
    cases.append(GradCase(  # fewer passes, same numbers (numpygpt/kernels/fast.py)
        "softmax_cross_entropy (fast kernel)", "ignored targets (-1)",
        fast.softmax_cross_entropy_forward, fast.softmax_cross_entropy_backward,
        {"logits": rk(2, 3, 6, scale=2.0), "targets": np.array([[0, -1, 2], [-1, 5, 5]])},
        ["logits"]))
    cases.append(GradCase(  # sums per id: repeated ids, a padding row
        "embedding (fast kernel)", "repeats, padding_idx=0",
        lambda idx, wte: fast.embedding_forward(idx, wte, padding_idx=0), fast.embedding_backward,
        {"idx": np.array([[1, 2, 2, 0, 1], [6, 1, 0, 2, 2]]), "wte": rk(7, 4)}, ["wte"],
        zero_grad={"wte": np.arange(7) == 0}))

    # classification head on the last real token of right-padded sequences (lengths < T)
    for label, lengths in [("B=3 T=4 padded", np.array([4, 1, 2])),
                           ("B=1 T=1", np.array([1]))]:
        B, T = len(lengths), int(lengths.max())
        cases.append(GradCase(
            "classifier", label,
            lambda h, w, b, lengths=lengths: L.classifier_forward(h, lengths, w, b),
            L.classifier_backward, {"h": r(B, T, 5), "w": r(5, 3), "b": r(3)}, ["h", "w", "b"]))

    # dropout with a fixed mask, and p = 0 (the identity)
    for label, p in [("p=0.5", 0.5), ("p=0", 0.0)]:
        new_rng = _fixed_rng(seed + 2)
        cases.append(GradCase(
            "dropout", label,
            lambda x, p=p, new_rng=new_rng: L.dropout_forward(x, p, new_rng()),
            L.dropout_backward, {"x": r(2, 3, 4)}, ["x"]))

    # softmax cross-entropy: plain, with ignored targets, one row
    V = 6
    for label, targets in [
        ("B=1 T=1", np.array([[2]])),
        ("B=2 T=3", np.array([[0, 5, 2], [3, 3, 1]])),
        ("ignored targets (-1)", np.array([[0, -1, 2], [-1, 3, -1]])),
    ]:
        cases.append(GradCase(
            "softmax_cross_entropy", label,
            lambda logits, targets: L.softmax_cross_entropy_forward(logits, targets),
            L.softmax_cross_entropy_backward,
            {"logits": r(*targets.shape, V, scale=2.0), "targets": targets}, ["logits"]))
    # preference tuning: a response's summed log-probability (prompt and padding ignored), and
    # the DPO loss on pairs, with small and large margins (the stable softplus and sigmoid)
    targets = np.array([[-1, 2, 4, -1], [-1, -1, 0, 5], [3, 3, 3, 3]])
    cases.append(GradCase(
        "sequence_logprob", "B=3 T=4, prompt and padding ignored",
        lambda logits, targets: L.sequence_logprob_forward(logits, targets),
        L.sequence_logprob_backward, {"logits": r(3, 4, V, scale=2.0), "targets": targets},
        ["logits"]))
    for label, scale, beta in [("B=4 beta=0.1", 3.0, 0.1), ("B=3 beta=2, |margins| ~ 30", 10.0,
                                                               2.0)]:
        B = 4 if beta < 1 else 3
        cases.append(GradCase(
            "dpo_loss", label, lambda *a, beta=beta: L.dpo_loss_forward(*a, beta),
            L.dpo_loss_backward,
            {"logp_c": r(B, scale=scale), "logp_r": r(B, scale=scale),
             "ref_c": r(B, scale=scale), "ref_r": r(B, scale=scale)},
            ["logp_c", "logp_r", "ref_c", "ref_r"]))
    cases += _llama_layer_cases(r)
    return cases


def _llama_layer_cases(r):
    """Llama's layers (see numpygpt/llama.py): RoPE, RMSNorm, SiLU, SwiGLU and grouped-query
    attention with one key/value head, fewer than the query heads, and as many; T = 1."""
    cases = []
    # RoPE at positions 2.. (offset: not only the angle-0 first row), T = 1 and T > 1
    for label, (B, nh, T, hs) in [("B=1 nh=1 T=1", (1, 1, 1, 4)),
                                  ("B=2 nh=2 T=3 hs=6", (2, 2, 3, 6))]:
        cos, sin = L.rope_table(T, hs, theta=100.0, dtype=np.float64, offset=2)
        cases.append(GradCase(
            "rope", label, lambda x, cos=cos, sin=sin: L.rope_forward(x, cos, sin),
            L.rope_backward, {"x": r(B, nh, T, hs)}, ["x"]))
    for label, xshape in [("B=1 T=1", (1, 1, 6)), ("B=2 T=3", (2, 3, 6))]:
        cases.append(GradCase(
            "rmsnorm", label, L.rmsnorm_forward, L.rmsnorm_backward,
            {"x": r(*xshape, scale=3.0) + 1.5, "w": r(6)}, ["x", "w"]))
    cases.append(GradCase("silu", "x in [-5, 5]", L.silu_forward, L.silu_backward,
                          {"x": r(2, 3, 8, scale=2.5)}, ["x"]))
    for label, (B, T) in [("B=1 T=1", (1, 1)), ("B=2 T=3", (2, 3))]:
        cases.append(GradCase(
            "swiglu_mlp", label, L.swiglu_mlp_forward, L.swiglu_mlp_backward,
            {"x": r(B, T, 4), "w_gate": r(4, 6, scale=0.7), "w_up": r(4, 6, scale=0.7),
             "w_down": r(6, 4, scale=0.7)}, ["x", "w_gate", "w_up", "w_down"]))
    # the heads alone: k and v have nkv heads, shared by nh / nkv query heads each
    shapes = [("B=1 T=1 nh=2 nkv=1", (1, 1, 2, 1, 2)),
              ("B=2 T=4 nh=4 nkv=2", (2, 4, 4, 2, 3)),
              ("B=1 T=5 nh=3 nkv=1", (1, 5, 3, 1, 2)),
              ("B=2 T=3 nh=2 nkv=2", (2, 3, 2, 2, 3))]
    for fwd, bwd, name in [(L.gqa_core_forward, L.gqa_core_backward, "gqa_core"),
                           (L.gqa_reference_forward, L.gqa_reference_backward,
                            "gqa_reference")]:
        for label, (B, T, nh, nkv, hs) in shapes:
            cases.append(GradCase(
                name, label, fwd, bwd,
                {"q": r(B, nh, T, hs), "k": r(B, nkv, T, hs), "v": r(B, nkv, T, hs)},
                ["q", "k", "v"]))
    # the whole layer: projections, RoPE, heads, output projection; then the fast kernel's
    # (numpygpt/kernels/fast.py: its heads in blocks of queries; T = 70 makes two blocks)
    for name, layer, shapes in [
        ("gqa_attention", L, [("B=1 T=1 nh=2 nkv=1", (1, 1, 2, 1, 2)),
                              ("B=2 T=4 nh=4 nkv=2", (2, 4, 4, 2, 2)),
                              ("B=2 T=3 nh=2 nkv=2", (2, 3, 2, 2, 2))]),
        ("gqa_attention (fast kernel)", fast, [("B=2 T=4 nh=4 nkv=2", (2, 4, 4, 2, 2)),
                                               ("B=1 T=70 nh=4 nkv=2", (1, 70, 4, 2, 2))]),
    ]:
        for label, (B, T, nh, nkv, hs) in shapes:
            C = nh * hs
            cos, sin = L.rope_table(T, hs, theta=100.0, dtype=np.float64)
            cases.append(GradCase(
                name, label,
                lambda *a, nh=nh, nkv=nkv, cos=cos, sin=sin, layer=layer:
                    layer.gqa_attention_forward(*a, nh, nkv, cos, sin),
                layer.gqa_attention_backward,
                {"x": r(B, T, C), "w_q": r(C, C, scale=0.5), "w_k": r(C, nkv * hs, scale=0.5),
                 "w_v": r(C, nkv * hs, scale=0.5), "w_o": r(C, C, scale=0.5)},
                ["x", "w_q", "w_k", "w_v", "w_o"]))
    return cases


def run_layer_checks(seed=0):
    """Run every layer check. Returns rows (layer, label, tensor, max rel error, threshold)."""
    rows = []
    for case in layer_cases(seed):
        for name, err in case.run(seed).items():
            rows.append((case.layer, case.label, name, err, case.threshold))
    return rows


def format_table(rows):
    """A plain-text table of gradient-check rows; marks the ones above their threshold."""
    lw = max(20, *(len(r[0]) for r in rows))  # layer names: "gelu" ... "softmax_cross_entropy"
    w = max(6, *(len(r[2]) for r in rows))  # tensor names: "x" ... "h.0.attn.c_attn.weight"
    lines = [f"{'layer':<{lw}} {'case':<26} {'tensor':<{w}} {'max rel err':>11} {'threshold':>9}",
             "-" * (50 + lw + w)]
    for layer, label, name, err, thr in rows:
        flag = "" if err <= thr else "  FAIL"
        lines.append(f"{layer:<{lw}} {label:<26} {name:<{w}} {err:11.2e} {thr:9.0e}{flag}")
    return "\n".join(lines)


# --- the whole model ----------------------------------------------------------------------


def check_model(model, idx, targets, dropout_seed=0, h=1e-3, order=4, lengths=None):
    """Gradient check of every parameter that trains, of a GPT, a Llama or a FinetuneGPT (use
    a float64 model with tiny sizes); backward must return exactly those (a FinetuneGPT's
    model.trainable, every parameter of the others).

    Each forward draws its dropout masks from a fresh Generator with the same seed, so every
    finite-difference evaluation sees the same masks as the analytic backward. With
    `lengths`, the loss is the classification head's: model.classify(idx, lengths, targets),
    targets being (B,) class ids.

    Returns a dict parameter name -> max relative error.
    """
    def loss():
        rng = np.random.default_rng(dropout_seed)
        if lengths is not None:
            return model.classify(idx, lengths, targets, rng=rng)[1]
        return model.forward(idx, targets, rng=rng)[1]

    loss()
    grads = model.backward()
    trainable = set(getattr(model, "trainable", model.params))  # a FinetuneGPT's, or all
    if set(grads) != trainable:
        raise ValueError(f"backward returned {sorted(set(grads) ^ trainable)[:3]} against "
                         "the parameters that train")
    C = model.config.n_embd
    errors = {}
    for name in grads:
        param = model.params[name]
        numeric = numerical_gradient(loss, param, 1.0, h, order)
        if name.endswith("attn.c_attn.bias"):  # key bias: see key_bias_mask
            errors[name] = masked_error(grads[name], numeric, key_bias_mask(C))
        else:
            errors[name] = rel_error(grads[name], numeric)
    return errors


def model_cases():
    """Whole-model checks: (label, config kwargs, batch shape, ignored targets?, LoRA
    kwargs or None, head: "lm" or "classifier" (padded sequences, 3 classes))."""
    base = dict(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8)
    return [
        ("learned positions", {**base}, (2, 4), False, None, "lm"),
        ("sinusoidal positions", {**base, "pos_encoding": "sinusoidal"}, (2, 4), False, None,
         "lm"),
        ("dropout 0.2 (fixed mask)", {**base, "dropout": 0.2}, (2, 4), False, None, "lm"),
        ("ignored targets", {**base}, (2, 4), True, None, "lm"),
        ("B=1 T=1 n_head=1", {**base, "n_head": 1, "n_layer": 1}, (1, 1), False, None, "lm"),
        ("LoRA r=2, padded (targets -1)", {**base, "dropout": 0.2}, (2, 4), True,
         {"rank": 2, "alpha": 3}, "lm"),
        ("classifier, padded", {**base}, (3, 4), False, None, "classifier"),
        ("classifier + LoRA r=2, padded", {**base, "dropout": 0.2}, (3, 4), False,
         {"rank": 2, "alpha": 3}, "classifier"),
    ]


def run_model_checks(seed=0):
    """Run every whole-model check. Returns rows (label, param, max rel error, threshold)."""
    rows = []
    for label, kwargs, (B, T), ignore, lora, head in model_cases():
        # the GPT of fine-tuning (models/gpt.py's, with what trains, LoRA and the head)
        model = FinetuneGPT(GPTConfig(**kwargs), seed=seed, dtype=np.float64)
        if head == "classifier":
            model.add_classifier(3, seed=seed)
        rng = np.random.default_rng(seed)
        # random gains and biases: ones and zeros would hide mistakes
        for name, p in model.params.items():
            if p.ndim == 1:
                p[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if "ln" in name and
                                                               name.endswith("weight") else 0)
            else:
                p *= 10  # larger weights than the 0.02 init, so every path matters
        if lora:
            model.add_lora(**lora, seed=seed)
            # B = 0 (its start) would hide a wrong dA; 0.3: the update s A @ B about as large
            # as the (x10) weights, not larger, or the loss bends too fast for h = 1e-3
            for name in model.lora:
                model.params[name + ".lora_B"][...] = rng.standard_normal(
                    model.params[name + ".lora_B"].shape) * 0.3
        idx = rng.integers(0, model.config.vocab_size, (B, T))
        idx[0, 0] = idx[-1, -1]  # a duplicate id, so the lookup must accumulate
        targets = rng.integers(0, model.config.vocab_size, (B, T))
        if ignore:
            targets[0, 1] = targets[-1, 0] = -1
        lengths = None
        if head == "classifier":  # one full sequence, two padded ones; labels per sequence
            lengths = np.array([T, 1, T - 1])[:B]
            targets = rng.integers(0, 3, B)
        for name, err in check_model(model, idx, targets, dropout_seed=seed + 1,
                                     lengths=lengths).items():
            rows.append(("GPT " + label, name, err, MODEL_THRESHOLD))
    return rows



# --- the whole Llama (numpygpt/llama.py) ----------------------------------------------------


def llama_model_cases():
    """Whole-Llama checks: (label, LlamaConfig kwargs, batch shape, ignored targets?)."""
    base = dict(vocab_size=7, block_size=5, n_layer=2, n_head=4, n_kv_head=2, n_embd=8,
                intermediate_size=6, rope_theta=100.0)
    return [
        ("GQA nh=4 nkv=2, untied head", {**base}, (2, 4), False),
        ("GQA, tied head, ignored targets", {**base, "tie_embeddings": True}, (2, 4), True),
        ("multi-query nkv=1, B=1 T=1", {**base, "n_head": 2, "n_kv_head": 1}, (1, 1), False),
        ("nkv=nh=2, tied head", {**base, "n_head": 2, "n_kv_head": 2,
                                 "tie_embeddings": True}, (2, 3), False),
    ]


def run_llama_model_checks(seed=0):
    """Run every whole-Llama check. Returns rows (label, param, max rel error, threshold)."""
    rows = []
    for label, kwargs, (B, T), ignore in llama_model_cases():
        model = Llama(LlamaConfig(**kwargs), seed=seed, dtype=np.float64)
        rng = np.random.default_rng(seed)
        for p in model.params.values():  # random gains (ones hide mistakes), larger weights
            if p.ndim == 1:
                p[...] = 1.0 + 0.5 * rng.standard_normal(p.shape)
            else:
                p *= 10
        idx = rng.integers(0, model.config.vocab_size, (B, T))
        idx[0, 0] = idx[-1, -1]  # a duplicate id, so the lookup must accumulate
        targets = rng.integers(0, model.config.vocab_size, (B, T))
        if ignore:
            targets[0, 1] = targets[-1, 0] = -1
        for name, err in check_model(model, idx, targets).items():
            rows.append(("Llama " + label, name, err, MODEL_THRESHOLD))
    return rows
