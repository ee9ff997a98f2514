"""Comparing one output of the learner's function with the expected one, and saying what is
wrong: by how much, where (the worst element, yours next to the expected value) and, when the
pattern is a known one, the likely mistake: a generic one (a sign, a factor, a transpose, a
sum over the wrong axis) or one from the checker's catalogue of typical mistakes.

`case` is a checking.Case, read here for its names, threshold, call and formatting."""

from __future__ import annotations

import copy
import math

import numpy as np

from .report import index_text, must_text, num_text, pair_text, value_text

MATCH = 1e-6  # a learner's output within this (scaled) error of a catalogued mistake is named


def _error(got, expected):
    """max|got - expected| / max|expected| (plain max|got - expected| when expected is all 0);
    a nan or inf on both sides counts as agreement, a lone one as an infinite error."""
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if g.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(g - e)
    agree = ~np.isfinite(g) & ~np.isfinite(e)  # (for matching a mistake: all overflows alike)
    d = np.where(agree, 0.0, np.where(np.isnan(d), np.inf, d))
    finite = e[np.isfinite(e)]
    scale = float(np.max(np.abs(finite), initial=0.0))
    return float(d.max()) / scale if scale > 0 else float(d.max())


def _worst(g, e):
    """Index of the worst element: the first nan/inf of yours, else the largest difference."""
    bad = ~np.isfinite(g)
    if bad.any():
        return np.unravel_index(int(np.argmax(bad)), g.shape)
    if g.dtype.kind in "iub" and e.dtype.kind in "iub":
        return np.unravel_index(int(np.argmax(g != e)), g.shape)
    return np.unravel_index(int(np.argmax(np.abs(g.astype(np.float64) - e))), g.shape)


def _factor_name(k):
    """A recognisable name for a constant factor k (2, 1/8, sqrt(8), 1/sqrt(8), ln 2, ...)."""
    known = {"ln 2": math.log(2), "1/ln 2": 1 / math.log(2)}
    for n in range(2, 65):
        known.update({f"{n}": n, f"1/{n}": 1 / n})
        r = math.sqrt(n)
        if r != int(r):
            known.update({f"sqrt({n})": r, f"1/sqrt({n})": 1 / r})
    sign = "-" if k < 0 else ""
    for name, v in known.items():
        if abs(abs(k) - v) <= 1e-6 * v:
            return f"{sign}{name}" if name.isdigit() else f"{num_text(k)} = {sign}{name}"
    return None


def _value_patterns(name, g, e, threshold, index=None):
    """Generic diagnoses of a wrong float output of the right shape."""
    g = g.astype(np.float64)
    if not np.all(np.isfinite(g)):
        return ["nan or inf: an overflow (exp of a large number), a 0/0 or a log(0)?"]
    if not np.any(e):
        return []
    if not np.any(g):
        return ["yours is all zeros"]
    if _error(g, -e) < MATCH:
        return ["yours = -expected: the opposite sign (a minus sign too many or too few?)"]
    k = float(np.sum(g * e) / np.sum(e * e))
    name_k = _factor_name(k)
    # a single number is always some factor times another: only a recognisable one counts
    if abs(k - 1) > 1e-6 and _error(g, k * e) < MATCH and (g.size > 1 or name_k):
        return [f"yours = {name_k or num_text(k)} x expected: a missing or extra scale factor?"]
    if g.ndim >= 2 and g.shape[-1] == g.shape[-2]:
        eT = np.swapaxes(e, -1, -2)
        if _error(e, eT) > MATCH and _error(g, eT) < MATCH:
            return ["yours is the expected one transposed (its last two axes swapped)"]
    # wrong only in a few rows (or entries, for a 1-D output)
    if g.ndim == 0 or g.size < 3:
        return []
    scale = max(float(np.max(np.abs(e))), 1e-300)
    rows = np.abs(g - e) / scale if g.ndim == 1 else \
        np.max(np.abs(g - e), axis=-1) / scale
    bad = np.argwhere(rows > threshold)
    if 0 < len(bad) <= 3 and len(bad) < rows.size / 2:
        what = "entries" if g.ndim == 1 else "rows"
        fmt = index or (lambda i: index_text(name, i) if g.ndim == 1 else
                        index_text(name, i)[:-1] + ", :]")
        where = ", ".join(fmt(tuple(i)) for i in bad)
        return [f"wrong only at {where} ({len(bad)} of {rows.size} {what}); the others are right"]
    return []


