"""Comparing one output of the learner's function with the expected one, and saying what is
wrong: by how much, where (the worst element, yours next to the expected value) and, when the
pattern is a known one, the likely mistake: a generic one (a sign, a factor, a transpose, a
sum over the wrong axis, two outputs swapped) or one from the checker's catalogue of typical
mistakes.

How close is close enough follows the dtype (`threshold`): the error that rounding alone gives
a right answer computed in float64, or in float32, for the size of the computation.

`case` is a checking.Case, read here for its names, threshold, terms, dtype, call and
formatting."""

from __future__ import annotations

import copy
import math

import numpy as np

from .report import index_text, must_text, num_text, pair_text, value_text

# A learner's output within this (scaled) error of a catalogued mistake's is named after it;
# for a float32 answer, within the float32 threshold (its rounding alone can exceed MATCH).
MATCH = 1e-6


# --- how close is close enough ---------------------------------------------------------------


def rounding(dtype, terms=1):
    """The largest error, x max|expected|, that rounding alone gives a right answer computed
    in `dtype` when its longest sum has `terms` terms: 4 eps (terms + 8), rounded up to one
    significant digit (the threshold the report prints is the one used).

    Why: every operation rounds by at most eps/2 (eps = np.finfo(dtype).eps, 2.2e-16 in
    float64, 1.2e-7 in float32); a sum of n terms accumulates at most about n of those (the
    classic bound of a plain loop; NumPy's pairwise sums stay far below it), the elementwise
    operations around the sums add a handful more (the 8), and the cancellation of random
    inputs (a sum of terms a few times larger than the largest result) a factor up to 8."""
    eps = float(np.finfo(dtype).eps)
    return _one_digit_up(4 * eps * (max(int(terms), 1) + 8))


def _one_digit_up(x):
    """x rounded up to one significant digit: 6.7e-06 -> 7e-06."""
    exp = math.floor(math.log10(x))
    lead = math.ceil(round(x / 10.0**exp, 9))
    return float(f"{lead}e{exp}") if lead < 10 else float(f"1e{exp + 1}")


def _floats(x, found):
    """Every float array (or NumPy float scalar) inside x: tuples, lists, named tuples."""
    if isinstance(x, (np.ndarray, np.floating)) and np.asarray(x).dtype.kind == "f":
        found.append(np.asarray(x))
    elif isinstance(x, (tuple, list)):
        for y in x:
            _floats(y, found)
    return found


def case_dtype(case):
    """The float dtype of the case's inputs (float32 if any input is float32): the dtype the
    learner's float arrays must keep, unless the case says otherwise."""
    if case.dtype is not None:
        return np.dtype(case.dtype[0] if isinstance(case.dtype, tuple) else case.dtype)
    kinds = {a.dtype for a in _floats(case.args, [])}
    return np.dtype(np.float32) if any(np.finfo(d).eps >= np.finfo(np.float32).eps
                                       for d in kinds) else np.dtype(np.float64)


def case_terms(case):
    """The case's `terms`, or the longest sum a layer on its inputs makes in one step: along
    the last axis of an input, or over the positions of its leading axes (a weight's
    gradient sums over B and T)."""
    if case.terms:
        return case.terms
    sizes = [max(a.shape[-1], math.prod(a.shape[:-1])) for a in _floats(case.args, []) if a.ndim]
    return max(sizes, default=1)


def threshold(case, answer_dtype=None):
    """The threshold for one output: the rounding of the case's dtype, or of the answer's
    when that has fewer digits (a float32 number returned for float64 inputs), never below
    the case's own floor (finite differences' accuracy for gradients). Below float32 is judged
    as float32."""
    dt = case_dtype(case)
    if answer_dtype is not None and np.dtype(answer_dtype).kind == "f" and \
            np.finfo(answer_dtype).eps > np.finfo(dt).eps:
        dt = np.dtype(np.float32)
    return max(case.threshold or 0.0, rounding(dt, case_terms(case)))


