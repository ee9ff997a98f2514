"""Notebook 01 (tokens and embeddings): the embedding's backward pass."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run


def _emb_no_add_at(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = np.zeros(shape, dtype)
    dwte[idx.reshape(-1)] += dout.reshape(-1, shape[1])
    if pad is not None:
        dwte[pad] = 0
    return dwte


def _emb_no_padding(dout, cache):
    idx, shape, dtype, _ = cache
    dwte = np.zeros(shape, dtype)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, shape[1]))
    return dwte


def _emb_row_0(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = _emb_no_padding(dout, cache)
    if pad is not None:
        dwte[0] = 0
    return dwte


EMBEDDING_MISTAKES = [
    ("dwte[idx] += dout drops repeated ids (only one of the updates to a row survives): "
     "use np.add.at(dwte, idx, dout)", _emb_no_add_at),
    ("padding row not zeroed: the row of padding_idx must get no gradient", _emb_no_padding),
    ("row 0 zeroed instead of row padding_idx: the padding id is whatever the cache says",
     _emb_row_0),
]


def check_embedding_backward(fn, show=True):
    """fn(dout, cache) -> dwte (V, C), with cache = (idx, wte_shape, dtype, padding_idx).

    Tried with repeated token ids (which must accumulate), with padding_idx=0 and
    padding_idx=3, whose row must get no gradient, then in float32 (dwte of the cache's
    dtype)."""
    rng = np.random.default_rng(1)
    wte = randn(rng, 7, 4)

    def padded(pad):
        return lambda idx, wte: L.embedding_forward(idx, wte, padding_idx=pad)

    cases = [
        grad_case(L.embedding_forward, {"idx": np.array([[1, 2, 2, 5, 1], [6, 1, 0, 2, 2]]),
                                        "wte": wte.copy()}, ["wte"], seed=1,
                  label="repeated ids"),
        grad_case(padded(0), {"idx": np.array([[0, 3, 0, 2], [2, 0, 4, 4]]),
                              "wte": wte.copy()},
                  ["wte"], seed=2, label="padding_idx=0", zero={"wte": np.arange(7) == 0}),
        grad_case(padded(3), {"idx": np.array([[3, 3, 0, 6], [5, 0, 3, 1]]),
                              "wte": wte.copy()},
                  ["wte"], seed=3, label="padding_idx=3", zero={"wte": np.arange(7) == 3}),
        grad_case(padded(0), {"idx": np.array([[0, 3, 0, 2], [2, 0, 4, 4]]),
                              "wte": wte.copy()},
                  ["wte"], seed=4, label="padding_idx=0, float32",
                  zero={"wte": np.arange(7) == 0}, dtype=np.float32, strict_dtype=True),
    ]
    return run("embedding backward", fn, cases, EMBEDDING_MISTAKES, {
        "dwte": "row v of dwte collects dout from every position where idx == v"}, show)
