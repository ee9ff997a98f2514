# Solutions for notebooks/03_linear_gelu_mlp.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_linear_backward
def my_linear_backward(dout, cache):
    """Backward pass of y = x @ w + b, with w stored (in, out).

    Inputs:
    - dout: (B, T, Dout) upstream gradient dL/dy
    - cache: (x, w) from linear_forward; x (B, T, Din), w (Din, Dout)

    Returns: (dx, dw, db) with shapes (B, T, Din), (Din, Dout), (Dout,)
    """
    x, w = cache
    Din, Dout = w.shape
    dout2 = dout.reshape(-1, Dout)                 # (N, Dout), N = B*T rows
    # dL/dx[n, i] = sum_j dy[n, j] w[i, j]
    dx = (dout2 @ w.T).reshape(x.shape)            # (N, Dout)(Dout, Din) -> (B, T, Din)
    # dL/dw[i, j] = sum_n x[n, i] dy[n, j]: w is used by every row, so the rows add up
    dw = x.reshape(-1, Din).T @ dout2              # (Din, N)(N, Dout) -> (Din, Dout)
    # dL/db[j] = sum_n dy[n, j]
    db = dout2.sum(axis=0)                         # (Dout,)
    return dx, dw, db

# %% my_gelu_backward
def my_gelu_backward(dout, cache):
    """Backward pass of gelu(x) = x * s, s = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).

    Inputs:
    - dout: upstream gradient, any shape
    - cache: (x, s) from gelu_forward, both of dout's shape; s = sigmoid(2u) already computed

    Returns: dx = dout * gelu'(x), same shape
    """
    x, s = cache
    # product rule: gelu' = s + x ds/dx
    # chain rule:   ds/dx = sigmoid'(2u) * 2 * du/dx = s (1 - s) * 2 * du/dx
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)   # du/dx
    return dout * (s + 2 * x * s * (1 - s) * du)

# %% batch_size_and_dw
# No, not on average. The loss is the *mean* over the $N = B \cdot T$ positions,
# $\mathcal{L} = \frac1N \sum_n \ell_n$, so the upstream gradient of each position carries a
# factor $\frac1N$ (the cross-entropy backward divides by the number of targets, notebook 06).
# $dW = \sum_n x_n^\top dy_n$ is therefore an *average* of per-position contributions: doubling
# $B$ doubles the number of terms and halves each one. What changes is the noise: an average over
# more positions fluctuates less (roughly as $1/\sqrt{N}$ for independent positions).
#
# With a *sum* loss, $dW$ would double with the batch, and so would every optimiser step: the
# learning rate would have to be tuned again for every batch size. With the mean, a learning rate
# that works for one batch size is a reasonable start for another. For the same reason, gradient
# accumulation over several micro-batches divides the summed gradients by their number.
# (Adam, notebook 08, is largely insensitive to the overall scale of the gradient anyway, but
# plain SGD is not.)

# %% mlp_without_gelu
# A single linear layer:
#
# $$\text{out} = (x W_{fc} + b_{fc}) W_{proj} + b_{proj}
# = x\,\underbrace{W_{fc} W_{proj}}_{W'\,:\,(C, C)} + \underbrace{b_{fc} W_{proj} + b_{proj}}_{b'\,:\,(C,)}.$$
#
# $W'$ and $b'$ have $C^2 + C$ numbers, against the MLP's $8C^2 + 5C$: eight times as many
# parameters for the same set of functions. The $4C$-wide hidden layer has become a detour: a
# product $(C, 4C)(4C, C)$ is just some $C \times C$ matrix, so the width buys nothing. It is the
# non-linearity between the two layers that lets the hidden units act as $4C$ separate
# detectors, each switched on by its own pattern of the input, and makes the width worth having.
