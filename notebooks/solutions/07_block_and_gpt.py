# Solutions for notebooks/07_block_and_gpt.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

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
# two terms (notebook 04) and the residual stream $dx = dout + df_{dx}$ (section 2). An average
# would be half the true gradient; keeping the larger part would be a different function's
# gradient. The whole-model gradient check of section 5 catches either mistake.
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
