# Solutions for notebooks/17_instruction_tuning.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_sequence_mean_ce_backward
def my_sequence_mean_ce_backward(dloss, cache):
    """Gradient of the per-sequence mean cross-entropy (sequence_mean_ce_forward).

    Inputs:
    - dloss: the upstream gradient of the scalar loss (a number; not always 1)
    - cache: (probs, targets): probs (B, T, V) the softmax of the logits, targets int (B, T)
      with -1 where the target is ignored (prompt, padding); every sequence has at least one
      counted target

    Returns dlogits (B, T, V).
    """
    probs, targets = cache
    B = targets.shape[0]
    # The loss is a weighted sum of per-row cross-entropies: a counted row of sequence b enters
    # with weight 1 / (B n_b) (the mean over its n_b targets, then the mean over the B
    # sequences); a row whose target is -1 does not enter at all (weight 0). Each row's own
    # gradient is p - onehot(y), as in notebook 06.
    valid = targets != -1  # (B, T)
    n = valid.sum(axis=1, keepdims=True)  # (B, 1) counted targets per sequence
    dz = probs.copy()  # (B, T, V)
    b, t = np.nonzero(valid)
    dz[b, t, targets[b, t]] -= 1  # p - onehot(y) on the counted rows
    weight = valid * (dloss / (B * n))  # (B, T): 1 / (B n_b), and 0 on ignored rows
    # dloss / (B n) is float64: cast the weights, so that float32 probs give float32 dlogits
    return dz * weight[..., None].astype(dz.dtype)

# %% token_vs_sequence_mean
# **Here.** A cut answer fills the context, so it has many counted targets (20 or more
# characters); a short whole answer has few (a short summary plus the end marker). The token
# mean gives every counted character the weight $1/N$: a long cut answer weighs many times a
# short one. The sequence mean gives every example the same total weight $1/B$, spread over
# its own characters: the short, whole answers count as much as the long, cut ones.
#
# **Ending answers.** The end marker is a target only in the answers that fit whole; a cut
# answer has none (it does not end there). With the token mean, the end-marker targets are a
# tiny share of the loss (two characters among the hundreds of a batch's cut answers), so the
# model learns to stop late and rarely. The sequence mean raises their share: each short
# whole example, end marker included, weighs as much as a long one. It should make the model
# better at stopping, at the price of learning the first words of long answers a little less.
#
# **GPT-2 on Alpaca.** Nothing is cut there, but answers still range from one word to a page.
# The token mean favours long answers: a page-long answer contributes hundreds of times the
# gradient of a one-word one, so the model learns mostly how to write long texts, and its
# training signal is dominated by a few long examples. The sequence mean favours the many
# short examples: every instruction counts once, whatever the answer's length, but each token
# of a long answer gets little weight, so long-form writing is learned less well. Most code
# (Alpaca's, Hugging Face's trainers) uses the token mean; some recipes (and the per-sample
# losses of preference methods) average per sequence. Which is better depends on what you want
# the model to be good at.
