"""Notebook 15 (training dynamics): the bigram model, the baseline a GPT must beat."""

import numpy as np

from .checking import Case, run, variant


def bigram_model(ids, V, smoothing):
    """The bigram table of a token sequence (a reference for the course's exercise).

    Inputs: ids (N,) integer token ids in [0, V); V the vocabulary size; smoothing >= 0, the
    pseudo-count added to every pair (with 0, a token never followed by anything has a row of
    nan: 0/0).
    Returns P (V, V) float64: P[a, b] = (count(a -> b) + smoothing) / sum_b' (count(a -> b')
    + smoothing), the estimated probability that token b follows token a.
    """
    with np.errstate(invalid="ignore"):  # 0/0 = nan rows without smoothing
        return _bigram_ref(np.asarray(ids), V, smoothing)


def _bigram_ref(ids, V, s, norm=True, transpose=False, axis=1, wrap=False, smooth_after=False,
                row_smooth=False, buffered=False):
    c = np.zeros((V, V))
    a, b = (ids, np.roll(ids, -1)) if wrap else (ids[:-1], ids[1:])
    if buffered:
        c[a, b] += 1.0  # the trap: a pair that repeats is counted once
    else:
        np.add.at(c, (a, b), 1.0)
    if transpose:
        c = c.T
    if smooth_after:
        p = c / c.sum(axis, keepdims=True)
        return p + s
    if row_smooth:
        return (c + s) / (c.sum(axis, keepdims=True) + s)
    c = c + s
    return c / c.sum(axis, keepdims=True) if norm else c


BIGRAM_MISTAKES = [
    ("counts[a, b] += 1 with index arrays counts a repeated pair only once (fancy-index "
     "assignment is buffered): use np.add.at(counts, (a, b), 1)",
     variant(_bigram_ref, buffered=True)),
    ("rows not normalised: divide each row by its sum so that sum_b P[a, b] = 1",
     variant(_bigram_ref, norm=False)),
    ("smoothing forgotten: add `smoothing` to every count before normalising (a row with no "
     "counts would be 0/0)", lambda ids, V, s: _bigram_ref(ids, V, 0.0)),
    ("counts transposed: P[a, b] is the probability that b follows a (row a, column b)",
     variant(_bigram_ref, transpose=True)),
    ("normalised the columns instead of the rows", variant(_bigram_ref, axis=0)),
    ("counted the pair (last, first) too: np.roll wraps around; pairs are (ids[i], ids[i+1]) "
     "for i < N - 1", variant(_bigram_ref, wrap=True)),
    ("smoothing added after normalising: add it to the counts",
     variant(_bigram_ref, smooth_after=True)),
    ("smoothing added once to the row sum: every one of the V entries gets it, so the row "
     "sum grows by V * smoothing", variant(_bigram_ref, row_smooth=True)),
]


def check_bigram_model(fn, show=True):
    """fn(ids (N,) int, V, smoothing) -> the (V, V) bigram table
    P[a, b] = (count(a -> b) + smoothing) / sum_b' (count(a -> b') + smoothing).
    Token 4 only occurs last (its row has no counts), token 5 never occurs: with smoothing
    (1 and 0.1) their rows are uniform, without it (0) they are 0/0 = nan, as the exercise's
    docstring says."""
    ids = np.array([0, 1, 2, 1, 2, 3, 0, 1, 1, 2, 0, 3, 3, 2, 4])
    hints = {0.0: "with smoothing 0 the rows of tokens 4 and 5 (never followed by anything) "
                  "are 0/0 = nan: divide the counts by their row sums, no special case"}
    cases = [Case((ids, 6, s), ("P",), (bigram_model(ids, 6, s),), label=f"smoothing={s}",
                  arg_names=("ids", "V", "smoothing"), hint=hints.get(s, ""))
             for s in (1.0, 0.1, 0.0)]
    return run("bigram model", fn, cases, BIGRAM_MISTAKES, {
        "P": "count every neighbouring pair (ids[i], ids[i + 1]), add the smoothing, then "
             "normalise each row"}, show)
