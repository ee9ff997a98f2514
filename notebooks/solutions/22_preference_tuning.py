# Solutions for notebooks/22_preference_tuning.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_dpo_loss_forward
def my_dpo_loss_forward(logp_c, logp_r, ref_c, ref_r, beta):
    """The DPO loss, forward.

    Inputs:
    - logp_c, logp_r: (B,) the policy's sequence log-probabilities of the chosen and the
      rejected responses
    - ref_c, ref_r: (B,) the same under the frozen reference model
    - beta: a number > 0

    Returns (loss, cache): loss a single number, the mean over the B pairs of -log sigmoid(h);
    cache what the backward needs
    """
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))  # (B,) the margins
    # -log sigmoid(h) = log(1 + exp(-h)) = softplus(-h); logaddexp never overflows
    loss = np.logaddexp(0, -h).mean()
    return loss, (h, beta)

# %% my_dpo_loss_backward
def my_dpo_loss_backward(dloss, cache):
    """The DPO loss, backward.

    Inputs:
    - dloss: the upstream gradient of the loss (a number; not always 1)
    - cache: what my_dpo_loss_forward returned

    Returns (dlogp_c, dlogp_r, dref_c, dref_r), each (B,)
    """
    h, beta = cache
    # d/dh [-log sigmoid(h)] = -(1 - sigmoid(h)) = -sigmoid(-h); sigmoid(-h) computed from
    # exp(-|h|), which cannot overflow
    e = np.exp(-np.abs(h))
    sig_neg = np.where(h >= 0, e / (1 + e), 1 / (1 + e))  # sigmoid(-h)
    dh = -sig_neg * dloss / len(h)  # (B,) the 1/B of the mean
    # h = beta (logp_c - ref_c - logp_r + ref_r): each input's sign in h, times beta
    return beta * dh, -beta * dh, -beta * dh, beta * dh

# %% near_misses_and_displacement
# **Weaker, most likely.** Displacement comes from the overlap of the two responses. Where they
# share a prefix, the pushes cancel, and all the gradient lands on the few characters where a
# near miss differs. Those are the same characters, in almost the same contexts, that the
# chosen answer needs (a 零, a 十, a digit after 一万): pushing them down in the rejected row
# pushes down what the chosen row relies on, and the model's easiest way to widen the gap is
# to make numerals of this kind less likely altogether. An unrelated rejected answer (三百
# for "ten thousand fifty") shares little with the chosen one from its first character on.
# Lowering it does not need to touch what writes 一万零五十, so the chosen answer's
# log-probability is under less pressure, and often rises.
#
# **What it would teach.** Very little. The model already gives 三百 a tiny probability for
# "ten thousand fifty", so its margin is large from the start, sigmoid(-h) is small and the
# gradient fades at once: the pair is "ranked right" before training. Such pairs tell the
# model what it already knows. The near misses are the informative pairs precisely because the
# model confuses them, and the same closeness that makes them informative makes them
# dangerous. Hence the NLL term (hold the chosen answers up while separating them from the
# near misses) and the dev split (measure the task, not the preference accuracy).
