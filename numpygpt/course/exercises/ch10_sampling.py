"""Notebook 10 (sampling): the top-p (nucleus) filter."""

import numpy as np

from .checking import Case, run, variant


def reference_top_p_filter(probs, top_p):
    """Nucleus filter: probs (B, V), rows summing to 1 -> (B, V) with every token outside the
    smallest set of most likely tokens whose mass is >= top_p set to 0, rows renormalised."""
    order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p  # mass before it < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    out = np.where(keep, probs, 0.0)
    return out / out.sum(axis=-1, keepdims=True)


def _top_p_ref(probs, top_p, keep_crossing=True, renorm=True, ascending=False):
    order = np.argsort(probs if ascending else -probs, axis=-1, kind="stable")
    sp = np.take_along_axis(probs, order, -1)
    before = np.cumsum(sp, -1) - sp  # mass of the more likely tokens
    keep_sorted = before < top_p if keep_crossing else np.cumsum(sp, -1) < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    out = np.where(keep, probs, 0.0)
    return out / out.sum(-1, keepdims=True) if renorm else out


TOP_P_MISTAKES = [
    ("nucleus excludes the token that crosses top_p: keep tokens until the sum *reaches* "
     "top_p, the crossing one included", variant(_top_p_ref, keep_crossing=False)),
    ("not renormalised: the kept probabilities must sum to 1 again",
     variant(_top_p_ref, renorm=False)),
    ("sorted in ascending order: the nucleus holds the *most* likely tokens",
     variant(_top_p_ref, ascending=True)),
    ("the kept probabilities were not put back in vocabulary order (still sorted)",
     lambda p, t: -np.sort(-_top_p_ref(p, t), -1)),
]


def check_top_p_filter(fn, show=True):
    """fn(probs, top_p) -> probs with everything outside the nucleus set to 0 and the rest
    renormalised; probs is (B, V), the nucleus is the smallest set of most likely tokens whose
    probability sums to >= top_p."""
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.05, 0.8, 0.1, 0.05]])
    case = Case((probs, 0.75), ("probs",), (reference_top_p_filter(probs, 0.75),),
                arg_names=("probs", "top_p"))
    return run("top-p (nucleus) filter (top_p=0.75)", fn, [case], TOP_P_MISTAKES, {
        "probs": "sort each row, keep the most likely tokens until their sum reaches top_p"},
        show)
