"""Layer normalisation over the channel dimension (GPT-2: biased variance, eps = 1e-5).

    mean = mean(x),  var = mean((x - mean)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,   y = w * xhat + b

Shapes: N any leading dimensions (e.g. B, T), C channels.
"""

from typing import NamedTuple

import numpy as np

EPS = 1e-5


class LayerNormCache(NamedTuple):
    x: np.ndarray  # (..., C) the input
    w: np.ndarray  # (C,) the gain
    mean: np.ndarray  # (..., 1)
    rstd: np.ndarray  # (..., 1) 1 / sqrt(var + eps)


def layernorm_forward(x, w, b, eps=EPS):
    """Normalise every vector x[..., :] to zero mean and unit variance, then scale and shift.

    Inputs:
    - x: (..., C)
    - w: (C,) gain
    - b: (C,) bias

    Returns (out, cache):
    - out: (..., C)
    - cache: LayerNormCache(x, w, mean, rstd) (xhat is cheap to recompute)
    """
    C = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean  # (..., C), becomes the output in place
    var = np.vecdot(xc, xc)[..., None] / C  # (..., 1) biased variance: mean of squares
    rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))  # (..., 1)
    xc *= rstd  # xhat
    xc *= w
    xc += b
    return xc, LayerNormCache(x, w, mean, rstd)


def layernorm_backward(dout, cache):
    """Backward of y = w * xhat + b.

    With g = dout * w (the gradient reaching xhat), the chain rule through mean and rstd gives
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    (means over the C channels): the two subtractions remove the parts of g that
    would change the mean and the variance, which normalisation throws away.

    Returns (dx, dw, db): shapes of x, w, b.
    """
    x, w, mean, rstd = cache
    C = x.shape[-1]
    xhat = x - mean
    xhat *= rstd  # (..., C), recomputed: cheaper than keeping it
    dout2, xhat2 = dout.reshape(-1, C), xhat.reshape(-1, C)  # (N, C)
    dw = np.einsum("nc,nc->c", dout2, xhat2)  # (C,) sum over rows of dout * xhat
    db = dout2.sum(axis=0)  # (C,)
    g = dout * w  # (..., C)
    dx = g - g.mean(axis=-1, keepdims=True)
    xhat *= np.vecdot(g, xhat)[..., None] / C  # xhat * mean(g * xhat)
    dx -= xhat
    dx *= rstd
    return dx, dw, db