def match_tolerance(thr):
    """How close to a catalogued mistake (or a factor, a sign) an answer must be to be named
    after it: MATCH, or the answer's own threshold when rounding alone exceeds MATCH."""
    return max(MATCH, thr)


# --- measuring -------------------------------------------------------------------------------


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
    """Index of the worst element: the first nan/inf of yours where a number is expected, else
    the first number of yours where nan is expected, else the largest difference."""
    if g.dtype.kind in "iub" and e.dtype.kind in "iub":
        return np.unravel_index(int(np.argmax(g != e)), g.shape)
    ge, ee = np.isfinite(g), np.isfinite(e)
    for bad in (~ge & ee, ge & ~ee):
        if bad.any():
            return np.unravel_index(int(np.argmax(bad)), g.shape)
    d = np.where(ge & ee, np.abs(g.astype(np.float64) - np.where(ee, e, 0.0)), 0.0)
    return np.unravel_index(int(np.argmax(d)), g.shape)


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


def _value_patterns(name, g, e, threshold, index=None, tol=MATCH):
    """Generic diagnoses of a wrong float output of the right shape (entries that are nan in
    both, a row of 0/0, are left out)."""
    g = g.astype(np.float64)
    if np.any(~np.isfinite(g) & np.isfinite(e)):
        return ["nan or inf: an overflow (exp of a large number), a 0/0 or a log(0)?"]
    both = np.isfinite(g) & np.isfinite(e)
    g, e = np.where(both, g, 0.0), np.where(both, e, 0.0)
    if not np.any(e):
        return []
    if not np.any(g):
        return ["yours is all zeros"]
    if _error(g, -e) < tol:
        return ["yours = -expected: the opposite sign (a minus sign too many or too few?)"]
    k = float(np.sum(g * e) / np.sum(e * e))
    name_k = _factor_name(k)
    # a single number is always some factor times another: only a recognisable one counts
    if abs(k - 1) > 1e-3 and _error(g, k * e) < tol and (g.size > 1 or name_k):
        return [f"yours = {name_k or num_text(k)} x expected: a missing or extra scale factor?"]
    if g.ndim >= 2 and g.shape[-1] == g.shape[-2]:
        eT = np.swapaxes(e, -1, -2)
        if _error(e, eT) > tol and _error(g, eT) < tol:
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


def fits(case, got, expected):
    """True if one output is right: the expected shape, and equal (integers) or within the
    threshold of its dtype (floats; nan where nan is expected)."""
    g, e = as_array(got), np.asarray(expected)
    if g is None or g.shape != e.shape:
        return False
    if e.dtype.kind != "f":
        return bool(np.array_equal(g, e))
    if np.any(~np.isfinite(g) & np.isfinite(e)):
        return False
    return _error(g, e) <= threshold(case, g.dtype if g.dtype.kind == "f" else None)


# --- outputs in the wrong order --------------------------------------------------------------


def find_swaps(case, got, expected):
    """Outputs returned in the wrong places. Returns ({i: (j, how)}, permuted): output i is
    wrong where it is but is the expected output j (how = "value"), or, when the wrong shapes
    are those of the expected outputs shuffled, has output j's shape (how = "shape");
    `permuted` is True when the misplaced outputs only changed places among themselves."""
    n = len(case.names)
    if n < 2 or len(got) != n:
        return {}, False
    es = [np.asarray(e) for e in expected]
    gs = [as_array(g) if g is not None else None for g in got]
    right = [fits(case, got[i], es[i]) for i in range(n)]
    swaps = {}
    for i in range(n):
        if right[i] or gs[i] is None:
            continue
        for j in range(n):
            # an all-zero or a duplicate expected output says nothing about the order
            if j != i and np.any(es[j]) and not fits(case, es[j], es[i]) and \
                    fits(case, got[i], es[j]):
                swaps[i] = (j, "value")
                break
    wrong = [i for i in range(n) if gs[i] is not None and gs[i].shape != es[i].shape]
    if len(wrong) >= 2 and sorted(gs[i].shape for i in wrong) == \
            sorted(es[i].shape for i in wrong):
        free = list(wrong)
        for i in wrong:  # the shapes are a permutation: pair each with an expected shape
            j = next(j for j in free if es[j].shape == gs[i].shape)
            free.remove(j)
            swaps.setdefault(i, (j, "shape"))
    targets = sorted(j for j, _ in swaps.values())
    return swaps, bool(swaps) and targets == sorted(swaps) and len(set(targets)) == len(targets)


