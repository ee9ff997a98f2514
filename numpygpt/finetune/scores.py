"""Scores for generated answers: exact match, and character overlap (ROUGE-L's F1 on
characters, from the longest common subsequence)."""

from __future__ import annotations

import numpy as np

MAX_SCORED_CHARS = 2000  # char_overlap compares at most this many characters of each text


def _normalise(text):
    return " ".join(text.split())  # trims both ends, one space for any run of whitespace


def exact_match(pred, ref):
    """True if the two texts are equal once whitespace is normalised (ends trimmed, each run
    of spaces, tabs or newlines one space)."""
    return _normalise(pred) == _normalise(ref)


def lcs_length(a, b):
    """The length of the longest common subsequence of the strings a and b.

    The classic table, one row per character a[i]: row[j] is the LCS of a[:i+1] and b[:j].
    A row is computed with NumPy from the one above it:
        row[j] = max(above[j], above[j-1] + 1 if a[i] == b[j-1], row[j-1])
    and the last term, a running max, is np.maximum.accumulate. O(len(a) * len(b)).
    """
    if not a or not b:
        return 0
    bcodes = np.frombuffer(b.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (m,)
    above = np.zeros(len(b) + 1, dtype=np.int64)  # LCS of a[:0] and b[:j] for each j
    for ch in a:
        match = bcodes == ord(ch)  # (m,)
        row = above.copy()
        row[1:] = np.maximum(above[1:], np.where(match, above[:-1] + 1, 0))
        above = np.maximum.accumulate(row)
    return int(above[-1])


def char_overlap(pred, ref):
    """Character-level overlap: 2 * LCS / (len(pred) + len(ref)), in [0, 1] (ROUGE-L's F1 on
    characters). 1.0 for equal texts (and for two empty ones), 0.0 when nothing is shared.
    Whitespace is normalised as in exact_match, and each text is cut to MAX_SCORED_CHARS.
    """
    pred, ref = _normalise(pred)[:MAX_SCORED_CHARS], _normalise(ref)[:MAX_SCORED_CHARS]
    if not pred and not ref:
        return 1.0
    return 2.0 * lcs_length(pred, ref) / (len(pred) + len(ref))
