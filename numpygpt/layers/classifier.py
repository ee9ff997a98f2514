"""A classification head: the hidden state of each sequence's last real token -> class scores.

    h_last[b] = h[b, lengths[b] - 1]               (B, C) the last real token of sequence b
    logits    = h_last @ w + b                     (B, K)

Why the last token: attention is causal, so the last real token is the only position that
has seen the whole text. Sequences in a batch are padded on the right to the longest one;
the padding sits after the last real token, which never looks at it, so it changes nothing
(and gets no gradient). GPT-2's sequence classifier does the same.

Shapes: B batch, T time, C channels, K classes.
"""

import numpy as np


def classifier_forward(h, lengths, w, b):
    """Inputs:
    - h: (B, T, C) hidden states (the model's final layer-norm output)
    - lengths: int (B,), the number of real tokens of each sequence, in [1, T]
    - w: (C, K), b: (K,)

    Returns (logits, cache): logits (B, K).
    """
    rows = np.arange(h.shape[0])
    last = h[rows, lengths - 1]  # (B, C): a copy (fancy indexing), one row per sequence
    logits = last @ w + b  # (B, K)
    return logits, (h.shape, lengths, last, w)


def classifier_backward(dlogits, cache):
    """Backward of classifier_forward. Only the last real position of each sequence was
    read, so dh is zero everywhere else (padding included).

    Returns (dh, dw, db) with the shapes of h, w, b.
    """
    h_shape, lengths, last, w = cache
    dh = np.zeros(h_shape, dtype=dlogits.dtype)  # (B, T, C)
    dh[np.arange(h_shape[0]), lengths - 1] = dlogits @ w.T  # one position per row: no clash
    dw = last.T @ dlogits  # (C, K)
    db = dlogits.sum(axis=0)  # (K,)
    return dh, dw, db