def _swap_report(report, label, name, case, ga, e_j, j, how, permuted):
    """The line of an output that is another one's: no misleading numbers, the right order."""
    other = case.names[j]
    order = f"return ({', '.join(case.names)}) in this order"
    key = ("swapped", name, other, how)
    said = f"what you return as {name}"
    quiet = key in report.said  # said once, for the first case where it shows
    report.said.append(key)
    if how == "value":
        what = "the outputs look swapped" if permuted else \
            "the outputs look swapped (or one of them returned twice)"
        report.fail(label, f"wrong: {said} is the expected {other}: {what}, {order}",
                    quiet=quiet)
        return
    details = []
    if ga.dtype.kind in "iuf" and e_j.dtype.kind in "iuf":
        err = _error(ga, e_j)
        details = [f"compared with the expected {other}, yours is wrong too: max error "
                   f"{num_text(err)} x max|expected|"]
    shape = "a single number" if e_j.shape == () else f"shape {e_j.shape}"
    report.fail(label, f"wrong: {said} has the {shape} of {other}: the outputs look "
                       f"swapped, {order}", details, quiet=quiet)


# --- the catalogue of typical mistakes -------------------------------------------------------


def outputs_of(case, mistake):
    """What a function (a catalogued mistake, an alternative form) returns on the case's
    inputs, as a tuple of outputs; None where it does not apply (it raised)."""
    call = case.call or (lambda f, a: f(*a))
    try:
        with np.errstate(all="ignore"):
            return split_outputs(case, call(mistake, copy.deepcopy(case.args)))
    except Exception:  # a mistake that does not apply to these inputs
        return None


def _matches(g, m, e, threshold, tol=MATCH):
    m = as_array(m)
    if m is None or m.shape != g.shape:
        return False
    if e.dtype.kind in "iub":
        return np.array_equal(g, m) and not np.array_equal(m, e)
    if m.shape != e.shape:
        return _error(g, m) < tol
    off = _error(m, e)  # how far the mistake is from the right answer
    return off > threshold and _error(g, m) < min(tol, max(1e-3 * off, threshold))


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
    tol = match_tolerance(threshold)
    for sentence, mistake in mistakes:
        out = outputs_of(case, mistake)
        if out is None or len(out) != len(case.names) or sentence in found or \
                not _matches(g, out[i], e, threshold, tol):
            continue
        if all(_near(out[j], expected[j], threshold) or _near(got[j], out[j], tol)
               for j in range(len(out)) if j != i):
            found.append(sentence)
    return ["this looks like: " + s for s in found]


# --- one output ------------------------------------------------------------------------------


def _dtype_problem(report, label, case, ga, e):
    """A float array of another dtype than the inputs': True if that is a mistake (said).
    Fewer digits than the inputs always is (a float64 check cannot be trusted in float32);
    more digits is a remark, or a mistake where the exercise fixes the dtype."""
    if not (e.dtype.kind == "f" and e.ndim and ga.dtype.kind == "f"):
        return False
    allowed = case.dtype if isinstance(case.dtype, tuple) else (case_dtype(case),)
    allowed = [np.dtype(d) for d in allowed]
    if ga.dtype in allowed:
        return False
    want = allowed[0]
    if np.finfo(ga.dtype).eps < np.finfo(want).eps and not case.strict_dtype:
        report.remarked.append((label, ga.dtype, want))  # said by upcast_remark
        return False
    zeros = " (np.zeros(shape) is float64 without dtype=)" if ga.dtype == np.float64 else ""
    report.fail(label, f"wrong: has dtype {ga.dtype}, expected {want} (the inputs' dtype)", [
        f"a {ga.dtype} array{zeros} or constant mixed in somewhere, or an .astype too many"])
    return True


