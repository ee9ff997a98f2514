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


def check_cosine_similarity(fn, show=True):
    """fn(E) -> the (N, N) matrix of cosine similarities between the rows of E (N, C)."""
    E = randn(np.random.default_rng(11), 5, 3)
    case = Case((E,), ("sim",), (reference_cosine_similarity(E),), arg_names=("E",))
    return run("cosine similarity matrix", fn, [case], COSINE_SIMILARITY_MISTAKES, {
        "sim": "sim[i, j] = E[i].E[j] / (|E[i]| |E[j]|)"}, show)
