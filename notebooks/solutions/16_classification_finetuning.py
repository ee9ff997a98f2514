# Solutions for notebooks/16_classification_finetuning.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_classifier_backward
def my_classifier_backward(dlogits, cache):
    """Backward pass of the classification head.

    Inputs:
    - dlogits: (B, K) upstream gradient of the class scores
    - cache: (h_shape, lengths, last, w) from layers.classifier_forward(h, lengths, w, b):
      h_shape = (B, T, C), lengths int (B,) the real lengths (in [1, T]),
      last (B, C) = h[b, lengths[b] - 1] (the rows the head read), w (C, K)

    Returns (dh, dw, db) with the shapes of h (B, T, C), w (C, K) and b (K,).
    """
    h_shape, lengths, last, w = cache
    # The forward pass read one position per sequence, lengths[b] - 1: every other entry of h
    # (the earlier tokens and the padding) did not touch the loss, so its gradient is 0.
    dh = np.zeros(h_shape, dtype=dlogits.dtype)  # (B, T, C)
    # logits = last @ w + b is a linear layer on the gathered rows: d(last) = dlogits @ w.T,
    # scattered back to where each row came from (one position per sequence: no collisions,
    # so plain fancy-index assignment is right here, unlike the embedding's np.add.at).
    dh[np.arange(h_shape[0]), lengths - 1] = dlogits @ w.T
    dw = last.T @ dlogits  # (C, K): sums over the batch through the product
    db = dlogits.sum(axis=0)  # (K,): b is added to every sequence's logits
    return dh, dw, db

# %% mean_pooling
# **Padding.** With mean pooling, $\bar h_b = \frac{1}{\ell_b} \sum_{t < \ell_b} h_{b,t}$:
# the mean must run over the real tokens only (divide by $\ell_b$, not $T$, and leave the
# padded positions out). Then padding still changes nothing, because every real position
# still sees only real tokens before it. Averaging over all $T$ positions would mix padding in.
#
# **Backward.** Each real position gets an equal share, $dh_{b,t} = \frac{1}{\ell_b}
# (\text{dlogits}_b W^\top)$ for $t < \ell_b$ and 0 on the padding, instead of the whole
# gradient at a single position.
#
# **Which is better.** In a causal GPT the early positions have seen little of the text
# (position 0 one character), so their states say little about the whole; the mean dilutes
# the last, fully informed state with them. After *full* fine-tuning the model can learn to
# put the answer into the last state, and the last token usually wins or ties (it is what
# GPT-2's sequence classifier uses). With the body *frozen*, the mean can do better: the last
# state of a model pretrained to predict the next character is mostly about that next
# character, while a mean over all positions averages out such local detail and keeps what
# the whole window shares (its vocabulary, hence its topic), a better input for a linear
# probe.
