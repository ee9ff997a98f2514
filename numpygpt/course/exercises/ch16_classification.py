"""Notebook 16 (classification fine-tuning): the classification head's backward pass."""

import numpy as np

from ... import layers as L
from .checking import grad_case, randn, run


def _cls_rows(dlogits, cache):
    """dlogits @ w.T: the gradient of each sequence's last hidden state, (B, C)."""
    return dlogits @ cache[3].T


def _cls_at_end(dlogits, cache):
    h_shape, lengths, last, w = cache
    dh = np.zeros(h_shape, dtype=dlogits.dtype)
    dh[:, -1] = _cls_rows(dlogits, cache)
    return dh, last.T @ dlogits, dlogits.sum(0)


def _cls_everywhere(dlogits, cache):
    h_shape, lengths, last, w = cache
    dh = np.broadcast_to(_cls_rows(dlogits, cache)[:, None, :], h_shape).copy()
    return dh, last.T @ dlogits, dlogits.sum(0)


def _cls_mean_pool(dlogits, cache):
    h_shape, lengths, last, w = cache
    real = (np.arange(h_shape[1])[None, :] < lengths[:, None]) / lengths[:, None]  # (B, T)
    dh = real[:, :, None] * _cls_rows(dlogits, cache)[:, None, :]
    return dh.astype(dlogits.dtype), last.T @ dlogits, dlogits.sum(0)


def _cls_dw_t(dlogits, cache):
    dh, dw, db = L.classifier_backward(dlogits, cache)
    return dh, dlogits.T @ cache[2], db


def _cls_db_not_summed(dlogits, cache):
    dh, dw, _ = L.classifier_backward(dlogits, cache)
    return dh, dw, dlogits.copy()


def _cls_db_mean(dlogits, cache):
    dh, dw, _ = L.classifier_backward(dlogits, cache)
    return dh, dw, dlogits.mean(0)


CLASSIFIER_MISTAKES = [
    ("the gradient went to position T-1 for every sequence: the head read position "
     "lengths[b] - 1, the last REAL token; a padded sequence's position T-1 is padding",
     _cls_at_end),
    ("the gradient was spread over every position: the head read one position per sequence, "
     "so dh is zero everywhere else (the padding and the earlier tokens)", _cls_everywhere),
    ("dh is mean pooling's gradient (divided over the real positions): this head reads only "
     "the last real token, which gets all of dlogits @ w.T", _cls_mean_pool),
    ("dw = dlogits.T @ last (transposed): dw must have w's shape (C, K), last.T @ dlogits",
     _cls_dw_t),
    ("db not summed over the batch: b is added to every sequence's logits, so db sums "
     "dlogits over B", _cls_db_not_summed),
    ("db averaged over the batch instead of summed (the loss already holds the mean)",
     _cls_db_mean),
]


def check_classifier_backward(fn, show=True):
    """fn(dlogits, cache) -> (dh, dw, db), with cache = (h_shape, lengths, last, w) as made
    by layers.classifier_forward(h, lengths, w, b): h (B, T, C) right-padded hidden states,
    lengths (B,) the real lengths, last (B, C) = h[b, lengths[b] - 1], w (C, K).
    Tried with padded sequences of different lengths, with a sequence of length 1, then in
    float32."""
    rng = np.random.default_rng(16)

    def case(lengths, seed, label, dtype=np.float64):
        lengths = np.array(lengths)
        B, T = len(lengths), int(lengths.max())
        return grad_case(lambda h, w, b: L.classifier_forward(h, lengths, w, b),
                         {"h": randn(rng, B, T, 5), "w": randn(rng, 5, 3), "b": randn(rng, 3)},
                         ["h", "w", "b"], seed=seed, label=label,
                         arg_names=("dlogits", "cache"), dtype=dtype)

    cases = [case([4, 2, 3], 16, "padded batch"), case([1, 5], 17, "a sequence of length 1"),
             case([4, 2, 3], 18, "padded batch, float32", np.float32)]
    return run("classification head backward", fn, cases, CLASSIFIER_MISTAKES, {
        "call": "shapes: dlogits (B, K); cache = (h_shape, lengths, last, w), last (B, C), "
                "w (C, K); dh has h's shape (B, T, C)",
        "dh": "which positions of h did the forward pass read? every other one gets 0",
        "dw": "logits = last @ w + b, a linear layer on the (B, C) rows `last`",
        "db": "b is added to every sequence's logits"}, show)
