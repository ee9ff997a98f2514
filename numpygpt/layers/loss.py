"""Softmax cross-entropy, fused: logits -> mean negative log-likelihood of the targets.

    loss = -(1/n) sum_i log softmax(z_i)[y_i],  over the n targets that are not ignore_index
    dloss/dz_i = (softmax(z_i) - onehot(y_i)) / n   (and 0 for ignored rows)

Fusing softmax with the log keeps it stable: log softmax(z) = z - max(z) - log sum exp(z - max(z)).

Shapes: N rows (e.g. B*T), V classes (vocabulary).
"""

from typing import NamedTuple

import numpy as np


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray  # (N, V) softmax of the logits
    yv: np.ndarray  # (N,) targets, ignored ones replaced by 0
    valid: np.ndarray  # (N,) bool, False where the target is ignored
    n_valid: int  # how many targets count
    shape: tuple  # the logits' shape, for the gradient


def softmax_cross_entropy_forward(logits, targets, ignore_index=-1):
    """Inputs:
    - logits: (..., V) float scores, e.g. (B, T, V)
    - targets: integer class ids of shape logits.shape[:-1]; entries equal to ignore_index
      (default -1, for padding) do not count; the others must be in [0, V) (GPT.forward
      checks them with check_targets)

    Returns (loss, cache):
    - loss: scalar of logits' dtype, the mean over non-ignored targets. When every target is
      ignored the loss is 0 and so is the gradient: there is nothing to learn from, and
      (unlike PyTorch's 0/0 = nan) one all-padding batch cannot poison training.
    """
    V = logits.shape[-1]
    z = logits.reshape(-1, V)  # (N, V)
    y = targets.reshape(-1)  # (N,)
    valid = y != ignore_index  # (N,)
    n_valid = int(valid.sum())

    shifted = z - z.max(axis=-1, keepdims=True)  # (N, V), max is 0: exp cannot overflow
    probs = np.exp(shifted)
    sumexp = probs.sum(axis=-1, keepdims=True)  # (N, 1), >= 1
    probs /= sumexp  # softmax
    yv = np.where(valid, y, 0)  # any in-range id for ignored rows; masked out below
    logp = shifted[np.arange(len(y)), yv] - np.log(sumexp[:, 0])  # (N,) log p(y)
    if n_valid == 0:
        loss = logits.dtype.type(0.0)
    else:
        loss = logits.dtype.type(-(logp * valid).sum() / n_valid)
    return loss, CrossEntropyCache(probs, yv, valid, n_valid, logits.shape)


def softmax_cross_entropy_backward(dloss, cache):
    """Inputs: dloss, the upstream gradient of the scalar loss (1.0 when it is the final loss).

    Returns dlogits of logits' shape: dloss * (probs - onehot) / n_valid, zero on ignored rows.
    """
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()  # (N, V)
    if n_valid == 0:
        dz[:] = 0
        return dz.reshape(shape)
    dz[np.arange(len(yv)), yv] -= 1
    dz *= (valid * (dloss / n_valid)).astype(dz.dtype)[:, None]  # ignored rows -> 0
    return dz.reshape(shape)
