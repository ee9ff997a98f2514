# Solutions for notebooks/20_gpt2_to_llama.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_rmsnorm_backward
def my_rmsnorm_backward(dout, cache):
    """Backward pass of y = w * x * rstd, rstd = 1 / sqrt(mean(x^2) + eps).

    Inputs:
    - dout: (B, T, C) upstream gradient
    - cache: (x, rstd, w) from layers.rmsnorm_forward: x (B, T, C), rstd (B, T, 1), w (C,)

    Returns (dx, dw) with the shapes of x and w.
    """
    x, rstd, w = cache
    xhat = x * rstd  # (B, T, C)
    dw = (dout * xhat).reshape(-1, x.shape[-1]).sum(axis=0)  # w is used at every position
    g = dout * w  # the gradient reaching xhat
    # dx_i = r g_i - (r^3 x_i / C) sum_j g_j x_j = r (g_i - xhat_i mean_j(g_j xhat_j)):
    # the direct path, minus the part of g along xhat (which would only change the scale)
    dx = rstd * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dw

# %% why_8_kv_heads
# With one key/value head per layer, every query head must find what it needs in the *same*
# keys and read the *same* values: all heads share one subspace of "what is here" and "what to
# pass on". Quality drops measurably (the GQA paper found multi-query attention noticeably worse
# than multi-head, and grouped attention with 8 groups almost as good as multi-head), and
# training is less stable. 8 groups keep most of the expressiveness while the cache is still 8
# times smaller than with 64 heads.
#
# The second reason is hardware: a 70B model is split over several GPUs by heads (tensor
# parallelism, usually 8 GPUs). With 8 key/value heads each GPU holds exactly one, with its
# group of query heads; with a single key/value head it would have to be copied to every GPU,
# and the cache saving per GPU would be gone.
