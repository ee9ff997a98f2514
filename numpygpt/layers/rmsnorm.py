"""RMS normalisation over the channel dimension (Llama's replacement for layer norm).

    rstd = 1 / sqrt(mean(x^2) + eps),   y = w * x * rstd

No mean is subtracted and there is no bias: only the scale of each vector is normalised.
That is one reduction instead of two, and in the backward pass one correction term instead of
two (see rmsnorm_backward).

Shapes: N any leading dimensions (e.g. B, T), C channels.
"""

import numpy as np

EPS = 1e-5


def rmsnorm_forward(x, w, eps=EPS):
    """Scale every vector x[..., :] to unit root mean square, then by the gain w.

    Inputs:
    - x: (..., C)
    - w: (C,) gain
    - eps: added to the mean square (Hugging Face's Llama: rms_norm_eps, 1e-5 or 1e-6)

    Returns (out, cache):
    - out: (..., C)
    - cache: (x, rstd, w), rstd (..., 1) (xhat = x * rstd is cheap to recompute)
    """
    C = x.shape[-1]
    ms = np.vecdot(x, x)[..., None] / x.dtype.type(C)  # (..., 1) mean of squares
    rstd = 1.0 / np.sqrt(ms + x.dtype.type(eps))  # (..., 1)
    out = x * rstd  # xhat
    out *= w
    return out, (x, rstd, w)


def rmsnorm_backward(dout, cache):
    """Backward of y = w * xhat, xhat = x * rstd.

    With g = dout * w (the gradient reaching xhat), the chain rule through rstd gives
        dx = rstd * (g - xhat * mean(g * xhat))
    (mean over the C channels): the subtraction removes the part of g that would change the
    scale of x, which normalisation throws away. Layer norm's backward has a second term,
    -mean(g), for the mean it also throws away; RMSNorm subtracts no mean, so that term
    is absent.

    Returns (dx, dw): shapes of x, w.
    """
    x, rstd, w = cache
    C = x.shape[-1]
    xhat = x * rstd  # (..., C)
    dw = np.einsum("nc,nc->c", dout.reshape(-1, C), xhat.reshape(-1, C))  # (C,)
    g = dout * w  # (..., C)
    dx = xhat  # reuse the buffer: dx = rstd * (g - xhat * mean(g * xhat))
    dx *= np.vecdot(g, xhat)[..., None] / x.dtype.type(C)
    np.subtract(g, dx, out=dx)
    dx *= rstd
    return dx, dw
