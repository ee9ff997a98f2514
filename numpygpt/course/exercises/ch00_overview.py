"""Notebook 00 (overview): the mean negative log-likelihood of a sequence."""

import numpy as np

from .checking import Case, as_scalar, randn, run


def _nll_sum(probs, tokens):
    return -np.sum(np.log(probs[np.arange(len(tokens)), tokens]))


SEQUENCE_NLL_MISTAKES = [
    ("sum instead of mean: the NLL here is the mean over the T tokens", _nll_sum),
    ("log of the wrong entries: probs[t, tokens[t]] is the probability of token t",
     lambda p, t: -np.mean(np.log(p[t, np.arange(len(t))]))),
    ("log of the wrong entries: probs[:, tokens] picks a (T, T) block, not one entry per row",
     lambda p, t: -np.mean(np.log(p[:, t]))),
    ("averaged log p over the whole table instead of picking the actual tokens",
     lambda p, t: -np.mean(np.log(p))),
    ("log base 2: the NLL uses the natural log (nats)",
     lambda p, t: -np.mean(np.log2(p[np.arange(len(t)), t]))),
]


def check_sequence_nll(fn, show=True):
    """fn(probs, tokens) -> the mean negative log-likelihood -(1/T) sum_t log P(x_t | x_<t),
    with probs (T, V) the model's next-token distributions and tokens (T,) the actual tokens."""
    rng = np.random.default_rng(9)
    e = np.exp(randn(rng, 6, 8))
    probs = e / e.sum(-1, keepdims=True)
    tokens = np.array([3, 0, 4, 4, 1, 2])
    expected = -np.mean(np.log(probs[np.arange(6), tokens]))
    case = Case((probs, tokens), ("nll",), (expected,), arg_names=("probs", "tokens"),
                call=lambda f, a: as_scalar(f(*a)))
    return run("sequence negative log-likelihood", fn, [case], SEQUENCE_NLL_MISTAKES, {
        "nll": "-(1/T) sum_t log probs[t, tokens[t]]"}, show)
