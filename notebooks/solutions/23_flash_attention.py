# Solutions for notebooks/23_flash_attention.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_online_softmax_step
def my_online_softmax_step(m, l, acc, s, v):
    """Fold one block of keys into the running softmax state of n query rows.

    Inputs:
    - m: (n, 1) running max of each row's scores (-inf before the first block)
    - l: (n, 1) running sum of exp(score - m)
    - acc: (n, hs) running sum of exp(score - m) * value (not divided by l)
    - s: (n, K) the block's scores (-inf where the mask hides a key)
    - v: (K, hs) the block's values

    Returns (m_new, l_new, acc_new).
    """
    m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # (n, 1) the new reference
    # exp(s_j - m_new) = exp(s_j - m) exp(m - m_new): one factor <= 1 moves every old term to
    # the new reference (0 in the first block, where m = -inf)
    alpha = np.exp(m - m_new)
    p = np.exp(s - m_new)  # (n, K) the block's terms, already relative to m_new
    l_new = alpha * l + p.sum(axis=-1, keepdims=True)
    acc_new = alpha * acc + p @ v  # (n, hs)
    return m_new, l_new, acc_new

# %% flash_backward_loop_order
# With key blocks outside, one key block's dK and dV stay in fast memory (a GPU's shared memory
# or registers) while every query block below it passes by: they are written once, at the end,
# and the thread block that owns the key block is the only one writing them. What is shared is
# dQ: every key block adds a part to the dQ of each query block, so parallel thread blocks must
# add into it with atomic additions (or write parts and sum them later). With query blocks
# outside it is the other way round: dQ stays local and dK, dV need the atomic sums. FlashAttention-2
# chooses key blocks outside because there are two key-side gradients (dK and dV) against one
# query-side (dQ), so fewer sums cross between thread blocks.
#
# In NumPy there is one thread and no fast memory we control: both orders do the same
# arithmetic, and `+=` into a slice of dK or dQ costs the same either way. The order here
# (queries outside) lets each query block draw its dropout rows once and reuse them for every
# key block, the same order as the forward.
