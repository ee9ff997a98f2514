"""LoRA (low-rank adaptation): a frozen linear layer plus a trainable low-rank update.

    y = x @ w + b + scale * (x @ A) @ B         scale = alpha / r

Fine-tuning changes a pretrained w by some delta; LoRA bets that the useful delta has low
rank and writes it as A @ B with A (Din, r), B (r, Dout), r << min(Din, Dout). Only A and B
train: r (Din + Dout) numbers per layer instead of Din Dout. B starts at zero, so the adapted
model starts out as exactly the pretrained one. After training, w + scale * A @ B is an
ordinary weight again (GPT.merge_lora), and inference costs nothing extra.

Shapes: N any number of leading dimensions (e.g. B, T), Din inputs, Dout outputs, r rank.
"""


def lora_forward(x, w, b, A, B, scale):
    """A linear layer with a low-rank adapter.

    Inputs:
    - x: (..., Din), any number of leading dimensions
    - w: (Din, Dout), b: (Dout,): the pretrained layer, frozen (no gradient)
    - A: (Din, r), B: (r, Dout): the adapter
    - scale: alpha / r, a Python float

    Returns (out, cache):
    - out: (..., Dout)
    """
    Din, Dout = w.shape
    x2 = x.reshape(-1, Din)  # (N, Din)
    u = x2 @ A  # (N, r): the input squeezed through the rank-r bottleneck
    out = x2 @ w  # (N, Dout)
    out += b
    out += (u * x.dtype.type(scale)) @ B  # scaling u (N x r) is cheaper than the output
    cache = (x, w, A, B, u, scale)
    return out.reshape(*x.shape[:-1], Dout), cache


def lora_backward(dout, cache):
    """Backward of lora_forward. w and b are frozen: no gradient for them, and no dw GEMM
    (N Din Dout multiply-adds saved; the adapter's own gradients cost N r (Din + Dout)).

    With u = x @ A and y = x @ w + b + scale * u @ B:
        du = scale * dy @ B.T      dB = scale * u.T @ dy      dA = x.T @ du
        dx = dy @ w.T + du @ A.T

    Returns (dx, dA, dB) with the shapes of x, A, B.
    """
    x, w, A, B, u, scale = cache
    Din, Dout = w.shape
    s = x.dtype.type(scale)
    dout2 = dout.reshape(-1, Dout)  # (N, Dout)
    x2 = x.reshape(-1, Din)  # (N, Din)
    du = (dout2 @ B.T) * s  # (N, r)
    dB = (u * s).T @ dout2  # (r, Dout)
    dA = x2.T @ du  # (Din, r)
    dx = dout2 @ w.T  # (N, Din)
    dx += du @ A.T
    return dx.reshape(x.shape), dA, dB
