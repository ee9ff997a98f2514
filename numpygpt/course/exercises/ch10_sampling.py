"""Notebook 10 (sampling): the top-p (nucleus) filter, and one step of attention with a KV
cache."""

import numpy as np

from ...layers.attention import reference_heads_forward
from .ch07_gpt import named_once
from .checking import Case, run, show_report, variant


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
    ("one token too many when the running total lands exactly on top_p (kept while the mass "
     "before it is <= top_p): the smallest set whose mass is >= top_p stops at the token that "
     "reaches it", lambda p, t: _top_p_ref(p, np.nextafter(t, 2.0))),
    ("not renormalised: the kept probabilities must sum to 1 again",
     variant(_top_p_ref, renorm=False)),
    ("sorted in ascending order: the nucleus holds the *most* likely tokens",
     variant(_top_p_ref, ascending=True)),
    ("the kept probabilities were not put back in vocabulary order (still sorted)",
     lambda p, t: -np.sort(-_top_p_ref(p, t), -1)),
]


def _dyadic_rows(rng, n):
    """n rows of 6 probabilities that are sums of powers of 2 (exact in floating point, so a
    top_p can land exactly on a running total), each row in its own random order."""
    base = np.array([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125])
    return np.stack([rng.permutation(base) for _ in range(n)])


def _random_rows(rng, n, V, peaked):
    """n random probability rows of V tokens (no ties), flat or peaked."""
    logits = rng.standard_normal((n, V)) * np.where(peaked, 3.0, 0.7)[:, None]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _top_p_cases():
    """(label, probs, top_p): random rows the learner cannot guess, and the edges."""
    rng = np.random.default_rng(10)
    mixed = _random_rows(rng, 4, 12, np.array([False, True, False, True]))
    return [
        ("top_p=0.75, hand-made rows",
         np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.05, 0.8, 0.1, 0.05]]), 0.75),
        ("top_p=0.6, random rows", mixed, 0.6),
        ("top_p=0.9, random rows", _random_rows(rng, 3, 9, np.array([False, True, False])),
         0.9),
        ("top_p=1.0: every token kept", _random_rows(rng, 2, 7, np.array([False, True])), 1.0),
        ("top_p=1e-9: the most likely token alone", mixed, 1e-9),
        ("top_p=0.875, exactly a running total", _dyadic_rows(rng, 3), 0.875),
        ("top_p=0.5, exactly the top token", _dyadic_rows(rng, 2), 0.5),
    ]


def check_top_p_filter(fn, show=True):
    """fn(probs, top_p) -> probs with everything outside the nucleus set to 0 and the rest
    renormalised; probs is (B, V), the nucleus is the smallest set of most likely tokens whose
    probability sums to >= top_p. Tried on random rows from a fixed seed with several top_p,
    and on the edges: top_p = 1 (every token), a tiny top_p (the top token alone) and a top_p
    that is exactly a running total (the token that reaches it is the last one kept)."""
    cases = [Case((probs, top_p), ("probs",), (reference_top_p_filter(probs, top_p),), label,
                  arg_names=("probs", "top_p"))
             for label, probs, top_p in _top_p_cases()]
    report = run("top-p (nucleus) filter", fn, cases, TOP_P_MISTAKES, {
        "probs": "sort each row, keep the most likely tokens until their sum reaches top_p"},
        show=False)
    report.lines = named_once(report.lines)
    return show_report(report, show)


# one step of attention with a KV cache --------------------------------------------------------


