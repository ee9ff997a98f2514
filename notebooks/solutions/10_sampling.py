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

# %% my_cached_attention_step
def my_cached_attention_step(q, k, v, past_k, past_v):
    """Causal attention for one new token, with the keys and values of the earlier tokens
    from a cache.

    Inputs:
    - q, k, v: (B, nh, 1, hs) the new token's query, key and value (every head)
    - past_k, past_v: (B, nh, T_past, hs) the cached keys and values of the T_past earlier
      tokens, in time order (T_past may be 0)

    Returns (y, k_all, v_all):
    - y: (B, nh, 1, hs) the new token's attention output
    - k_all, v_all: (B, nh, T_past + 1, hs) the cache with the new token appended
    """
    k_all = np.concatenate([past_k, k], axis=2)            # (B, nh, T, hs): time is axis 2
    v_all = np.concatenate([past_v, v], axis=2)
    # the new token is the last position: every key is at or before it, so no mask
    scores = q @ k_all.swapaxes(-1, -2) / q.shape[-1] ** 0.5    # (B, nh, 1, T)
    scores = scores - scores.max(axis=-1, keepdims=True)
    att = np.exp(scores)
    att /= att.sum(axis=-1, keepdims=True)                 # softmax over the T keys
    return att @ v_all, k_all, v_all                       # y (B, nh, 1, hs)

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

# %% kv_cache_window
# Because the cached keys and values would no longer be the ones the model computes for the
# new window. Two things change when the oldest token leaves.
#
# **The positions.** Our model adds a learned position vector to each token at the bottom,
# $x_t = \text{wte}[\text{idx}_t] + \text{wpe}[t]$. When the window slides, every token moves
# one place to the left, so its input vector changes, and with it its query, key and value in
# the first layer and everything above.
#
# **The context of the deeper layers.** Even without positions, a key in layer 2 is computed
# from a hidden state that attended, in layer 1, to every earlier token of the window,
# including the one that just left. In the new window that token is gone, so the hidden state,
# and the key, would come out differently. Only the first layer's keys and values depend on
# the token alone (and its position).
#
# So an exact cache cannot survive a slide; `generate` starts over from the last
# `block_size` tokens at every step instead. Models that do keep a sliding cache (Mistral's
# rolling buffer, for example) are built for it: their positions enter through a rotation of
# the queries and keys (RoPE, notebook 20), which depends only on the *distance* between two
# tokens, so a stored key needs no update when the window moves; and they are trained with
# sliding-window attention, so that "each key as it was computed when its token was new" is
# the model's own definition, not an approximation of it.
