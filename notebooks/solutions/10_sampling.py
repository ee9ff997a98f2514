# Solutions of notebook 10_sampling: each block replaces the exercise cell of the same name,
# or answers the open question of that name.

# %% my_top_p_filter
def my_top_p_filter(probs, top_p):
    """Keep the nucleus of every row, renormalised.

    Inputs:
    - probs: (B, V) probabilities, every row sums to 1
    - top_p: float in (0, 1]

    Returns (B, V): probs with every token outside its row's nucleus set to 0, and every row
    renormalised to sum to 1.
    """
    order = np.argsort(-probs, axis=-1, kind="stable")     # (B, V) most likely first
    sorted_p = np.take_along_axis(probs, order, axis=-1)   # (B, V)
    before = np.cumsum(sorted_p, axis=-1) - sorted_p       # mass of the more likely tokens
    # A token belongs to the smallest set reaching top_p iff the tokens ranked above it do not
    # reach top_p yet: so the token that crosses top_p is kept, and the top token always is.
    keep_sorted = before < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)   # back to vocabulary order
    out = np.where(keep, probs, 0.0)
    return out / out.sum(axis=-1, keepdims=True)

# %% temperature_before_top_p
# **Top-k and the temperature commute.** Dividing the logits by $\tau > 0$ keeps their order,
# so the $k$ most likely tokens are the same set at any temperature. And the probabilities
# agree too: temperature first gives $e^{z_i/\tau} / \sum_{j \in K} e^{z_j/\tau}$ after
# renormalising over the kept set $K$; top-k first (the others set to $-\infty$) and then the
# softmax of $z/\tau$ gives exactly the same expression.
#
# **Top-p does not commute with the temperature.** The nucleus depends on how the mass is
# spread, and the temperature changes that: at $\tau < 1$ the mass piles up on the top tokens,
# so fewer of them reach $p$ and the nucleus shrinks; at $\tau > 1$ the distribution flattens
# and the nucleus grows. Top-p first would choose the set from the model's own distribution
# ($\tau = 1$) and then only reshape the probabilities inside it. Both are valid samplers, but
# different ones: with the temperature first (as here and in Hugging Face's `generate`), a
# high temperature both flattens the distribution and lets more of the tail into the nucleus.

# %% three_ways_to_greedy
# Without ties, yes: all three keep only the most likely token. $\tau \to 0$ sends all the mass
# of $\mathrm{softmax}(z/\tau)$ to the largest logit (`sample_next` treats `temperature=0` as
# `argmax`, since dividing by 0 is undefined); `top_k=1` keeps one token; a tiny `top_p` keeps
# only the first token, whose preceding mass is $0 < p$.
#
# With a tie for the top they differ. `argmax` returns the first of the tied tokens (the lower
# id). The package's top-k keeps every logit that is not below the $k$-th largest, so with
# `top_k=1` *both* tied tokens survive and each is drawn half of the time. Top-p sorts stably,
# so the lower id comes first; the second tied token has $p_{\max}$ before it, which is not
# $< p$ for a tiny $p$, so only the first is kept: the same token as `argmax`. Ties are rare
# with real logits, but they do happen (e.g. in float16, or with hand-made logits in a test).