def _shape_patterns(gs, es):
    """Generic diagnoses of a wrong shape."""
    if es == ():
        return ["expected a single number: a mean or a sum missing?"]
    if len(gs) == 2 and gs == es[::-1] and gs != es:
        return ["that is the expected shape transposed"]
    if len(gs) > len(es) and gs[len(gs) - len(es):] == es:
        extra = gs[:len(gs) - len(es)]
        return [f"extra leading axes {extra}: not summed over them (every position adds "
                "its contribution)?"]
    if len(gs) == len(es) - 1 and any(es[:i] + es[i + 1:] == gs for i in range(len(es))):
        return ["one axis missing: summed over an axis that should stay (the wrong axis)?"]
    if len(gs) == len(es):
        diff = [i for i in range(len(es)) if gs[i] != es[i]]
        if len(diff) == 1 and gs[diff[0]] == 1:
            return [f"axis {diff[0]} has size 1: summed over it (keepdims) instead of another?"]
    if math.prod(gs) == math.prod(es):
        return ["same number of entries, arranged differently: a transpose or a reshape in "
                "the wrong order?"]
    return []


def _aligned(name, g, e, threshold):
    """For a shape that is the expected one transposed, or has extra leading axes: compare
    yours.T, or yours summed over those axes, with the expected values."""
    if g.dtype.kind not in "iuf" or e.dtype.kind != "f" or not np.all(np.isfinite(g)):
        return []
    if g.ndim == 2 and g.shape == e.shape[::-1]:
        how, a = f"{name}.T", g.T
    elif e.ndim and g.ndim > e.ndim and g.shape[g.ndim - e.ndim:] == e.shape:
        how, a = f"{name} summed over its leading axes", g.reshape(-1, *e.shape).sum(0)
    else:
        return []
    if _error(a, e) <= threshold:
        return [f"{how} would be right"]
    w = _worst(a, e)
    yours, exp = pair_text(a[w], e[w])
    return [f"{how} is wrong too: max error {num_text(_error(a, e))} x max|expected|; worst at "
            f"{index_text(name, w)}: yours {yours}, expected {exp}"]


def describe(x):
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)}"
    return type(x).__name__


def as_array(x):
    """The learner's output as a numeric array, or None if it is not one."""
    try:
        a = np.asarray(x)
    except Exception:  # ragged lists and the like
        return None
    return a if a.dtype.kind in "biuf" else None


def split_outputs(case, result):
    """What a function returned, as a tuple of the case's outputs."""
    if len(case.names) == 1:
        return (result,)
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


# --- the catalogue of typical mistakes -------------------------------------------------------


def _mistake_outputs(case, mistake):
    call = case.call or (lambda f, a: f(*a))
    try:
        with np.errstate(all="ignore"):
            return split_outputs(case, call(mistake, copy.deepcopy(case.args)))
    except Exception:  # a mistake that does not apply to these inputs
        return None


def _matches(g, m, e, threshold):
    m = as_array(m)
    if m is None or m.shape != g.shape:
        return False
    if e.dtype.kind in "iub":
        return np.array_equal(g, m) and not np.array_equal(m, e)
    if m.shape != e.shape:
        return _error(g, m) < MATCH
    off = _error(m, e)  # how far the mistake is from the right answer
    return off > threshold and _error(g, m) < min(MATCH, 1e-3 * off)


def _near(a, b, tol):
    a, b = as_array(a), as_array(b)
    if a is None or b is None or a.shape != b.shape:
        return False
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return np.array_equal(a, b)
    return _error(a, b) <= tol


def _catalogue(g, e, case, i, mistakes, threshold, got, expected):
    """The sentences of the catalogued mistakes that explain output i: it matches the
    mistake's output i, and every other output the mistake gets wrong is wrong that way."""
    found = []
    for sentence, mistake in mistakes:
        out = _mistake_outputs(case, mistake)
        if out is None or len(out) != len(case.names) or sentence in found or \
                not _matches(g, out[i], e, threshold):
            continue
        if all(_near(out[j], expected[j], threshold) or _near(got[j], out[j], MATCH)
               for j in range(len(out)) if j != i):
            found.append(sentence)
    return ["this looks like: " + s for s in found]


