"""Linear (fully connected) layer: y = x @ w + b, with w stored (in, out) as in GPT-2 checkpoints.

Shapes: N any number of leading dimensions (e.g. B, T), Din inputs, Dout outputs.
"""


def linear_forward(x, w, b):
    """Apply an affine map to the last dimension of x.

    Inputs:
    - x: (..., Din), any number of leading dimensions
    - w: (Din, Dout)
    - b: (Dout,)

    Returns (out, cache):
    - out: (..., Dout)
    """
    Din, Dout = w.shape
    # One big GEMM over all rows is much faster than NumPy's loop over a batch dimension.
    x2 = x.reshape(-1, Din)  # (N, Din)
    out = x2 @ w  # (N, Dout)
    out += b
    cache = (x, w)
    return out.reshape(*x.shape[:-1], Dout), cache


def linear_backward(dout, cache, frozen=False):
    """Backward of y = x @ w + b.

        dx = dy @ w.T     dw = x.T @ dy (summed over all rows)     db = sum of dy over rows

    frozen=True (fine-tuning a layer that does not train): w and b get no gradient, and the
    dw product, as costly as the forward's, is skipped; returns (dx, None, None).

    Returns (dx, dw, db) with the shapes of x, w, b.
    """
    x, w = cache
    Din, Dout = w.shape
    dout2 = dout.reshape(-1, Dout)  # (N, Dout)
    dx = (dout2 @ w.T).reshape(x.shape)  # (..., Din)
    if frozen:
        return dx, None, None
    dw = x.reshape(-1, Din).T @ dout2  # (Din, Dout)
    db = dout2.sum(axis=0)  # (Dout,)
    return dx, dw, db