def _step_ref(q, k, v, past_k, past_v, append=True, self_attend=True, mask_first=False,
              scale="sqrt", new_first=False, axis=-1):
    """One new token's attention given the cached keys and values, with switches that make
    the catalogued mistakes. Returns (y, k_all, v_all)."""
    hs = q.shape[-1]
    pair = (k, past_k) if new_first else (past_k, k)
    k_all = np.concatenate(pair, axis=2)  # (B, nh, T_past + 1, hs)
    v_all = np.concatenate((v, past_v) if new_first else (past_v, v), axis=2)
    keys, values = (k_all, v_all) if self_attend and append else (past_k, past_v)
    s = {"sqrt": 1 / np.sqrt(hs), "hs": 1 / hs, "none": 1.0}[scale]
    att = (q @ keys.swapaxes(-1, -2)) * q.dtype.type(s)  # (B, nh, 1, T)
    if mask_first:  # the causal mask's first row: only key 0 visible
        att[..., 1:] = -np.inf
    att = np.exp(att - att.max(axis, keepdims=True))
    att /= att.sum(axis, keepdims=True)
    y = att @ values  # (B, nh, 1, hs)
    return (y, k_all, v_all) if append else (y, past_k, past_v)


def reference_cached_attention_step(q, k, v, past_k, past_v):
    """One new token's causal attention with a KV cache: q, k, v (B, nh, 1, hs) the new
    token's, past_k and past_v (B, nh, T_past, hs) the cache. Returns (y (B, nh, 1, hs),
    k_all, v_all (B, nh, T_past + 1, hs))."""
    return _step_ref(q, k, v, past_k, past_v)


CACHED_STEP_MISTAKES = [
    ("the new key and value not appended: the cache must grow by one position (and the new "
     "token attends to itself too)", variant(_step_ref, append=False)),
    ("the new token does not attend to itself: its own key and value belong to the keys and "
     "values it looks at (append them first)", variant(_step_ref, self_attend=False)),
    ("the causal mask applied to the new query as if it were position 0: it is the *last* "
     "position, every cached key is in its past, so it needs no mask",
     variant(_step_ref, mask_first=True)),
    ("scores scaled by 1/hs instead of 1/sqrt(hs)", variant(_step_ref, scale="hs")),
    ("scores not scaled by 1/sqrt(hs)", variant(_step_ref, scale="none")),
    ("the new key and value put first: the cache stays in time order, the past first and the "
     "new token last (position t at index t)", variant(_step_ref, new_first=True)),
    ("softmax over the wrong axis: normalise over the keys, the last axis",
     variant(_step_ref, axis=-2)),
]


def _step_case(label, B, nh, T_past, hs, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, nh, T_past + 1, hs)).astype(dtype) for _ in range(3))
    y_full = reference_heads_forward(q, k, v)[0]  # causal attention over every position
    args = (q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], k[:, :, :-1], v[:, :, :-1])
    return Case(args, ("y", "k_all", "v_all"), (y_full[:, :, -1:], k, v), label,
                1e-5 if dtype == np.float32 else 1e-10,
                arg_names=("q", "k", "v", "past_k", "past_v"))


def check_cached_attention_step(fn, show=True):
    """fn(q, k, v, past_k, past_v) -> (y, k_all, v_all): one new token's causal attention
    with a KV cache. q, k, v (B, nh, 1, hs) are the new token's, past_k and past_v
    (B, nh, T_past, hs) the cache; y (B, nh, 1, hs) must equal the last position of the full
    causal attention over all T_past + 1 positions, and k_all, v_all the grown cache."""
    cases = [_step_case("B=2, nh=2, T_past=5", 2, 2, 5, 4, np.float64, 20),
             _step_case("T_past=0: the first token", 1, 2, 0, 4, np.float64, 21),
             _step_case("float32, nh=3, T_past=7", 1, 3, 7, 8, np.float32, 22)]
    report = run("attention for one new token with a KV cache", fn, cases,
                 CACHED_STEP_MISTAKES, {
                     "call": "shapes: q, k, v (B, nh, 1, hs); past_k, past_v (B, nh, T_past, "
                             "hs): time is axis 2",
                     "y": "y must be the last row of the full causal attention over the "
                          "past and the new token"}, show=False)
    report.lines = named_once(report.lines)
    return show_report(report, show)