def upcast_remark(report, label):
    """One remark for the outputs of a case that came out with more digits than the inputs
    (float64 from float32): said once per report."""
    names = [n.split(" (", 1)[0] for n, _, _ in report.remarked]
    if not names or "upcast" in report.said:
        report.remarked.clear()
        return
    _, got, want = report.remarked[0]
    report.said.append("upcast")
    report.lines.append(
        f"! {', '.join(names)}{label}  {'is' if len(names) == 1 else 'are'} {got} for {want} "
        f"inputs: a {got} number or array mixed in somewhere (np.sqrt(2) is one, and so is an "
        "integer array divided by a number); compute in the dtype you are given")
    report.remarked.clear()


def compare(report, label, name, case, i, got, expected, mistakes, hint, swap=None,
            permuted=False):
    """Compare output i (of all the outputs `got`); add its line(s) to the report. `swap`
    (j, how) says that this output looks like the expected output j (find_swaps)."""
    g, e = got[i], np.asarray(expected[i])
    if g is None:
        report.fail(label, "is None: not implemented yet (or a missing `return`)")
        return False
    ga = as_array(g)
    if ga is None:
        report.fail(label, f"is not a number or an array of numbers (got {describe(g)})")
        return False
    thr = threshold(case, ga.dtype if ga.dtype.kind == "f" else None)
    if swap is not None:
        j, how = swap
        # a permutation says it all; a single match may be a catalogued mistake instead
        if permuted or not _catalogue(ga, e, case, i, mistakes, thr, got, expected):
            _swap_report(report, label, name, case, ga, np.asarray(expected[j]), j, how,
                         permuted)
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
    if _dtype_problem(report, label, case, ga, e):
        return False
    if e.dtype.kind in "iub":
        return _compare_exact(report, label, name, case, i, ga, e, got, expected, mistakes,
                              hint)
    err = _error(ga, e)
    scale = " x max|expected|" if e.ndim else " x |expected|"
    must = must_text(thr)
    if not np.any(e[np.isfinite(e)]):
        scale, must = "", must + "; the expected one is all zeros"
    fin_g, fin_e = np.isfinite(ga), np.isfinite(e)
    if err <= thr and not np.any(~fin_g & fin_e):
        report.lines.append(f"✓ {label}  max error {num_text(err)}{scale} ({must})")
        return True
    w = _worst(ga, e)
    yours, exp = pair_text(ga[w], e[w])
    at = _fmt_index(case, name, w, e.ndim)
    n_bad, n_num = int(np.sum(~fin_g & fin_e)), int(np.sum(fin_g & ~fin_e))
    if n_bad:
        where = f"first at {at}: " if e.ndim else ""
        err_text = f"{n_bad} of {ga.size} entries are nan or inf" if e.ndim else \
            f"yours is {yours}"
    elif n_num:
        where = f"first at {at}: " if e.ndim else ""
        err_text = f"{n_num} of {ga.size} entries are numbers where nan is expected (0/0)" \
            if e.ndim else f"yours is {yours}, expected nan (0/0)"
    else:
        where = f"worst at {at}: " if e.ndim else ""
        err_text = f"max error {num_text(err)}{scale}"
    details = _value_patterns(name, ga, e, thr, case.index if e.ndim == 1 else None,
                              match_tolerance(thr))
    details += _catalogue(ga, e, case, i, mistakes, thr, got, expected)
    matched = any(d.startswith("this looks") for d in details)
    report.fail(label, f"wrong: {err_text}" + ("" if n_bad or n_num else f" ({must})"),
                [f"{where}yours {yours}, expected {exp}", *details],
                "" if matched else (case.hint or hint))
    return False


def _compare_exact(report, label, name, case, i, ga, e, got, expected, mistakes, hint):
    """An integer (or boolean) output: right only if every entry is equal."""
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
    report.fail(label, msg, details, "" if found else (case.hint or hint))
    return False


def _fmt_index(case, name, w, ndim):
    if case.index is not None and ndim == 1:
        return case.index(w)
    return index_text(name, w)
