# Solutions for notebooks/06_cross_entropy.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_cross_entropy_backward
def my_cross_entropy_backward(dloss, cache):
    """Backward pass of the fused softmax cross-entropy (softmax_cross_entropy_forward).

    Inputs:
    - dloss: float, upstream gradient of the scalar loss
    - cache: (probs, yv, valid, n_valid, shape) from the forward pass:
      probs   (N, V) softmax of the logits, one row per position (N = B * T)
      yv      (N,) int targets; ignored rows hold a dummy 0
      valid   (N,) bool, True where the target counts (not -1)
      n_valid int, the number of counted targets (may be 0)
      shape   the logits' shape, e.g. (B, T, V)

    Returns: dlogits, of shape `shape` and the dtype of probs
    """
    probs, yv, valid, n_valid, shape = cache
    if n_valid == 0:
        return np.zeros(shape, dtype=probs.dtype)        # a constant loss: nothing to learn
    dz = probs.copy()                                    # (N, V)
    dz[np.arange(len(yv)), yv] -= 1.0                    # d(-z_y + logsumexp z)/dz = p - onehot
    dz *= (valid * (dloss / n_valid))[:, None].astype(dz.dtype)  # mean over counted rows
    return dz.reshape(shape)

# %% why_fuse
# The unfused route computes $\partial\mathcal{L}/\partial p_y = -1/p_y$ first and then sends
# that through the softmax Jacobian. For a row whose target got $p_y = e^{-1000} \approx
# 10^{-434}$ (logits 1000 apart), $p_y$ underflows to 0 in float64 (the smallest positive
# float64 is about $5 \cdot 10^{-324}$), so $-1/p_y = -\infty$, and the softmax backward then
# multiplies $\infty$ by the $p$'s that are 0: `inf * 0 = nan`, in the whole row. Even when $p_y$ is merely tiny
# (say $10^{-30}$), the route divides by it and multiplies by it again, losing digits on the way.
# The forward pass has the same problem: $\log p_y$ of an underflowed $p_y$ is $-\infty$.
#
# The fused route never forms $1/p_y$: the two factors cancel on paper, leaving
# $p - \text{onehot}$, whose entries all lie in $[-1, 1]$. For the extreme row it gives exactly
# $-1$ for the target and (almost) $+1$ for the token the model bet on: the right answer, and
# the largest push the loss can give.
#
# Cost: the unfused route builds (or applies) a $V \times V$ Jacobian per row, or at least a
# row sum and two products; the fused one is a copy and one subtraction per row. With GPT-2's
# $V = 50{,}257$ and thousands of rows per batch, that difference is real.

# %% row_sum_zero
# Adding the same number $c$ to all $V$ logits of a row does not change the softmax
# ($e^{z_j + c} / \sum_k e^{z_k + c} = e^{z_j}/\sum_k e^{z_k}$), so it does not change the loss.
# The loss is flat along the direction $(1, 1, \dots, 1)$ of each row, and the gradient, which
# measures how the loss changes, has no component along it: $\sum_j \partial\mathcal{L}/\partial
# z_j = 0$. (With the formula: the probabilities sum to 1 and the one-hot sums to 1.)
#
# So a gradient step only *redistributes* a row's logits: what the target gains, the other
# tokens lose, in proportion to the probability each wrongly received. It can never raise or
# lower all the logits of a row together; their common level is not learnable and does not
# matter. (The same invariance gave the key bias of notebook 05 a zero gradient.)
