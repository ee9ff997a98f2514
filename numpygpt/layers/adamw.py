"""The AdamW update of one tensor: the optimizer's maths, pure arithmetic on arrays like a
layer's (CS231n keeps its update rules in optim.py, beside layers.py). The optimizer
(numpygpt/training/optim.py) holds the state and calls this for every parameter; its fast
twin (numpygpt/kernels/fast.py) computes the same numbers without temporaries.

    p *= 1 - lr * weight_decay                      decoupled decay, 2-D tensors only
    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
    p -= lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

(Loshchilov & Hutter's AdamW, as PyTorch's torch.optim.AdamW computes it.)
"""

import numpy as np


def decays(param):
    """Weight decay applies to 2-D tensors (matmul weights and embeddings) only, never to
    biases or layer-norm gains: shrinking those towards 0 is not regularisation but damage."""
    return param.ndim >= 2


def adamw_update(p, g, m, v, t, lr, betas, eps, weight_decay, scratch=None):
    """One AdamW update of one tensor, in place, as the textbook writes it.

    Inputs:
    - p, g: the parameter and its gradient, same shape; p is updated in place
    - m, v: the running averages of g and g^2 (zeros before the first step), updated in place
    - t: the number of this step, counting from 1 (the bias correction divides by 1 - b^t)
    - lr, betas = (b1, b2), eps, weight_decay: the hyperparameters
    - scratch: unused here (the fast twin computes in it)

    Returns None. Python floats keep the arrays' dtype: float32 stays float32.
    """
    b1, b2 = betas
    if weight_decay and decays(p):
        p *= 1 - lr * weight_decay  # decoupled: the decay never enters m or v
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    m_hat = m / (1 - b1**t)  # bias correction: m and v start at 0, so early on they are too small
    v_hat = v / (1 - b2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
