"""Inverted dropout: zero each element with probability p, scale the survivors by 1/(1-p),
so the expected output equals the input and nothing needs rescaling at evaluation time.
"""


def dropout_forward(x, p, rng):
    """Inputs:
    - x: array of any shape
    - p: drop probability in [0, 1) (GPTConfig checks it)
    - rng: np.random.Generator that draws the mask (explicit, so runs are reproducible)

    Returns (out, cache): out has x's shape and dtype; cache holds the scaled mask
    (None when p == 0, where dropout is the identity).
    """
    if p == 0.0:
        return x.copy(), None
    keep = rng.random(x.shape, dtype=x.dtype) >= p  # (same as x) True = keep
    mask = keep * x.dtype.type(1.0 / (1.0 - p))  # 0 or 1/(1-p), in x's dtype
    return x * mask, mask


def dropout_backward(dout, cache):
    """The same mask scales the gradient: dx = dout * mask. Returns dx."""
    mask = cache
    if mask is None:
        return dout.copy()
    return dout * mask
