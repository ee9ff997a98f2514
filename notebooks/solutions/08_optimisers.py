# Solutions for notebooks/08_optimisers.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% lr_units
# Multiply the loss by 10 and every gradient is 10 times larger.
#
# - **SGD** steps by $\alpha g$: its step is 10 times larger too. To take the same steps you
#   need $\alpha / 10$: SGD's best learning rate is measured in "parameter change per unit of
#   gradient", so it depends on the scale of the loss and of each gradient.
# - **Adam** steps by $\alpha\,\hat m / (\sqrt{\hat v} + \epsilon)$. Both $\hat m$ and
#   $\sqrt{\hat v}$ grow by 10, the ratio does not change (as long as $\epsilon$ is negligible):
#   the same steps, the same best learning rate. Adam's $\alpha$ is measured in "parameter
#   change per step", roughly the size of each step.
#
# So the two learning rates are not the same quantity: they have different units, and a rate
# that is good for one says nothing about the other. Comparing optimisers "at the same learning
# rate" compares a well-tuned method with a badly tuned one, and which is which depends on the
# scale of the loss. The only fair comparison gives each its own best rate, found the same way
# (the same grid density, the same budget of steps, the same batches), as section 3 does.

# %% my_adamw_step
def my_adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
    """One AdamW update of a 2-D weight (so weight decay applies to it).

    Inputs:
    - p: parameter array, any shape; g: its gradient; m, v: its first and second moments
    - t: the step number, already incremented (1 for the first update)
    - lr, betas = (beta1, beta2), eps, weight_decay: the hyperparameters

    Returns: (p, m, v) after the update, new arrays of p's shape
    """
    beta1, beta2 = betas
    p = p * (1 - lr * weight_decay)                  # decoupled decay, with the old p
    m = beta1 * m + (1 - beta1) * g                  # running mean of g
    v = beta2 * v + (1 - beta2) * g * g              # running mean of g^2
    m_hat = m / (1 - beta1 ** t)                     # bias corrections (t >= 1)
    v_hat = v / (1 - beta2 ** t)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v

# %% rare_token
# After its one nonzero gradient $g$, the row's gradients are 0, so each step multiplies the
# moments: $m \leftarrow 0.9\,m$ and $v \leftarrow 0.99\,v$. The step
# $\hat m / (\sqrt{\hat v} + \epsilon)$ therefore shrinks by about $0.9 / \sqrt{0.99} \approx 0.905$
# per step, but it is **not zero**: Adam keeps moving the row in the direction of that old
# gradient for a while, about $1/(1 - 0.905) \approx 10$ steps' worth in total (a geometric
# series), and the first of those steps are almost as large as a full step of size
# $\approx \alpha$. Momentum in SGD does the same (the velocity decays by $\mu$ per step);
# plain SGD moves the row only at the one step with a gradient, by $\alpha g$, which for a rare
# token's small gradient is a tiny move.
#
# Two consequences. Adam gives the rare row a full-size step from a single, noisy gradient
# (its $\sqrt{\hat v}$ is small because the row rarely sees gradients): rare tokens learn
# fast, but from little evidence. And with weight decay, AdamW also shrinks the row by
# $(1 - \alpha\lambda)$ at *every* step, gradient or not: over the hundred silent steps a row
# loses a fraction of about $100\,\alpha\lambda$ of its size (1e-2 of it at $\alpha = 10^{-3}$,
# $\lambda = 0.1$), pulled towards 0 until the token shows up again. Rows of tokens that never
# appear decay away entirely over a long run.
