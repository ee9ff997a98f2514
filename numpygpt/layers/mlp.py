"""The transformer's feed-forward block: linear (C -> 4C), GELU, linear (4C -> C).

Shapes: B batch, T time, C channels (4C hidden units).
"""

from .gelu import gelu_backward, gelu_forward
from .linear import linear_backward, linear_forward


def mlp_forward(x, w_fc, b_fc, w_proj, b_proj):
    """Inputs:
    - x: (B, T, C)
    - w_fc: (C, 4C), b_fc: (4C,)   ("c_fc" in GPT-2)
    - w_proj: (4C, C), b_proj: (C,) ("c_proj" in GPT-2)

    Returns (out, cache): out (B, T, C).
    """
    h, fc_cache = linear_forward(x, w_fc, b_fc)  # (B, T, 4C)
    a, gelu_cache = gelu_forward(h)  # (B, T, 4C)
    out, proj_cache = linear_forward(a, w_proj, b_proj)  # (B, T, C)
    return out, (fc_cache, gelu_cache, proj_cache)


def mlp_backward(dout, cache):
    """Backward through the three layers in reverse order.

    Returns (dx, dw_fc, db_fc, dw_proj, db_proj).
    """
    fc_cache, gelu_cache, proj_cache = cache
    da, dw_proj, db_proj = linear_backward(dout, proj_cache)  # (B, T, 4C)
    dh = gelu_backward(da, gelu_cache)  # (B, T, 4C)
    dx, dw_fc, db_fc = linear_backward(dh, fc_cache)  # (B, T, C)
    return dx, dw_fc, db_fc, dw_proj, db_proj
