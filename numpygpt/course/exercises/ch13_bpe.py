"""Notebook 13 (BPE tokenizer): one BPE merge."""

import numpy as np

from ...data.bpe import merge as bpe_merge
from .checking import Case, run
from .diagnosis import as_array


def _merge_no_skip(ids, pair, new_id):
    return [new_id if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair) else t
            for i, t in enumerate(ids)]


def _merge_overlap(ids, pair, new_id):
    out = list(ids)
    hits = [i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == tuple(pair)]
    for i in reversed(hits):
        out[i:i + 2] = [new_id]
    return out


def _merge_right_to_left(ids, pair, new_id):
    return bpe_merge(ids[::-1], pair[::-1], new_id)[::-1]


def _merge_miss_last(ids, pair, new_id):
    # the loop stops one step early: a pair that ends on the last id is never merged
    return bpe_merge(ids[:-1], pair, new_id) + list(ids[-1:])


def _merge_drop_last(ids, pair, new_id):
    # the loop runs while i + 1 < len(ids): a last id that is not part of a pair is lost
    out = bpe_merge(ids, pair, new_id)
    last_unpaired = out == bpe_merge(ids[:-1], pair, new_id) + list(ids[-1:])
    return out[:-1] if ids and last_unpaired else out


MERGE_MISTAKES = [
    ("overlapping pairs merged twice: scan left to right, and after a merge continue after "
     "the pair, so (a, a) in [a, a, a] gives [new, a]", _merge_overlap),
    ("after a match the pair's second token was not skipped (i += 2)", _merge_no_skip),
    ("scanned right to left: BPE merges from the left, [a, a, a] -> [new, a]",
     _merge_right_to_left),
    ("a pair at the very end of the list is missed (the loop stops one token early)",
     _merge_miss_last),
    ("the last token is dropped when it is not part of a pair", _merge_drop_last),
]

_MERGE_CASES = [([1, 2, 3, 1, 2], (1, 2), 99), ([5, 5, 5, 5, 5], (5, 5), 7),
                ([3, 1, 2], (1, 2), 9), ([4, 1, 2, 4], (1, 2), 9), ([1, 3, 2], (1, 2), 9),
                ([4], (1, 2), 9), ([], (1, 2), 9), ([7, 7, 7], (7, 7), 300)]


def _int_list(x):
    """The learner's list as an int64 array (an empty list too); anything else unchanged."""
    if isinstance(x, (list, tuple, np.ndarray)):
        a = as_array(list(x))
        if a is not None and a.ndim == 1 and (a.size == 0 or a.dtype.kind in "iu"):
            return a.astype(np.int64)
    return x


def check_merge(fn, show=True):
    """fn(ids, pair, new_id) -> a new list where every occurrence of `pair` in the list `ids`
    is replaced by `new_id`, scanning left to right (occurrences do not overlap: with pair
    (a, a), [a, a, a] becomes [new_id, a]). `ids` itself must not change."""
    cases = [Case((list(ids), pair, new), ("out",), (np.array(bpe_merge(ids, pair, new),
                                                              dtype=np.int64),),
                  label=f"merge({ids}, {pair}, {new})", threshold=0,
                  arg_names=("ids", "pair", "new_id"),
                  in_place="modified ids in place: build and return a new list",
                  call=lambda f, a: _int_list(f(*a)), lists=True)
             for ids, pair, new in _MERGE_CASES]
    return run("BPE merge", fn, cases, MERGE_MISTAKES, {
        "out": "walk i along the list: a match emits new_id and skips two tokens, else emit "
               "ids[i] and move one"}, show)
