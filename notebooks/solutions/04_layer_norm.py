# Solutions for notebooks/04_layer_norm.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_layernorm_backward
def my_layernorm_backward(dout, cache):
    """Backward pass of layer norm: y = w * xhat + b, xhat = (x - mean) * rstd, per position.

    Inputs:
    - dout: (B, T, C) upstream gradient dL/dy
    - cache: (x, w, mean, rstd) from layernorm_forward; x (B, T, C), w (C,),
      mean and rstd (B, T, 1), with rstd = 1 / sqrt(var + eps)

    Returns: (dx, dw, db) with shapes (B, T, C), (C,), (C,)
    """
    x, w, mean, rstd = cache
    C = x.shape[-1]
    xhat = (x - mean) * rstd                                    # (B, T, C)
    # w and b are shared by every position: their gradients sum over all rows
    dw = (dout * xhat).reshape(-1, C).sum(axis=0)               # (C,)
    db = dout.reshape(-1, C).sum(axis=0)                        # (C,)
    # the six steps of section 3 (d xhat, d r, d var, d x_c, d mu, d x) simplify to:
    # dx = r (g - mean(g) - xhat * mean(g * xhat)), with g = d xhat = dout * w
    g = dout * w                                                # (B, T, C)
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db

# %% constant_input
# At a constant position $x_c = 0$, so $\sigma^2 = 0$, $\hat{x} = 0$ and
# $r = 1/\sqrt{0 + \epsilon} = 1/\sqrt{10^{-5}} \approx 316$. The compact formula loses its last
# term ($\hat{x} = 0$) and gives
#
# $$dx = r\,(g - \overline{g}) \approx 316\,(g - \overline{g}), \qquad g = dy \odot w.$$
#
# So the gradient keeps only its part with zero mean and comes out **about 316 times larger**
# than $dy \odot w$. (Run the package's `layernorm_backward` on `np.full((1, 1, C), 7.0)`: every
# entry of `dx / (g - g.mean())` is 316.23.) The reason is the forward pass: near a constant
# vector, a tiny change $\delta$ with zero mean has a variance far below $\epsilon$, so it is
# normalised by $r \approx 1/\sqrt{\epsilon}$, and the output moves by $w \odot \delta / \sqrt{\epsilon}$.
#
# $\epsilon$ sets the size: the gain of the backward pass is at most $1/\sqrt{\epsilon}$, reached
# exactly where the input has no spread. Without $\epsilon$ it would be infinite. In a trained
# GPT the residual stream is never close to constant ($\sigma^2 \gg \epsilon$), so $r$ is
# moderate; but this is one reason $\epsilon$ is not simply $10^{-12}$.
