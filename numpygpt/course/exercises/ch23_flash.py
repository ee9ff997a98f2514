"""Notebook 23 (flash attention): one step of the online softmax."""

import numpy as np

from .checking import Case, randn, run


def reference_online_softmax_step(m, l, acc, s, v):
    """Fold one block of keys into the running state of a block of query rows.

    Inputs:
    - m: (n, 1) running max of each row's scores so far (-inf before the first block)
    - l: (n, 1) running sum of exp(score - m) so far
    - acc: (n, hs) running sum of exp(score - m) * value so far (not yet divided by l)
    - s: (n, K) the new block's scores (-inf where the mask hides a key)
    - v: (K, hs) the new block's values

    Returns (m_new, l_new, acc_new), with acc_new / l_new the softmax-weighted average of every
    value seen so far.
    """
    m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # (n, 1)
    alpha = np.exp(m - m_new)  # (n, 1): the old sums were relative to m
    p = np.exp(s - m_new)  # (n, K)
    return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ v


def _step(m, l, acc, s, v, rescale_l=True, rescale_acc=True, alpha_sign=1, exp_old_max=False,
          normalise=False, max_block_only=False):
    """reference_online_softmax_step with one thing switched off (a catalogued mistake)."""
    block_max = s.max(axis=-1, keepdims=True)
    m_new = block_max if max_block_only else np.maximum(m, block_max)
    with np.errstate(invalid="ignore", over="ignore"):
        alpha = np.exp(alpha_sign * (m - m_new))
        alpha = np.where(np.isnan(alpha), 0.0, alpha)  # -inf - -inf in the first block
        p = np.exp(s - (m if exp_old_max else m_new))
    l_new = (alpha * l if rescale_l else l) + p.sum(axis=-1, keepdims=True)
    acc_new = (alpha * acc if rescale_acc else acc) + p @ v
    return m_new, l_new, acc_new / l_new if normalise else acc_new


def _variant(**switches):
    return lambda *args: _step(*args, **switches)


ONLINE_SOFTMAX_MISTAKES = [
    ("l was not rescaled: the old sum of exp(s - m) must be multiplied by exp(m - m_new) "
     "when the max grows", _variant(rescale_l=False)),
    ("acc was not rescaled: the output so far is a sum of exp(s - m) v, relative to the old "
     "max too, so it needs the same factor exp(m - m_new) as l", _variant(rescale_acc=False)),
    ("the rescaling factor is upside down: exp(m - m_new) <= 1 shrinks the old sums, "
     "exp(m_new - m) grows them", _variant(alpha_sign=-1)),
    ("the new block's exponentials use the old max: exp(s - m) must be exp(s - m_new), the "
     "same reference as the rescaled sums", _variant(exp_old_max=True)),
    ("m_new is the block's max alone: it must be max(m, the block's max), or a block with "
     "smaller scores lowers the running max", _variant(max_block_only=True)),
    ("acc was divided by l: keep acc unnormalised while blocks come; divide once at the end",
     _variant(normalise=True)),
]


def _state(rng, n, hs, seen):
    """A running state after `seen` keys of random scores (seen = 0: the empty start)."""
    if seen == 0:
        return np.full((n, 1), -np.inf), np.zeros((n, 1)), np.zeros((n, hs))
    s, v = randn(rng, n, seen, scale=2.0), randn(rng, seen, hs)
    return reference_online_softmax_step(np.full((n, 1), -np.inf), np.zeros((n, 1)),
                                         np.zeros((n, hs)), s, v)


def _case(args, label, dtype=np.float64):
    args = tuple(a.astype(dtype) for a in args)
    wide = tuple(a.astype(np.float64) for a in args)
    return Case(args, ("m_new", "l_new", "acc_new"), reference_online_softmax_step(*wide), label,
                arg_names=("m", "l", "acc", "s", "v"), strict_dtype=False,
                after_pass=dtype != np.float64)


def check_online_softmax_step(fn, show=True):
    """fn(m, l, acc, s, v) -> (m_new, l_new, acc_new): one block of keys folded into the
    running max, sum and output of a block of query rows. Tried on a block whose scores
    are larger than those seen so far in some rows and smaller in others (so the max moves
    for some rows only), on the first block (m = -inf, l = 0, acc = 0), on a block with
    masked keys (-inf scores, one row masked entirely), then in float32."""
    rng = np.random.default_rng(23)
    n, hs, K = 4, 3, 5
    m, l, acc = _state(rng, n, hs, 6)
    s = randn(rng, n, K, scale=2.0)
    s[0] += 4.0  # row 0's max jumps: its old sums must shrink
    s[1] -= 4.0  # row 1's max stays
    first = _state(rng, n, hs, 0)
    masked = randn(rng, n, K, scale=2.0)
    masked[2, 3:] = -np.inf  # the future of row 2
    masked[3] = -np.inf  # row 3 sees none of these keys: it keeps its state
    m2, l2, acc2 = _state(rng, n, hs, 4)
    cases = [_case((m, l, acc, s, randn(rng, K, hs)), "n=4 rows, K=5 keys"),
             _case((*first, randn(rng, n, K, scale=2.0), randn(rng, K, hs)),
                   "the first block: m=-inf, l=0, acc=0"),
             _case((m2, l2, acc2, masked, randn(rng, K, hs)), "masked keys (-inf scores)"),
             _case((m, l, acc, s, randn(rng, K, hs)), "float32", np.float32)]
    return run("online softmax step", fn, cases, ONLINE_SOFTMAX_MISTAKES, {
        "m_new": "the largest score of the row so far, this block included",
        "l_new": "sum of exp(score - m_new) over every key seen so far",
        "acc_new": "sum of exp(score - m_new) * value over every key seen so far",
    }, show)
