"""Notebook 07 (block and GPT): dropout's forward and backward passes, one transformer block's
backward pass, the tied LM head's backward pass, and the parameter count."""

import copy
import functools

import numpy as np

from ... import layers as L
from ...gradcheck import THRESHOLD, numerical_gradient
from ...kernels import kernels
from ...models.gpt import GPT, GPTConfig, param_count
from .checking import (
    Case,
    Opaque,
    as_scalar,
    grad_case,
    learner_cache,
    randn,
    run,
    show_report,
    variant,
)
from .diagnosis import as_array
from .report import Report, fn_name

# LM head ------------------------------------------------------------------------------------


def _lm_head_forward(x, wte):
    return x @ wte.T, (x, wte)


def _lm(dlogits, cache):
    x, wte = cache
    V, C = wte.shape
    return dlogits @ wte, dlogits.reshape(-1, V).T @ x.reshape(-1, C)


def _lm_dwte_t(dlogits, cache):
    dx, dwte = _lm(dlogits, cache)
    return dx, dwte.T


def _lm_dx_wte_t(dlogits, cache):
    x, wte = cache
    return dlogits @ wte.T, _lm(dlogits, cache)[1]


def _lm_dwte_first(dlogits, cache):
    x, wte = cache
    return _lm(dlogits, cache)[0], dlogits[0].T @ x[0]


