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


def _nll_case(label, T, V, seed, tokens, dtype=np.float64):
    rng = np.random.default_rng(seed)
    e = np.exp(randn(rng, T, V))
    probs = (e / e.sum(-1, keepdims=True)).astype(dtype)
    tokens = np.array(tokens)
    p64 = probs.astype(np.float64)  # the expected value, exact for these (float32) numbers
    expected = -np.mean(np.log(p64[np.arange(T), tokens]))
    return Case((probs, tokens), ("nll",), (expected,), label, arg_names=("probs", "tokens"),
                call=lambda f, a: as_scalar(f(*a)), after_pass=dtype != np.float64)


def check_sequence_nll(fn, show=True):
    """fn(probs, tokens) -> the mean negative log-likelihood -(1/T) sum_t log P(x_t | x_<t),
    with probs (T, V) the model's next-token distributions and tokens (T,) the actual tokens.
    Tried on two sequences (one of a single token), then on float32 probabilities (a float32
    model's); a float32 answer is judged by float32's rounding."""
    cases = [_nll_case("T=6, V=8", 6, 8, 9, [3, 0, 4, 4, 1, 2]),
             _nll_case("T=1", 1, 5, 10, [4]),
             _nll_case("float32, T=5, V=7", 5, 7, 11, [6, 6, 0, 2, 5], np.float32)]
    return run("sequence negative log-likelihood", fn, cases, SEQUENCE_NLL_MISTAKES, {
        "nll": "-(1/T) sum_t log probs[t, tokens[t]]"}, show)
