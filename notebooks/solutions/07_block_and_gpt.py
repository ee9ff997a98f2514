# Solutions for notebooks/07_block_and_gpt.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_dropout_forward
def my_dropout_forward(x, p, rng):
    """Inverted dropout, forward.

    Inputs:
    - x: array of any shape
    - p: the probability to drop an element, in [0, 1); p = 0 is evaluation (the identity)
    - rng: np.random.Generator that draws the mask

    Returns (out, cache): out has x's shape and dtype; cache is what the backward needs
    """
    if p == 0:
        return x.copy(), None                                  # evaluation: nothing to draw
    keep = rng.random(x.shape, dtype=x.dtype) >= p             # True with probability 1 - p
    mask = keep * x.dtype.type(1 / (1 - p))                    # 0 or 1/(1-p): E[mask] = 1
    return x * mask, mask                                      # the backward needs this mask

# %% my_dropout_backward
def my_dropout_backward(dout, cache):
    """Inverted dropout, backward.

    Inputs:
    - dout: upstream gradient, the shape of the forward's output
    - cache: what my_dropout_forward returned with the output

    Returns: dx, the shape of dout
    """
    mask = cache
    if mask is None:                                           # p = 0: out = x, so dx = dout
        return dout.copy()
    # out_i = x_i * mask_i depends on x_i alone, with the factor the forward drew
    return dout * mask

# %% my_block_backward
def my_block_backward(dx_out, cache, grads):
    """Backward pass of one transformer block (GPT.block_forward).

    Inputs:
    - dx_out: (B, T, C) gradient of the block's output x_out
    - cache: the block's BlockCache: the cache of each layer's forward, under the names of
      the forward listing above (cache.ln_1, cache.c_attn, cache.attn, cache.c_proj,
      cache.attn_drop, cache.ln_2, cache.c_fc, cache.gelu, cache.mlp_proj, cache.mlp_drop)
    - grads: a dict; store the gradient of each of the block's 12 parameters in it, under
      "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", ..., "mlp.c_proj.bias"

    Returns: dx_in, (B, T, C), the gradient of the block's input
    """
    # x_out = x_mid + drop(mlp(ln_2(x_mid))): the last step of the forward comes first
    dm = L.dropout_backward(dx_out, cache.mlp_drop)
    dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = L.linear_backward(dm, cache.mlp_proj)
    dh = L.gelu_backward(dg, cache.gelu)
    dln2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = L.linear_backward(dh, cache.c_fc)
    d_branch, grads["ln_2.weight"], grads["ln_2.bias"] = L.layernorm_backward(dln2, cache.ln_2)
    dx_mid = dx_out + d_branch                                 # the skip, plus the MLP branch
    # x_mid = x_in + drop(attn(ln_1(x_in))): the attention branch gets dx_mid
    da = L.dropout_backward(dx_mid, cache.attn_drop)
    dy, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = L.linear_backward(da, cache.c_proj)
    dqkv = L.attention_core_backward(dy, cache.attn)
    dln1, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = L.linear_backward(dqkv, cache.c_attn)
    d_branch, grads["ln_1.weight"], grads["ln_1.bias"] = L.layernorm_backward(dln1, cache.ln_1)
    return dx_mid + d_branch                                   # the skip, plus the attention branch

# %% my_lm_head_backward
def my_lm_head_backward(dlogits, cache):
    """Backward pass of the tied LM head: logits = x @ wte.T (no bias).

    Inputs:
    - dlogits: (B, T, V) upstream gradient dL/dlogits
    - cache: (x, wte); x (B, T, C) is the output of ln_f, wte (V, C) the token embedding

    Returns: (dx, dwte) with shapes (B, T, C) and (V, C); dwte is the head's part only
    """
    x, wte = cache
    V, C = wte.shape
    # x[b, t, c] appears in every logit of its position, with factor wte[v, c]
    dx = dlogits @ wte                                          # (B, T, V) @ (V, C) -> (B, T, C)
    # wte[v, c] appears in logit v of every position, with factor x[b, t, c]: sum over (b, t)
    dwte = dlogits.reshape(-1, V).T @ x.reshape(-1, C)          # (V, N) @ (N, C) -> (V, C)
    return dx, dwte

# %% wte_two_uses
# Think of the loss as a function of two arguments, $\mathcal{L}(a, b)$, where $a$ is the matrix
# the lookup reads and $b$ the one the head reads; the tied model evaluates it at
# $a = b = \text{wte}$. Nudge one entry of the shared $\text{wte}$ by $\epsilon$: both $a$ and
# $b$ move by $\epsilon$, and to first order the loss changes by
#
# $$\epsilon\,\frac{\partial\mathcal{L}}{\partial a} + \epsilon\,\frac{\partial\mathcal{L}}{\partial b},$$
#
# the two effects add. That is the multivariable chain rule: the gradient with respect to a
# shared value is the sum over its uses, the same rule that made the layer norm's $x$ collect
# two terms (notebook 04) and the residual stream $dx = dout + df_{dx}$ (section 3). An average
# would be half the true gradient; keeping the larger part would be a different function's
# gradient. The whole-model gradient check of section 7 catches either mistake.
#
# If training kept only the head's part, the input side of `wte` would never be trained: the
# embedding rows would follow what the output layer wants, and the lookup's own signal (what
# the blocks need from each token's input vector) would be lost. Untied models (two separate
# matrices) give each matrix one of the two terms; tying them forces the matrices to be equal,
# and then the gradient of the one shared copy is the sum of both.

# %% my_param_count
def my_param_count(cfg):
    """The number of parameters of a GPT, from its config alone.

    Inputs:
    - cfg: a GPTConfig with vocab_size, block_size, n_layer, n_head, n_embd and pos_encoding
      ("learned" or "sinusoidal")

    Returns: the number of parameters, an int
    """
    C, V = cfg.n_embd, cfg.vocab_size
    per_block = (2 * 2 * C                                     # ln_1, ln_2: weight + bias
                 + C * 3 * C + 3 * C                           # attn.c_attn
                 + C * C + C                                   # attn.c_proj
                 + C * 4 * C + 4 * C                           # mlp.c_fc
                 + 4 * C * C + C)                              # mlp.c_proj; 12C^2 + 13C in all
    wpe = cfg.block_size * C if cfg.pos_encoding == "learned" else 0   # sinusoidal: computed
    return V * C + wpe + cfg.n_layer * per_block + 2 * C      # wte stored once, + ln_f

# %% memorised_batch
# No. It has memorised these few sequences: the model has tens of thousands of parameters
# (30,016 in fast mode, 110,208 with the full settings) and was trained on 32 or 128 targets,
# always the same ones. With that many more parameters than constraints it can store the answers
# without learning anything that carries over to other text.
#
# On a batch it has never seen, the loss is not just higher than on the memorised batch, it is
# higher than the uniform guess: in our runs about 6.7 (full settings) and 8.9 (fast mode)
# against $\ln V = 4.84$. Training drove the model to put nearly all the probability on the
# memorised continuations, so on new text it is *confidently wrong*, and cross-entropy punishes
# confidence in the wrong token without limit (notebook 06's left plot).
#
# That is why this run is a test of the code, not a training recipe: it shows that the gradients
# and the optimiser can drive the loss to 0. Real training (notebook 09) draws a fresh batch at
# every step and watches the loss on held-out validation text; notebook 15 shows what happens
# when the validation loss turns up while the training loss keeps falling (overfitting).