def _lm_mean(dlogits, cache):
    dx, dwte = _lm(dlogits, cache)
    return dx, dwte / (dlogits.size // dlogits.shape[-1])


LM_HEAD_MISTAKES = [
    ("dwte transposed: dwte must have wte's shape (V, C)", _lm_dwte_t),
    ("dx used wte.T: logits = x @ wte.T, so dx = dlogits @ wte", _lm_dx_wte_t),
    ("dwte from the first sequence only: flatten B and T and sum over all positions",
     _lm_dwte_first),
    ("dwte averaged over positions instead of summed", _lm_mean),
]


def check_lm_head_backward(fn, show=True):
    """fn(dlogits (B, T, V), cache=(x (B, T, C), wte (V, C))) -> (dx, dwte) for the tied
    language-model head logits = x @ wte.T. Tried with V = C (where a transposed product
    still runs) and V != C."""
    rng = np.random.default_rng(12)
    cases = [grad_case(_lm_head_forward, {"x": randn(rng, 2, 3, C), "wte": randn(rng, V, C)},
                       ["x", "wte"], seed=12 + V, label=f"C={C}, V={V}",
                       arg_names=("dlogits", "cache"))
             for C, V in ((5, 5), (4, 7))]
    return run("LM head backward (logits = x @ wte.T)", fn, cases, LM_HEAD_MISTAKES, {
        "call": "shapes: dlogits (B, T, V), x (B, T, C), wte (V, C): which product gives dx "
                "(B, T, C), which one dwte (V, C)?",
        "dx": "logits[b, t, v] = sum_c x[b, t, c] wte[v, c]",
        "dwte": "wte[v, c] is used at every position (b, t)"}, show)


# parameter count ----------------------------------------------------------------------------


def _pc_no_biases(cfg):
    C = cfg.n_embd
    return param_count(cfg) - cfg.n_layer * (3 * C + C + 4 * C + C)


def _pc_always_wpe(cfg):
    wpe = cfg.block_size * cfg.n_embd if cfg.pos_encoding != "learned" else 0
    return param_count(cfg) + wpe


PARAM_COUNT_MISTAKES = [
    ("forgot the biases of the linear layers (3C + C + 4C + C per block)", _pc_no_biases),
    ("counted wpe with sinusoidal positions: the sinusoidal table is fixed, not a parameter",
     _pc_always_wpe),
    ("counted the tied head twice: the LM head reuses wte",
     lambda cfg: param_count(cfg) + cfg.vocab_size * cfg.n_embd),
    ("forgot the layer norms (a gain and a bias of C each: two per block, one at the end)",
     lambda cfg: param_count(cfg) - (4 * cfg.n_layer + 2) * cfg.n_embd),
    ("forgot the final layer norm ln_f", lambda cfg: param_count(cfg) - 2 * cfg.n_embd),
    ("forgot the position table wpe (block_size x C)",
     lambda cfg: param_count(cfg) - (cfg.block_size * cfg.n_embd
                                     if cfg.pos_encoding == "learned" else 0)),
    ("forgot the token embedding wte", lambda cfg: param_count(cfg) - cfg.vocab_size * cfg.n_embd),
]


def _int(x):
    x = as_scalar(x)
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return int(x)
    return x


def check_param_count(fn, show=True):
    """fn(cfg) -> the number of parameters of a GPT with that GPTConfig; tried with learned
    and with sinusoidal positions, and with GPT-2 small's sizes."""
    configs = [("learned positions", GPTConfig()),
               ("sinusoidal positions", GPTConfig(pos_encoding="sinusoidal")),
               ("GPT-2 small", GPTConfig(vocab_size=50257, block_size=1024, n_layer=12,
                                         n_head=12, n_embd=768))]
    cases = [Case((cfg,), ("n_params",), (param_count(cfg),), label=label, arg_names=("cfg",),
                  call=lambda f, a: _int(f(*a)), threshold=0)
             for label, cfg in configs]
    return run("parameter count", fn, cases, PARAM_COUNT_MISTAKES, {
        "n_params": "go through the model's parameters one by one: embeddings, per block "
                    "(two layer norms, attention, MLP), the final layer norm, the head"}, show)


# dropout ------------------------------------------------------------------------------------
#
# The package's contract (layers/dropout.py): dropout_forward(x, p, rng) draws one uniform
# number per element, u = rng.random(x.shape, dtype=x.dtype), keeps the elements with u >= p
# and scales them by 1/(1-p); p = 0 (evaluation) is the identity. The checkers give the
# learner a fresh Generator with a fixed seed, so the mask is the package's, element by element.


def _keep(x, p, rng, keep_prob=False, draw="package"):
    """The keep-mask (bool, x's shape) drawn from rng, the right way or a mistaken one."""
    if draw == "float64":  # rng.random(x.shape): other numbers than in x's dtype for float32
        u = rng.random(x.shape)
    else:
        u = rng.random(x.shape, dtype=x.dtype)
    if keep_prob:  # p read as the probability to keep
        return u < p
    return u < 1 - p if draw == "below" else u >= p


def _dropout_ref(x, p, rng, scale="inverse", keep_prob=False, draw="package"):
    """(out, cache) of inverted dropout, with switches that make the catalogued mistakes."""
    if p == 0.0 and scale == "inverse" and not keep_prob:
        return x.copy(), None
    keep = _keep(x, p, rng, keep_prob, draw)
    one, p_ = x.dtype.type(1), x.dtype.type(p)
    factor = {"inverse": lambda: one / (one - p_), "none": lambda: one,
              "times": lambda: one - p_, "by_p": lambda: one / p_}[scale]()  # 1/0: inf
    mask = keep * factor
    return x * mask, mask


DROPOUT_FORWARD_MISTAKES = [
    ("the kept elements are not scaled by 1/(1-p): then the output's mean is (1-p) x during "
     "training and x at evaluation, and the next layer sees two different scales",
     variant(_dropout_ref, scale="none")),
    ("multiplied by (1-p) instead of divided by it: the survivors must grow, to make up for "
     "the dropped ones", variant(_dropout_ref, scale="times")),
    ("divided by p instead of 1-p: the survivors are a share 1-p of the elements",
     variant(_dropout_ref, scale="by_p")),
    ("p taken as the probability to keep: p is the probability to *drop* an element (keep it "
     "when its number u is >= p); at p = 0 nothing is dropped",
     variant(_dropout_ref, keep_prob=True, scale="by_p")),
    ("p taken as the probability to keep: p is the probability to *drop* an element (keep it "
     "when its number u is >= p); at p = 0 nothing is dropped",
     variant(_dropout_ref, keep_prob=True)),
    ("the mask is right in law but not the package's (kept when u < 1-p): keep an element "
     "when u >= p, with u = rng.random(x.shape, dtype=x.dtype), so the checker, the model and "
     "the tests draw the same masks", variant(_dropout_ref, draw="below")),
    ("the uniform numbers drawn in float64 (rng.random(x.shape)) for a float32 x: draw them in "
     "x's dtype, rng.random(x.shape, dtype=x.dtype), as the package does",
     variant(_dropout_ref, draw="float64")),
]

# (label, shape, p, dtype, seed): p = 0.25 and 0.1 tell 1/(1-p) from 1/p and (1-p)
_DROPOUT_CASES = [("p=0.25", (3, 4, 8), 0.25, np.float64, 3),
                  ("p=0.1, float32", (2, 5, 8), 0.1, np.float32, 4),
                  ("p=0, evaluation", (2, 3, 4), 0.0, np.float64, 5)]


def _dropout_input(shape, dtype, seed):
    return np.random.default_rng(100 + seed).standard_normal(shape).astype(dtype)


def _threshold(dtype):
    return 1e-6 if dtype == np.float32 else 1e-12


def _out_of(result, seen):
    """The output of a forward that must return (out, cache); notes when it did not."""
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0]
    if result is not None:
        seen.append(type(result).__name__)
    return result


