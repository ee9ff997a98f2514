"""Notebook 14 (GPT-2 in NumPy): each token's surprisal in bits."""

import math

import numpy as np

from .checking import Case, randn, run, variant


def reference_token_surprisal(logits, targets):
    """logits (T, V), targets (T,) -> (T,) surprisal in bits, -log2 softmax(logits)[t, y_t]."""
    z = logits - logits.max(axis=-1, keepdims=True)  # (T, V), stable for large logits
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets] / np.log(2.0)


def _surprisal_ref(z, t, base=2.0, axis=-1, stable=True):
    shift = z.max(axis, keepdims=True) if stable else 0.0
    lse = np.log(np.exp(z - shift).sum(axis, keepdims=True)) + shift
    logp = z - lse
    return -logp[np.arange(len(t)), t] / math.log(base)


SURPRISAL_MISTAKES = [
    ("natural log instead of bits: surprisal in bits is -log2 p = -ln p / ln 2",
     variant(_surprisal_ref, base=math.e)),
    ("overflow: exp of logits ~1e3 is inf; subtract the row max first (softmax does not "
     "change)", variant(_surprisal_ref, stable=False)),
    ("softmax over the wrong axis: each row (position) is one distribution over the "
     "vocabulary", variant(_surprisal_ref, axis=0)),
    ("-log2 of the logit itself: take the softmax first",
     lambda z, t: -np.log2(np.abs(z[np.arange(len(t)), t]))),
]


def check_token_surprisal(fn, show=True):
    """fn(logits (T, V), targets (T,)) -> (T,) surprisal in bits,
    -log2 softmax(logits)[t, targets[t]], which must stay finite for logits around 1e3.
    Tried with logits around 1 and around 1e3, then with float32 logits around 1e3 (a
    float32 model's: exp overflows there from 89 on)."""
    rng = np.random.default_rng(13)
    cases = []
    for label, scale, offset, dtype in (("logits ~ 1", 2.0, 0.0, np.float64),
                                        ("logits ~ 1e3", 30.0, 1000.0, np.float64),
                                        ("logits ~ 1e3, float32", 30.0, 1000.0, np.float32)):
        z = (randn(rng, 5, 6, scale=scale) + offset).astype(dtype)
        t = np.array([2, 0, 5, 5, 1])
        cases.append(Case((z, t), ("bits",), (reference_token_surprisal(z.astype(np.float64),
                                                                        t),),
                          label=label, arg_names=("logits", "targets"), strict_dtype=False,
                          after_pass=dtype != np.float64))
    return run("token surprisal (bits)", fn, cases, SURPRISAL_MISTAKES, {
        "bits": "log softmax(z) = z - log sum exp(z), and log2 x = ln x / ln 2"}, show)
