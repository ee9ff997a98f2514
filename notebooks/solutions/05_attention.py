# Solutions for notebooks/05_attention.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_softmax_backward
def my_softmax_backward(p, dp):
    """Backward pass of p = softmax(s), taken along the last axis.

    Inputs:
    - p: (..., N) softmax probabilities; every row sums to 1
    - dp: (..., N) upstream gradient dL/dp

    Returns: ds, (..., N), the gradient dL/ds of the scores
    """
    # dp_i/ds_j = p_i (delta_ij - p_j), so ds_j = sum_i dp_i p_i (delta_ij - p_j)
    #                                           = p_j (dp_j - sum_i dp_i p_i)
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))

# %% key_bias_gradient
# With the biases, the score of query $t$ and key $s$ is
#
# $$\frac{(q_t + b_q)\cdot(k_s + b_k)}{\sqrt{h_s}}
# = \frac{(q_t + b_q)\cdot k_s}{\sqrt{h_s}} + \underbrace{\frac{(q_t + b_q)\cdot b_k}{\sqrt{h_s}}}_{c_t},$$
#
# where $q_t, k_s$ are the projections without bias. The term $c_t$ depends on the query $t$
# but not on the key $s$: it shifts the whole row $t$ of scores by the same amount (the masked
# entries stay $-\infty$). Softmax ignores such a shift,
# $e^{s_j + c} / \sum_k e^{s_k + c} = e^{s_j} / \sum_k e^{s_k}$, so the probabilities, and
# everything after them, do not depend on $b_k$. Its true gradient is exactly 0.
#
# In the backward pass: $db_k = \sum_{t,s} ds_{ts}\, \partial\text{score}_{ts}/\partial b_k
# = \sum_t \frac{q_t + b_q}{\sqrt{h_s}} \sum_s ds_{ts}$ (per head and batch element), and every
# row of $ds$ sums to 0 (the second property of the softmax backward pass). So the analytic
# $db_k$ is a sum of terms that cancel: 0 up to rounding, ~1e-16.
#
# The query bias adds $b_q \cdot k_s / \sqrt{h_s}$, which *does* depend on $s$ (the keys differ
# from position to position): it changes which keys win, so it has a real gradient. Only a
# term that is the same for every key of a row drops out.

# %% my_attention_backward
def my_attention_backward(dout, cache):
    """Backward pass of causal multi-head self-attention (L.attention_forward, no dropout).

    Inputs:
    - dout: (B, T, C) upstream gradient dL/dout
    - cache: the AttentionCache of L.attention_forward:
      qkv_cache   (x, w_attn), the cache of the c_attn linear layer
      q, k, v     (B, nh, T, hs) each, the projections split into heads (q not scaled)
      probs       (B, nh, T, T) the attention probabilities
      drop_mask   None (no attention dropout here)
      proj_cache  (y, w_proj), the cache of the c_proj linear layer; y (B, T, C)

    Returns: (dx, dw_attn, db_attn, dw_proj, db_proj) with shapes
    (B, T, C), (C, 3C), (3C,), (C, C), (C,)
    """
    B, nh, T, hs = cache.q.shape
    assert cache.drop_mask is None, "this version has no attention dropout"
    dy, dw_proj, db_proj = L.linear_backward(dout, cache.proj_cache)   # (B, T, C)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)                 # (B, nh, T, hs)
    dv = cache.probs.swapaxes(-1, -2) @ dy                              # (B, nh, T, hs)
    dp = dy @ cache.v.swapaxes(-1, -2)                                  # (B, nh, T, T)
    dscores = softmax_backward(cache.probs, dp)                         # (B, nh, T, T)
    # scores = q k^T / sqrt(hs); hs ** 0.5 is a Python float, which keeps float32 in float32
    draw = dscores / hs ** 0.5                                          # (B, nh, T, T)
    dq = draw @ cache.k                                                 # (B, nh, T, hs)
    dk = draw.swapaxes(-1, -2) @ cache.q                                # (B, nh, T, hs)
    dqkv = np.stack([dq, dk, dv])                                       # (3, B, nh, T, hs)
    dqkv = dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)     # (B, T, 3C)
    dx, dw_attn, db_attn = L.linear_backward(dqkv, cache.qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj

# %% value_bias
# Adding $b_v$ to every value $v_s$ adds it to every head output, because each row of
# probabilities sums to 1:
#
# $$y_t = \sum_{s \le t} p_{ts}(v_s + b_v) = \sum_{s \le t} p_{ts} v_s + b_v .$$
#
# (Per head, $b_v$ is that head's slice; side by side the heads give the full $b_v$ of size
# $C$.) Then $\text{out}_t = y_t W_{proj} + b_{proj}$ gains $b_v W_{proj}$, the same vector at
# every position: exactly what replacing $b_{proj}$ by $b_{proj} + b_v W_{proj}$ would do.
#
# So the two biases are redundant, and their gradients are tied:
# $db_{proj} = \sum_t dout_t$ and $db_v = \sum_t dy_t = \big(\sum_t dout_t\big) W_{proj}^\top
# = db_{proj}\, W_{proj}^\top$. GPT-2 keeps $b_v$ only because `c_attn` is one linear layer with
# one bias for $q$, $k$ and $v$; a model could drop $b_v$ (fold it into $b_{proj}$) and the key
# bias (it does nothing, see the previous question) without changing a single output.
#
# With attention dropout the kept probabilities are rescaled by $1/(1-p)$ and a row no longer
# sums to exactly 1 during training, so $b_v$ then adds a random multiple of itself: the
# equivalence is exact only without dropout (at evaluation time).