def check_dropout_forward(fn, show=True):
    """fn(x, p, rng) -> (out, cache) for inverted dropout, drawing its mask from the Generator
    rng as the package does (u = rng.random(x.shape, dtype=x.dtype), kept where u >= p). Tried
    with p = 0.25, with p = 0.1 in float32, and with p = 0 (evaluation: the identity)."""
    not_pairs = []
    cases = []
    for label, shape, p, dtype, seed in _DROPOUT_CASES:
        x = _dropout_input(shape, dtype, seed)
        out = L.dropout_forward(x, p, np.random.default_rng(seed))[0]
        cases.append(Case((x, p, seed), ("out",), (out,), label, _threshold(dtype),
                          call=lambda f, a: _out_of(f(a[0], a[1], np.random.default_rng(a[2])),
                                                    not_pairs),
                          arg_names=("x", "p", "rng"),
                          hint="the mask comes from rng.random(x.shape, dtype=x.dtype): one "
                               "uniform number u per element, kept where u >= p (draw from "
                               "the rng you are given, not from np.random)"))
    report = run("dropout forward", fn, cases, DROPOUT_FORWARD_MISTAKES, {
        "call": "x has any shape; p is a float in [0, 1); rng is a np.random.Generator"},
        show=False)
    if not_pairs and not report.not_implemented:
        report.fail("cache", f"missing: {fn_name(fn)} returned one value ({not_pairs[0]}); "
                             "return (out, cache), the cache holding what the backward needs")
    return show_report(report, show)


def _new_mask_backward(dout, known):
    """A second mask drawn in the backward (from the Generator the forward drew from)."""
    mask, p, seed, shape, dtype = known
    if mask is None:
        return dout.copy()
    rng = np.random.default_rng(seed)
    rng.random(shape, dtype=dtype)  # the forward's draw
    return dout * ((rng.random(shape, dtype=dtype) >= p) * dtype.type(1 / (1 - p)))


def _dropout_bwd_ref(dout, known, how="mask"):
    mask, p, seed, shape, dtype = known
    if mask is None or how == "ignore":
        return dout.copy()
    keep = mask != 0
    return {"mask": lambda: dout * mask, "no_scale": lambda: dout * keep,
            "times": lambda: dout * keep * dtype.type(1 - p),
            "scale_only": lambda: dout * dtype.type(1 / (1 - p))}[how]()


class _Known:
    """A catalogued mistake of the dropout backward: computed from what the checker knows
    (the package's mask, p, the seed), since the learner's cache can hold anything."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, dout, known):
        return self.fn(dout, known)


DROPOUT_BACKWARD_MISTAKES = [
    ("a new mask drawn in the backward: the gradient flows only through the elements the "
     "forward kept, so the backward must reuse the forward's mask (keep it in the cache)",
     _Known(_new_mask_backward)),
    ("dx not scaled by 1/(1-p): out = x * keep / (1-p), so dx = dout * keep / (1-p), the "
     "forward's factor", _Known(variant(_dropout_bwd_ref, how="no_scale"))),
    ("dx multiplied by (1-p) instead of divided by it: the backward uses the forward's own "
     "factor 1/(1-p)", _Known(variant(_dropout_bwd_ref, how="times"))),
    ("dx = dout: a dropped element did not change the output, so its gradient is 0",
     _Known(variant(_dropout_bwd_ref, how="ignore"))),
    ("dx scaled by 1/(1-p) but not masked: a dropped element did not change the output, so "
     "its gradient is 0", _Known(variant(_dropout_bwd_ref, how="scale_only"))),
]


def _dropout_backward_call(f, a):
    dout, cache, known = a
    if isinstance(f, _Known):
        return f(dout, known)
    return f(dout, copy.deepcopy(cache.value))


def check_dropout_backward(fn, forward, show=True):
    """fn(dout, cache) -> dx, with `cache` what the learner's forward(x, p, rng) returned. The
    forward must pass check_dropout_forward first (the same three cases); the expected dx is
    dout times the package's scaled mask (dout itself at p = 0)."""
    title = "dropout backward"
    report = Report(title)
    cases = []
    for label, shape, p, dtype, seed in _DROPOUT_CASES:
        x = _dropout_input(shape, dtype, seed)
        right, mask = L.dropout_forward(x, p, np.random.default_rng(seed))

        def judge(result, right=right):
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                return "does not return (out, cache)"
            out = as_array(result[0])
            if out is None or out.shape != right.shape or not \
                    np.max(np.abs(out - right), initial=0.0) <= 1e-5 * np.max(np.abs(right)):
                return "does not compute the package's output"
            return ""

        result = learner_cache(report, forward, (x, p, np.random.default_rng(seed)), judge,
                               "check_dropout_forward", label)
        if result is None:
            return show_report(report, show)
        dout = np.random.default_rng(200 + seed).standard_normal(shape).astype(dtype)
        known = (mask, p, seed, shape, np.dtype(dtype))
        cases.append(Case((dout, Opaque(result[1]), known), ("dx",),
                          (dout if mask is None else dout * mask,), label, _threshold(dtype),
                          call=_dropout_backward_call, arg_names=("dout", "cache", "known")))
    return run(title, fn, cases, DROPOUT_BACKWARD_MISTAKES, {
        "dx": "out = x * m with m = 0 or 1/(1-p) per element, the mask of the forward",
        "call": "cache is what your my_dropout_forward returned (at p = 0 too)"}, show)