# --- one output ------------------------------------------------------------------------------


def compare(report, label, name, case, i, got, expected, mistakes, hint):
    """Compare output i (of all the outputs `got`); add its line(s) to the report."""
    g, e = got[i], np.asarray(expected[i])
    thr = case.threshold
    if g is None:
        report.fail(label, "is None: not implemented yet (or a missing `return`)")
        return False
    ga = as_array(g)
    if ga is None:
        report.fail(label, f"is not a number or an array of numbers (got {describe(g)})")
        return False
    if ga.shape != e.shape:
        shape = "a single number" if ga.shape == () else f"shape {ga.shape}"
        want = "a single number" if e.shape == () else f"{e.shape}"
        if case.lists and ga.ndim == 1:
            shape, want = f"length {ga.size}", f"{e.size}"
        if e.dtype.kind in "iu" and e.ndim == 1 and e.size <= 20 and ga.size <= 20:
            details = [f"yours {ga.tolist()}, expected {e.tolist()}"]
        else:
            details = _shape_patterns(ga.shape, e.shape) + _aligned(name, ga, e, thr)
        details += _catalogue(ga, e, case, i, mistakes, thr, got, expected)
        report.fail(label, f"wrong: has {shape}, expected {want}", details,
                    "" if any(d.startswith("this looks") for d in details) else hint)
        return False
    if e.dtype.kind in "iu" and ga.dtype.kind not in "iu":
        report.fail(label, f"wrong: has dtype {ga.dtype}, expected integers", [
            "token ids and targets must be integers (a float array cannot index or be a "
            "target)"])
        return False
    if e.dtype.kind == "f" and e.ndim and ga.dtype.kind == "f" and ga.dtype != e.dtype:
        report.fail(label, f"wrong: has dtype {ga.dtype}, expected {e.dtype} (the inputs' "
                           "dtype)", [
            f"a {ga.dtype} array or constant mixed in somewhere, or an .astype too many"])
        return False
    if e.dtype.kind in "iub":
        n_bad = int(np.sum(ga != e))
        if n_bad == 0:
            report.lines.append(f"✓ {label}  right ({must_text(0)})")
            return True
        w = _worst(ga, e)
        yours, exp = pair_text(ga[w], e[w])
        where = f"first at {index_text(name, w)}: " if e.ndim else ""
        found = _catalogue(ga, e, case, i, mistakes, 0, got, expected)
        if ga.ndim == 0:
            msg = f"wrong: yours {yours}, expected {exp} (difference {value_text(ga - e, 4)})"
            details = found
        else:
            msg = f"wrong: {n_bad} of {e.size} entries differ"
            details = [f"{where}yours {yours}, expected {exp}", *found]
        report.fail(label, msg, details, "" if found else hint)
        return False
    err = _error(ga, e)
    scale = " x max|expected|" if e.ndim else " x |expected|"
    must = must_text(thr)
    if not np.any(e):
        scale, must = "", must + "; the expected one is all zeros"
    if err <= thr and np.all(np.isfinite(ga)):
        report.lines.append(f"✓ {label}  max error {num_text(err)}{scale} ({must})")
        return True
    w = _worst(ga, e)
    yours, exp = pair_text(ga[w], e[w])
    where = f"worst at {_fmt_index(case, name, w, e.ndim)}: " if e.ndim else ""
    n_bad = int(np.sum(~np.isfinite(ga)))
    if n_bad:
        where = f"first at {_fmt_index(case, name, w, e.ndim)}: " if e.ndim else ""
        err_text = f"{n_bad} of {ga.size} entries are nan or inf" if e.ndim else \
            f"yours is {yours}"
    else:
        err_text = f"max error {num_text(err)}{scale}"
    details = _value_patterns(name, ga, e, thr, case.index if e.ndim == 1 else None)
    details += _catalogue(ga, e, case, i, mistakes, thr, got, expected)
    matched = any(d.startswith("this looks") for d in details)
    report.fail(label, f"wrong: {err_text}" + ("" if n_bad else f" ({must})"),
                [f"{where}yours {yours}, expected {exp}", *details],
                "" if matched else (case.hint or hint))
    return False


def _fmt_index(case, name, w, ndim):
    if case.index is not None and ndim == 1:
        return case.index(w)
    return index_text(name, w)
