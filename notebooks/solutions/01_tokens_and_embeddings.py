# Solutions for notebooks/01_tokens_and_embeddings.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_embedding_backward
def my_embedding_backward(dout, cache):
    """Backward pass of the lookup out = wte[idx].

    Inputs:
    - dout: (B, T, C) upstream gradient dL/dout
    - cache: (idx, wte_shape, dtype, padding_idx) from embedding_forward;
      idx (B, T) integer ids, wte_shape = (V, C), padding_idx an id or None

    Returns: dwte, (V, C) of dtype `dtype`: dL/dwte
    """
    idx, wte_shape, dtype, padding_idx = cache
    C = wte_shape[1]
    dwte = np.zeros(wte_shape, dtype=dtype)                    # (V, C)
    # every position adds its gradient to the row it read; np.add.at is unbuffered, so an id
    # that occurs k times receives all k contributions (dwte[idx] += dout would keep only one)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, C))
    if padding_idx is not None:
        dwte[padding_idx] = 0                                  # the padding row learns nothing
    return dwte

# %% one_hot_cost
# With $B T = 8 \cdot 1024 = 8192$ positions:
#
# - the lookup copies $B T C = 8192 \cdot 768 \approx 6.3$ million numbers;
# - $\text{onehot}(\text{idx})\, W$ is a $(8192, 50257) \times (50257, 768)$ product:
#   $8192 \cdot 50257 \cdot 768 \approx 3.2 \times 10^{11}$ multiply-adds, that is
#   $V C \approx 38.6$ million per token, all but one in $V$ of them multiplications by zero;
# - the one-hot matrix itself has $8192 \cdot 50257 \approx 4.1 \times 10^8$ entries: 1.6 GB in
#   float32, for one batch.
#
# So the one-hot form would add about a third to the arithmetic of the whole forward pass
# (roughly 124 million multiply-adds per token), and about as much again to the backward pass
# ($O^\top d\text{out}$), to produce what a copy of 6.3 million numbers gives. That is why every
# framework implements the embedding as a lookup and its backward as a scatter-add.
#
# Note the contrast with the top of the model: the LM head `ln_f(x) @ wte.T` *is* a
# $(BT, C) \times (C, V)$ product, $V C$ multiply-adds per token, and it cannot be avoided,
# because the softmax needs a score for every token of the vocabulary. The embedding only needs
# one row per token.

# %% padding_enough
# Two more things, and the second depends on where the padding goes.
#
# **The loss.** Every position whose *target* is padding must not count: otherwise the model is
# trained to predict "padding" after the end of every short sentence, and those positions add
# gradient to every weight. That is the post's `CrossEntropyLoss(ignore_index=padding_idx)`; in
# `numpygpt`, targets equal to `-1` are ignored (notebook 06).
#
# **Attention.** With padding *at the end*, a causal GPT needs nothing more: a real token only
# attends to the positions before it, which are all real, so its output does not depend on the
# padding at all. The padded positions are computed (wasted work) but their targets are ignored.
#
# With padding *at the start*, every real token attends back to the padding positions, so the
# padding vectors (the padding row of `wte` plus the position vectors) leak into every real
# position's output. Freezing the padding row does not stop that: attention also needs a mask
# on the padding *keys* (score $-\infty$, weight 0, the same trick as the causal mask). And the
# real text then starts at a different position in every sequence, so learned position vectors
# see it at offsets that depend on the padding; that is why left padding usually comes with
# position ids that skip the padding.