# one transformer block's backward -----------------------------------------------------------

BLOCK_PARAMS = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")


def _block_bwd_ref(dx_out, cache, grads, residual_mid=True, residual_in=True, twice=False,
                   attn_gets="mid", swap_ln=False, mlp_first=True, dropout=True,
                   swap_drop=False, skip_ln2=False):
    """One block's backward from the layers' backward passes, with switches that make the
    catalogued mistakes. Stores the block's 12 parameter gradients in grads, returns dx."""
    ln_1, ln_2 = (cache.ln_2, cache.ln_1) if swap_ln else (cache.ln_1, cache.ln_2)
    attn_drop, mlp_drop = (cache.mlp_drop, cache.attn_drop) if swap_drop else \
        (cache.attn_drop, cache.mlp_drop)

    def drop(d, mask):
        return L.dropout_backward(d, mask) if dropout else d

    def mlp_branch(d):  # gradient at the branch's output -> gradient at x_mid (through ln_2)
        dm = drop(d, mlp_drop)
        dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = \
            L.linear_backward(dm, cache.mlp_proj)
        dh = L.gelu_backward(dg, cache.gelu)
        dln2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = L.linear_backward(dh, cache.c_fc)
        dx, grads["ln_2.weight"], grads["ln_2.bias"] = L.layernorm_backward(dln2, ln_2)
        return dln2 if skip_ln2 else dx

    def attn_branch(d):
        da = drop(d, attn_drop)
        dy, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = \
            L.linear_backward(da, cache.c_proj)
        dqkv = L.attention_core_backward(dy, cache.attn)
        dln1, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = \
            L.linear_backward(dqkv, cache.c_attn)
        dx, grads["ln_1.weight"], grads["ln_1.bias"] = L.layernorm_backward(dln1, ln_1)
        return dx

    if not mlp_first:  # the attention branch first, with the block's output gradient
        dx_mid = dx_out + attn_branch(dx_out)
        return dx_mid + mlp_branch(dx_mid)
    branch = mlp_branch(dx_out)
    dx_mid = dx_out + branch if residual_mid else branch
    branch = attn_branch(dx_out if attn_gets == "out" else dx_mid)
    if twice:
        return dx_mid + dx_out + branch
    return dx_mid + branch if residual_in else branch


BLOCK_MISTAKES = [
    ("forgot the residual path at x_mid: x_out = x_mid + mlp(ln_2(x_mid)), so dx_mid = dx_out "
     "+ (the MLP branch's gradient)", variant(_block_bwd_ref, residual_mid=False)),
    ("forgot the residual path at x_in: x_mid = x_in + attn(ln_1(x_in)), so dx_in = dx_mid "
     "+ (the attention branch's gradient)", variant(_block_bwd_ref, residual_in=False)),
    ("the upstream gradient added twice: dx_mid already holds dx_out, so dx_in = dx_mid + "
     "(the attention branch's gradient), without another dx_out",
     variant(_block_bwd_ref, twice=True)),
    ("the attention branch got dx_out: its output was added to x_mid, so it receives dx_mid "
     "(dx_out plus the MLP branch's share)", variant(_block_bwd_ref, attn_gets="out")),
    ("the branches in the wrong order: the backward undoes the forward from its last step, "
     "so the MLP branch first (with dx_out), then the attention branch (with dx_mid)",
     variant(_block_bwd_ref, mlp_first=False)),
    ("ln_1's and ln_2's caches swapped: each layer's backward takes the cache its own forward "
     "returned (cache.ln_2 for ln_2)", variant(_block_bwd_ref, swap_ln=True)),
    ("the MLP branch's gradient added to dx_mid before ln_2's backward: the branch reads "
     "ln_2(x_mid), so its gradient reaches x_mid through layernorm_backward (add the dx it "
     "returns)", variant(_block_bwd_ref, skip_ln2=True)),
    ("the dropout masks skipped: each branch's output went through dropout, so its gradient "
     "goes through dropout_backward with that mask", variant(_block_bwd_ref, dropout=False)),
    ("the two dropout masks swapped: cache.attn_drop belongs to the attention branch, "
     "cache.mlp_drop to the MLP branch", variant(_block_bwd_ref, swap_drop=True)),
]


