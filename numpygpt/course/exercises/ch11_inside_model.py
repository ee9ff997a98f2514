"""Notebook 11 (inside the model): cosine similarities between embeddings."""

import numpy as np

from .checking import Case, randn, run


def reference_cosine_similarity(E):
    """E (N, C) -> (N, N) cosine similarities between its rows."""
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)  # (N, C)
    return unit @ unit.T


COSINE_SIMILARITY_MISTAKES = [
    ("not normalised: these are dot products; divide each row by its length first",
     lambda E: E @ E.T),
    ("normalised the columns instead of the rows (axis=0): each row is one vector",
     lambda E: (E / np.linalg.norm(E, axis=0, keepdims=True)) @
     (E / np.linalg.norm(E, axis=0, keepdims=True)).T),
    ("divided by the squared lengths: cos = a.b / (|a| |b|)",
     lambda E: (E @ E.T) / ((E * E).sum(1)[:, None] * (E * E).sum(1)[None, :])),
    ("only one side normalised: both vectors need unit length",
     lambda E: (E / np.linalg.norm(E, axis=1, keepdims=True)) @ E.T),
]


def _cos_case(E, label, dtype=np.float64):
    E = E.astype(dtype)
    return Case((E,), ("sim",), (reference_cosine_similarity(E.astype(np.float64)),), label,
                arg_names=("E",), strict_dtype=False, after_pass=dtype != np.float64)


def check_cosine_similarity(fn, show=True):
    """fn(E) -> the (N, N) matrix of cosine similarities between the rows of E (N, C).
    Tried on random rows, on rows of very different lengths (one a scaled copy of another,
    one pointing the opposite way: cosines 1 and -1), then in float32 (a model's
    embeddings)."""
    rng = np.random.default_rng(11)
    E = randn(rng, 5, 3)
    F = randn(rng, 4, 6) * np.array([[0.01], [1.0], [30.0], [1.0]])
    F[1], F[3] = 50.0 * F[0], -2.0 * F[2]
    cases = [_cos_case(E, "N=5, C=3"), _cos_case(F, "N=4, C=6, lengths 0.01 to 300"),
             _cos_case(randn(rng, 6, 4), "float32, N=6, C=4", np.float32)]
    return run("cosine similarity matrix", fn, cases, COSINE_SIMILARITY_MISTAKES, {
        "sim": "sim[i, j] = E[i].E[j] / (|E[i]| |E[j]|)"}, show)
