"""Notebook 07 (block and GPT): the tied LM head's backward pass, and the parameter count."""

import numpy as np

from ...models.gpt import GPTConfig, param_count
from .checking import Case, as_scalar, grad_case, randn, run

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