def _grad_name(n):
    return f"grads['{n}']"


def _block_call(f, a):
    """The learner's function stores the parameter gradients in a dict and returns dx: the
    outputs are dx and the 12 gradients in BLOCK_PARAMS order (None where one is missing)."""
    dx_out, cache = a
    grads = {}
    dx = f(dx_out, cache, grads)
    if dx is None and not grads:
        return None
    return (dx, *(grads.get(n) for n in BLOCK_PARAMS))


def _block_model(seed=0):
    """A one-block GPT in float64 with random layer-norm gains and biases and weights x10 (as
    the whole-model check makes it), so that every path gives a gradient well above rounding;
    dropout 0.1, its masks fixed by the seed of the Generator."""
    cfg = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=8, dropout=0.1)
    model = GPT(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        if p.ndim == 1:
            gain = ".ln_" in name and name.endswith("weight")
            p[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if gain else 0.0)
        else:
            p *= 10
    return model


@functools.lru_cache(maxsize=1)
def _block_case():
    """The block, its cache, dout and the finite-difference gradients (the same every call:
    computed once, the learner gets deep copies)."""
    model = _block_model()
    mask_seed = 3  # draws masks that drop something on both branches and in the attention
    x = np.random.default_rng(1).standard_normal((2, 3, 8))
    args = {"x": x, **{n: model.params["h.0." + n] for n in BLOCK_PARAMS}}

    def block():  # reads x and the parameters, which the finite differences nudge in place
        with kernels("plain"):
            return model.block_forward(0, x, 0.1, np.random.default_rng(mask_seed))

    out, cache = block()
    dout = np.random.default_rng(2).standard_normal(out.shape)
    expected = tuple(numerical_gradient(lambda: block()[0], args[n], dout, h=1e-3, order=4)
                     for n in args)
    return dout, cache, expected


def check_block_backward(fn, show=True):
    """fn(dx_out, cache, grads) -> dx_in for one transformer block (GPT.block_forward's
    BlockCache), storing the 12 parameter gradients in the dict grads under the block's own
    names ("ln_1.weight", "attn.c_attn.weight", ...). Checked against finite differences in
    float64 (B, T, C = 2, 3, 8, two heads, dropout 0.1 with fixed masks)."""
    dout, cache, expected = _block_case()
    case = Case((dout, cache), ("dx", *map(_grad_name, BLOCK_PARAMS)), expected,
                threshold=THRESHOLD, call=_block_call, arg_names=("dx_out", "cache"))
    report = run("transformer block backward", fn, [case], BLOCK_MISTAKES, {
        "dx": "x_mid = x_in + attn(ln_1(x_in)): x_in gets the gradient of both terms",
        "call": "cache is a BlockCache: cache.ln_1, cache.c_attn, cache.attn, cache.c_proj, "
                "cache.attn_drop, cache.ln_2, cache.c_fc, cache.gelu, cache.mlp_proj, "
                "cache.mlp_drop, each the cache of that layer's forward"}, show=False)
    for i, line in enumerate(report.lines):  # a gradient never stored: say so
        if line.startswith("✗ grads[") and "is None" in line:
            report.lines[i] = line.split("  ", 1)[0] + f"  missing: {fn_name(fn)} did not " \
                                                       "store it in grads"
    report.lines = named_once(report.lines)
    return show_report(report, show)


def named_once(lines):
    """The report's lines with a catalogued mistake spelled out under the first output (or
    case) it explains only; under the next ones (a block has 13 outputs) a short reference."""
    out, seen, i = [], set(), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("    this looks like: "):
            out.append(line)
            continue
        text = [line]
        while i < len(lines) and lines[i].startswith("      "):
            text.append(lines[i])
            i += 1
        key = " ".join(t.strip() for t in text)
        if key not in seen:
            out.extend(text)
        elif out[-1].startswith("    this looks like: the same mistake"):
            out[-1] = "    this looks like: the same mistakes as above"
        else:
            out.append("    this looks like: the same mistake as above")
        seen.add(key)
    return out
