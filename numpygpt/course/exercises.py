"""Checkers for the course's exercises.

A learner writes a piece of the model in a notebook cell (say, the layer-norm backward pass)
and calls a checker from here. The checker runs the learner's function on small random float64
inputs, compares each result with the right answer (finite differences for gradients, the
package's own code or a closed form for values) and prints, for every output, whether it is
right; for a wrong one it says by how much (relative to the size of the expected tensor, so
"twice too big" reads 1 and "a hundred times too big" reads 99), where (the worst element,
yours next to the expected value) and, when the pattern is a known one, the likely mistake:

    >>> from numpygpt.course.exercises import check_layernorm_backward
    >>> report = check_layernorm_backward(my_layernorm_backward)
    layer norm backward
    ✗ dx  wrong: max error 0.371 x max|expected| (must be < 1e-07)
        worst at dx[1, 0, 5]: yours 0.01431, expected -0.1699
        this looks like: the -mean(g) term is missing: the mean of x depends on every x_i, so each
          dx_i gets a share of -mean(g)
    ✓ dw  max error 2.2e-14 x max|expected| (must be < 1e-07)
    ✓ db  max error 6.8e-14 x max|expected| (must be < 1e-07)
    wrong: dx

The checkers never raise: a stub that still raises NotImplementedError gets "not implemented
yet", one that returns None gets "returned None", and an error in the learner's code is shown
with the learner's own line. Every checker returns a Report: `report.ok` is True when
everything matched, `report.wrong` lists the outputs that did not, `str(report)` is the text
printed (pass show=False to print nothing).
"""

from __future__ import annotations

import copy
import math
import os
import textwrap
import traceback
from dataclasses import dataclass, field

import numpy as np

from .. import layers as L
from ..data.bpe import merge as bpe_merge
from ..gradcheck import THRESHOLD, numerical_gradient

MATCH = 1e-6  # a learner's output within this (scaled) error of a catalogued mistake is named


@dataclass
class Report:
    """The verdict of a checker: one line per output (indented detail lines under a wrong one),
    the names of the wrong outputs, and the verdict last when printed."""

    title: str
    lines: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    not_implemented: bool = False
    failed: list = field(default_factory=list)  # the wrong outputs with their case labels
    changed: list = field(default_factory=list)  # inputs the learner's function modified

    @property
    def ok(self):
        return not self.wrong and not self.not_implemented

    def add(self, name, err, threshold, hint="", details=()):
        """One output compared by its error `err` (already measured): a ✓ or a ✗ line, with
        `details` and the `hint` as indented lines under a wrong one."""
        text = f"max error {_num(err)} x max|expected| ({_must(threshold)})"
        if err <= threshold:
            self.lines.append(f"✓ {name}  {text}")
        else:
            self.fail(name, "wrong: " + text, details, hint)

    def fail(self, name, message, details=(), hint=""):
        """A wrong output: its line, then the indented details and the hint."""
        self.lines.append(f"✗ {name}  {message}")
        for d in [*details, *(["hint: " + hint] if hint else [])]:
            if d.startswith("at "):  # a line of the learner's code: never wrapped
                self.lines.append("    " + d)
            else:
                self.lines.extend(textwrap.wrap(d, 96, initial_indent="    ",
                                                subsequent_indent="      ",
                                                break_on_hyphens=False))
        key = name.split(" (", 1)[0]  # "dwte (padding_idx=0)" -> "dwte"
        if key not in self.wrong:
            self.wrong.append(key)
        self.failed.append(name)

    @property
    def verdict(self):
        if self.not_implemented:
            return "not implemented yet"
        if self.ok:
            return "all correct, well done!"
        parts = []
        for key in self.wrong:
            cases = [f for f in self.failed if f.split(" (", 1)[0] == key]
            parts.append(cases[0] if len(cases) == 1 else f"{key} (in {len(cases)} cases)")
        return "wrong: " + ", ".join(parts)

    def __str__(self):
        return "\n".join([self.title, *self.lines, self.verdict])

    def _repr_pretty_(self, p, cycle):  # how IPython displays it
        p.text(str(self))


# --- formatting ------------------------------------------------------------------------------


def _must(threshold):
    return "must match exactly" if threshold == 0 else f"must be < {threshold:.0e}"


def _num(x):
    """An error measure: 3 significant digits in a readable range, else scientific."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return str(x if x else 0)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.1e}"


def _value(x, digits):
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10000 else str(int(x))
    x = float(x)
    return str(x) if not math.isfinite(x) else f"{x:.{digits}g}"


def _pair(a, b):
    """Two numbers with just enough digits to tell them apart (at least 4)."""
    for d in range(4, 18):
        sa, sb = _value(a, d), _value(b, d)
        if sa != sb or a == b:
            return sa, sb
    return sa, sb


def _index(name, i):
    return f"{name}[{', '.join(str(int(k)) for k in i)}]" if i else name


def _fn_name(fn):
    name = getattr(fn, "__name__", "")
    return name if name and name != "<lambda>" else "your function"


# --- calling the learner's function ----------------------------------------------------------


class _Stub(Exception):
    """The learner's function raised NotImplementedError."""


class _Raised(Exception):
    """The learner's function raised some other exception (kept in .error)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


_NUMPY_DIR = os.path.dirname(np.__file__)


def _learner_frames(error):
    """The traceback lines of the learner's own code: not this module, not NumPy's."""
    lines = []
    for fr in traceback.extract_tb(error.__traceback__):
        if fr.filename == __file__ or fr.filename.startswith(_NUMPY_DIR):
            continue
        where = "" if _is_notebook_cell(fr.filename) else f"{os.path.basename(fr.filename)}, "
        code = f":  {fr.line.strip()}" if fr.line else ""
        lines.append(f"at {where}line {fr.lineno}, in {fr.name}{code}")
    return lines[-4:]


def _is_notebook_cell(filename):
    return "ipykernel" in filename or filename.startswith("<ipython-input")


def _call(thunk):
    """thunk() with floating-point warnings silenced (the report explains nan and inf)."""
    try:
        with np.errstate(all="ignore"):
            return thunk()
    except NotImplementedError as e:
        raise _Stub() from e
    except Exception as e:  # the learner's code failed: the report shows it, never raises
        raise _Raised(e) from e


def _same(a, b):
    """Deep equality of arguments (arrays, tuples, lists, numbers), nan equal to nan."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


# --- comparing outputs -----------------------------------------------------------------------


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
            return f"{sign}{name}" if name.isdigit() else f"{_num(k)} = {sign}{name}"
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
        return [f"yours = {name_k or _num(k)} x expected: a missing or extra scale factor?"]
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
        fmt = index or (lambda i: _index(name, i) if g.ndim == 1 else
                        _index(name, i)[:-1] + ", :]")
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
    yours, exp = _pair(a[w], e[w])
    return [f"{how} is wrong too: max error {_num(_error(a, e))} x max|expected|; worst at "
            f"{_index(name, w)}: yours {yours}, expected {exp}"]


def _describe(x):
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)}"
    return type(x).__name__


def _as_array(x):
    """The learner's output as a numeric array, or None if it is not one."""
    try:
        a = np.asarray(x)
    except Exception:  # ragged lists and the like
        return None
    return a if a.dtype.kind in "biuf" else None


@dataclass
class _Case:
    """One call of the learner's function and what its outputs must be."""

    args: tuple  # the learner's function is called with deep copies of these
    names: tuple  # one per output
    expected: object  # tuple of arrays/numbers, or a function computing it (lazily)
    label: str = ""  # e.g. "padding_idx=0": shown after the output names
    threshold: float = 1e-10
    call: object = None  # call(fn, args) -> outputs; default fn(*args)
    arg_names: tuple = ()  # to say which input was changed in place
    in_place: str = ""  # if set, modifying an input is this mistake here, not a remark
    index: object = None  # index formatter for 1-D outputs, e.g. lr(it=10)
    hint: str = ""  # shown under a wrong output of this case
    lists: bool = False  # the outputs are lists: say "length", not "shape"


def _outputs(case, result):
    if len(case.names) == 1:
        return (result,)
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _run_case(report, fn, case, mistakes, hints):
    """Run one case; returns False when the checker must stop (a stub)."""
    call = case.call or (lambda f, a: f(*a))
    label = f" ({case.label})" if case.label else ""
    passed = copy.deepcopy(case.args)
    try:
        result = _call(lambda: call(fn, passed))
    except _Stub:
        where = label if report.lines else ""  # which case, if an earlier one ran
        report.lines.append(f"✗ {_fn_name(fn)} raises NotImplementedError{where}: "
                            "not implemented yet")
        report.not_implemented = True
        return False
    except _Raised as r:
        e = r.error
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        short = len(text) <= 70 and "\n" not in text
        report.fail("call" + label, f"{_fn_name(fn)} raised " + (text if short else
                                                                  type(e).__name__),
                    [*([] if short else [str(e)[:300]]), *_learner_frames(e)],
                    case.hint or hints.get("call", ""))
        return True
    if result is None:
        where = label if report.lines else ""
        report.lines.append(f"✗ {_fn_name(fn)} returned None{where}: not implemented yet "
                            "(or a missing `return`)")
        report.not_implemented = True
        return False
    if len(case.names) == 1 and isinstance(result, tuple):
        report.fail("outputs" + label, f"{_fn_name(fn)} returned a tuple of {len(result)}; "
                                       f"expected {case.names[0]} alone")
        return True
    got = _outputs(case, result)
    if len(got) != len(case.names):
        report.fail("outputs" + label,
                    f"{_fn_name(fn)} returned {len(got)} value(s); expected "
                    f"{len(case.names)}: {', '.join(case.names)}")
        return True
    expected = case.expected() if callable(case.expected) else case.expected
    for i, name in enumerate(case.names):
        _compare(report, name + label, name, case, i, got, expected, mistakes,
                 hints.get(name, ""))
    for k, (a, b) in enumerate(zip(case.args, passed, strict=True)):
        what = case.arg_names[k] if k < len(case.arg_names) else f"argument {k + 1}"
        if _same(a, b) or what in report.changed:
            continue
        report.changed.append(what)  # said once per report
        msg = f"changed in place by {_fn_name(fn)}: the caller still needs it (work on a copy)"
        if case.in_place:
            report.fail(what + label, "wrong: " + msg, ["this looks like: " + case.in_place])
        else:
            report.lines.append(f"! {what}{label}  {msg}")
    return True


def _mistake_outputs(case, mistake):
    call = case.call or (lambda f, a: f(*a))
    try:
        with np.errstate(all="ignore"):
            return _outputs(case, call(mistake, copy.deepcopy(case.args)))
    except Exception:  # a mistake that does not apply to these inputs
        return None


def _matches(g, m, e, threshold):
    m = _as_array(m)
    if m is None or m.shape != g.shape:
        return False
    if e.dtype.kind in "iub":
        return np.array_equal(g, m) and not np.array_equal(m, e)
    if m.shape != e.shape:
        return _error(g, m) < MATCH
    off = _error(m, e)  # how far the mistake is from the right answer
    return off > threshold and _error(g, m) < min(MATCH, 1e-3 * off)


def _near(a, b, tol):
    a, b = _as_array(a), _as_array(b)
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


def _compare(report, label, name, case, i, got, expected, mistakes, hint):
    """Compare output i (of all the outputs `got`); add its line(s) to the report."""
    g, e = got[i], np.asarray(expected[i])
    thr = case.threshold
    if g is None:
        report.fail(label, "is None: not implemented yet (or a missing `return`)")
        return False
    ga = _as_array(g)
    if ga is None:
        report.fail(label, f"is not a number or an array of numbers (got {_describe(g)})")
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
            report.lines.append(f"✓ {label}  right ({_must(0)})")
            return True
        w = _worst(ga, e)
        yours, exp = _pair(ga[w], e[w])
        where = f"first at {_index(name, w)}: " if e.ndim else ""
        found = _catalogue(ga, e, case, i, mistakes, 0, got, expected)
        if ga.ndim == 0:
            msg = f"wrong: yours {yours}, expected {exp} (difference {_value(ga - e, 4)})"
            details = found
        else:
            msg = f"wrong: {n_bad} of {e.size} entries differ"
            details = [f"{where}yours {yours}, expected {exp}", *found]
        report.fail(label, msg, details, "" if found else hint)
        return False
    err = _error(ga, e)
    scale = " x max|expected|" if e.ndim else " x |expected|"
    must = _must(thr)
    if not np.any(e):
        scale, must = "", must + "; the expected one is all zeros"
    if err <= thr and np.all(np.isfinite(ga)):
        report.lines.append(f"✓ {label}  max error {_num(err)}{scale} ({must})")
        return True
    w = _worst(ga, e)
    yours, exp = _pair(ga[w], e[w])
    where = f"worst at {_fmt_index(case, name, w, e.ndim)}: " if e.ndim else ""
    n_bad = int(np.sum(~np.isfinite(ga)))
    if n_bad:
        where = f"first at {_fmt_index(case, name, w, e.ndim)}: " if e.ndim else ""
        err_text = f"{n_bad} of {ga.size} entries are nan or inf" if e.ndim else \
            f"yours is {yours}"
    else:
        err_text = f"max error {_num(err)}{scale}"
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
    return _index(name, w)


def _run(title, fn, cases, mistakes=(), hints=None, show=True):
    """Run the learner's function on every case and print the report."""
    report = Report(title)
    if not callable(fn):
        report.fail("call", f"expects your function itself (got {_describe(fn)}): pass it "
                            "without calling it, e.g. check_x(my_fn), not check_x(my_fn())")
        return _show(report, show)
    for case in cases:
        if not _run_case(report, fn, case, mistakes, hints or {}):
            break
    return _show(report, show)


def _show(report, show):
    if show:
        print(report)
    return report


def _r(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# --- gradients -------------------------------------------------------------------------------


def _grad_case(forward, args, wrt, seed=0, reference=None, label="", learner_args=None,
               zero=None, hint="", arg_names=("dout", "cache")):
    """A case for a backward pass: the learner gets (dout, cache) from the package's forward
    (or learner_args(dout, cache, out)); the expected gradients are finite differences
    (five-point stencil, h = 1e-3) or, with `reference`, the package's gradient-checked
    backward. `zero` maps an input name to a mask of entries whose gradient is 0 by
    convention (the padding row)."""
    rng = np.random.default_rng(seed)
    values = list(args.values())
    out, cache = forward(*values)
    dout = rng.standard_normal(np.shape(out))
    dout = dout if np.ndim(out) else float(dout)
    learner = learner_args(dout, cache, out) if learner_args else (dout, cache)

    def expected():
        if reference is not None:
            return reference(dout, cache)
        grads = []
        for n in wrt:
            g = numerical_gradient(lambda: forward(*values)[0], args[n], dout, h=1e-3, order=4)
            if zero and n in zero:
                g[zero[n]] = 0.0
            grads.append(g)
        return tuple(grads)

    return _Case(learner, tuple("d" + n for n in wrt), expected, label, THRESHOLD,
                 arg_names=arg_names, hint=hint)


def check_backward(title, user_backward, forward, args, wrt, show=True, reference=None,
                   mistakes=(), hints=None):
    """Check a learner's backward pass for `forward` on the arrays in `args`.

    The learner's function is called as user_backward(dout, cache) with the cache made by the
    package's forward, and each returned gradient is compared with finite differences, or,
    when `reference` is given, with the package's own (gradient-checked) backward pass.
    `mistakes` is a list of (sentence, wrong_backward): a gradient that matches one of them
    gets its sentence; `hints` maps an output name ("dx") to a hint for when it is wrong.
    """
    case = _grad_case(forward, args, wrt, reference=reference)
    return _run(title, user_backward, [case], mistakes, hints, show)


def _sum_rows(a):
    return a.reshape(-1, a.shape[-1]).sum(0)


# embedding ----------------------------------------------------------------------------------


def _emb_no_add_at(dout, cache):
    idx, shape, dtype, pad = cache
    dwte = np.zeros(shape, dtype)
    dwte[idx.reshape(-1)] += dout.reshape(-1, shape[1])
    if pad is not None:
        dwte[pad] = 0
    return dwte


def _emb_no_padding(dout, cache):
    idx, shape, dtype, _ = cache
    dwte = np.zeros(shape, dtype)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, shape[1]))
    return dwte


EMBEDDING_MISTAKES = [
    ("dwte[idx] += dout drops repeated ids (only one of the updates to a row survives): "
     "use np.add.at(dwte, idx, dout)", _emb_no_add_at),
    ("padding row not zeroed: the row of padding_idx must get no gradient", _emb_no_padding),
]


def check_embedding_backward(fn, show=True):
    """fn(dout, cache) -> dwte (V, C), with cache = (idx, wte_shape, dtype, padding_idx).

    Tried with repeated token ids (which must accumulate) and with padding_idx=0, whose row
    must get no gradient."""
    rng = np.random.default_rng(1)
    wte = _r(rng, 7, 4)
    cases = [
        _grad_case(L.embedding_forward, {"idx": np.array([[1, 2, 2, 5, 1], [6, 1, 0, 2, 2]]),
                                         "wte": wte.copy()}, ["wte"], seed=1,
                   label="repeated ids"),
        _grad_case(lambda idx, wte: L.embedding_forward(idx, wte, padding_idx=0),
                   {"idx": np.array([[0, 3, 0, 2], [2, 0, 4, 4]]), "wte": wte.copy()},
                   ["wte"], seed=2, label="padding_idx=0", zero={"wte": np.arange(7) == 0}),
    ]
    return _run("embedding backward", fn, cases, EMBEDDING_MISTAKES, {
        "dwte": "row v of dwte collects dout from every position where idx == v"}, show)


# linear -------------------------------------------------------------------------------------


def _lin(dout, cache):
    return L.linear_backward(dout, cache)


def _lin_db_not_summed(dout, cache):
    dx, dw, _ = _lin(dout, cache)
    return dx, dw, dout.copy()


def _lin_db_sum_b_only(dout, cache):
    dx, dw, _ = _lin(dout, cache)
    return dx, dw, dout.sum(0)


def _lin_dw_transposed(dout, cache):
    dx, dw, db = _lin(dout, cache)
    return dx, dw.T, db


def _lin_dw_mean(dout, cache):
    dx, dw, db = _lin(dout, cache)
    n = dout.size // dout.shape[-1]
    return dx, dw / n, db / n


def _lin_dw_last(dout, cache):
    x, w = cache
    dx, _, db = _lin(dout, cache)
    return dx, x[-1].reshape(-1, w.shape[0]).T @ dout[-1].reshape(-1, w.shape[1]), db


LINEAR_MISTAKES = [
    ("db not summed over positions: b is added at every (b, t), so db sums dout over B and T",
     _lin_db_not_summed),
    ("db summed over B only: sum over every leading axis (B and T)", _lin_db_sum_b_only),
    ("dw = dout.T @ x (transposed): dw must have w's shape (Din, Dout)", _lin_dw_transposed),
    ("averaged over positions instead of summed (the loss already holds the mean)",
     _lin_dw_mean),
    ("dw from the last sequence only: flatten B and T before the product",
     _lin_dw_last),
]


def check_linear_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w) and x of shape (B, T, Din)."""
    rng = np.random.default_rng(2)
    case = _grad_case(L.linear_forward, {"x": _r(rng, 2, 3, 4), "w": _r(rng, 4, 5),
                                         "b": _r(rng, 5)}, ["x", "w", "b"], seed=2)
    return _run("linear backward", fn, [case], LINEAR_MISTAKES, {
        "call": "shapes: x (B, T, Din), w (Din, Dout), dout (B, T, Dout); each gradient has "
                "the shape of what it is the gradient of",
        "dx": "every output y_j uses x through w[:, j]: which product gives x's shape?",
        "dw": "w[i, j] is used at every position: sum x_i * dout_j over all (b, t)",
        "db": "b is used at every position"}, show)


# GELU ---------------------------------------------------------------------------------------

_K = math.sqrt(2.0 / math.pi)


def _gelu_erf(dout, cache):
    x, _ = cache
    erf = np.vectorize(math.erf)
    return dout * (0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) /
                   math.sqrt(2 * math.pi))


def _gelu_no_s1s(dout, cache):
    x, s = cache
    return dout * s


def _gelu_no_cubic(dout, cache):
    x, s = cache
    return dout * (s + x * 2 * s * (1 - s) * _K)


def _gelu_no_dout(dout, cache):
    x, s = cache
    return s * (1 + 2 * x * (1 - s) * _K * (1 + 3 * 0.044715 * x * x))


def _gelu_no_chain2(dout, cache):
    x, s = cache
    return dout * (s + x * s * (1 - s) * _K * (1 + 3 * 0.044715 * x * x))


GELU_MISTAKES = [
    ("used the exact erf-GELU derivative: this GELU is GPT-2's tanh approximation",
     _gelu_erf),
    ("dropped the s(1-s) term: s depends on x too (product rule on x * s(x))", _gelu_no_s1s),
    ("du/dx without the cubic term: u = sqrt(2/pi) (x + 0.044715 x^3)", _gelu_no_cubic),
    ("forgot to multiply by dout (the chain rule's upstream gradient)", _gelu_no_dout),
    ("s = sigmoid(2u), so ds/du = 2s(1-s), not s(1-s)",
     _gelu_no_chain2),
]


def check_gelu_backward(fn, show=True):
    """fn(dout, cache) -> dx, with cache = (x, s), s = sigmoid(2u) as in layers/gelu.py."""
    # a grid over the interesting range: both tails and the bend near 0
    x = np.linspace(-3.0, 3.0, 21).reshape(3, 7)
    case = _grad_case(L.gelu_forward, {"x": x}, ["x"], seed=3)
    return _run("GELU backward", fn, [case], GELU_MISTAKES, {
        "dx": "gelu(x) = x * s(x): the product rule, and s depends on x through u"}, show)


# layer norm ---------------------------------------------------------------------------------


def _ln_parts(dout, cache):
    x, w, mean, rstd = cache
    xhat = (x - mean) * rstd
    g = dout * w
    return xhat, g, rstd, _sum_rows(dout * xhat), _sum_rows(dout)


def _ln_no_mean(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True)), dw, db


def _ln_no_var(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return rstd * (g - g.mean(-1, keepdims=True)), dw, db


def _ln_no_w(dout, cache):
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    g = dout
    return rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)), \
        dw, db


def _ln_dw_not_summed(dout, cache):
    dx = L.layernorm_backward(dout, cache)[0]
    xhat, g, rstd, dw, db = _ln_parts(dout, cache)
    return dx, dout * xhat, dout


def _ln_dw_no_xhat(dout, cache):
    dx, _, db = L.layernorm_backward(dout, cache)
    return dx, db.copy(), db


def _ln_no_rstd(dout, cache):
    dx, dw, db = L.layernorm_backward(dout, cache)
    return dx / cache[3], dw, db


LAYERNORM_MISTAKES = [
    ("the -mean(g) term is missing: the mean of x depends on every x_i, so each dx_i gets a "
     "share of -mean(g)", _ln_no_mean),
    ("the -xhat*mean(g*xhat) term is missing: the variance (so rstd) depends on every x_i too",
     _ln_no_var),
    ("forgot the gain: the gradient reaching xhat is g = dout * w", _ln_no_w),
    ("dw and db not summed over B and T: w and b are used at every position",
     _ln_dw_not_summed),
    ("dw = sum(dout): y = w * xhat + b, so dw sums dout * xhat", _ln_dw_no_xhat),
    ("the factor rstd is missing: xhat = (x - mean) * rstd", _ln_no_rstd),
]


def check_layernorm_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw, db), with cache = (x, w, mean, rstd)."""
    rng = np.random.default_rng(4)
    case = _grad_case(L.layernorm_forward, {"x": _r(rng, 2, 3, 6, scale=3.0) + 1.5,
                                            "w": _r(rng, 6), "b": _r(rng, 6)},
                      ["x", "w", "b"], seed=4)
    return _run("layer norm backward", fn, [case], LAYERNORM_MISTAKES, {
        "dx": "x reaches xhat three ways: directly, through the mean and through rstd",
        "dw": "y = w * xhat + b, and w is used at every position",
        "db": "b is used at every position"}, show)


# softmax ------------------------------------------------------------------------------------


SOFTMAX_MISTAKES = [
    ("the -sum(dp*p) term is missing: every p_j depends on every score s_i, not only p_i",
     lambda p, dp: p * dp),
    ("only the diagonal of the Jacobian: dp*p*(1-p) misses how every other p_j depends on s_i",
     lambda p, dp: dp * p * (1 - p)),
    ("summed over the wrong axis: the softmax runs along the last axis",
     lambda p, dp: p * (dp - (dp * p).sum(0, keepdims=True))),
    ("summed over every axis: the sum runs along each row only (keepdims on the last axis)",
     lambda p, dp: p * (dp - (dp * p).sum())),
]


def check_softmax_backward(fn, show=True):
    """fn(p, dp) -> ds: the gradient through p = softmax(s) along the last axis."""
    rng = np.random.default_rng(5)

    def forward(s):
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        return p, p

    case = _grad_case(forward, {"s": _r(rng, 2, 3, 5)}, ["s"], seed=5,
                      learner_args=lambda dp, p, out: (p, dp), arg_names=("p", "dp"))
    return _run("softmax backward", fn, [case], SOFTMAX_MISTAKES, {
        "ds": "p_j = exp(s_j) / sum exp: write dp_j/ds_i for i = j and for i != j"}, show)


# attention ----------------------------------------------------------------------------------


def _attention_grads(dout, cache, scale=True, full_softmax=True, causal=True,
                     att_transposed=False):
    """attention's backward written out, with switches that make the usual mistakes."""
    qkv_cache, q, k, v, att, _, proj_cache = cache
    B, nh, T, hs = q.shape
    dy, dw_proj, db_proj = L.linear_backward(dout, proj_cache)
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    if not causal:  # the probabilities recomputed without the mask
        s = q @ k.swapaxes(-1, -2) / math.sqrt(hs)
        att = np.exp(s - s.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
    dv = (att if att_transposed else att.swapaxes(-1, -2)) @ dy
    datt = dy @ v.swapaxes(-1, -2)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) if full_softmax else att * datt
    c = 1 / math.sqrt(hs) if scale else 1.0
    dq, dk = ds @ k * c, ds.swapaxes(-1, -2) @ q * c
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)
    dx, dw_attn, db_attn = L.linear_backward(dqkv, qkv_cache)
    return dx, dw_attn, db_attn, dw_proj, db_proj


ATTENTION_MISTAKES = [
    ("forgot the 1/sqrt(hs) scale in the backward: the scores are (q k^T) / sqrt(hs), so dq "
     "and dk carry it too", lambda d, c: _attention_grads(d, c, scale=False)),
    ("causal mask not applied in the backward: probabilities recomputed without the mask let "
     "the future leak in", lambda d, c: _attention_grads(d, c, causal=False)),
    ("the softmax backward lacks its -sum(dp*p) term",
     lambda d, c: _attention_grads(d, c, full_softmax=False)),
    ("dv = att @ dy: it is att^T @ dy (value s is read by every query t >= s)",
     lambda d, c: _attention_grads(d, c, att_transposed=True)),
]


def check_attention_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw_attn, db_attn, dw_proj, db_proj) for causal multi-head
    attention, with the AttentionCache made by layers.attention_forward."""
    rng = np.random.default_rng(6)
    C = 8
    args = {"x": _r(rng, 2, 4, C), "w_attn": _r(rng, C, 3 * C, scale=0.5),
            "b_attn": _r(rng, 3 * C, scale=0.5), "w_proj": _r(rng, C, C, scale=0.5),
            "b_proj": _r(rng, C)}

    def forward(*a):
        return L.attention_forward(*a, n_head=2)

    # Compared with the package's backward rather than finite differences: the key bias has a
    # zero gradient (softmax ignores a shift of all scores) that differences only resolve to
    # ~1e-11, which would look like an error.
    case = _grad_case(forward, args, list(args), seed=6, reference=L.attention_backward)
    return _run("attention backward", fn, [case], ATTENTION_MISTAKES, {
        "call": "shapes: q, k, v (B, nh, T, hs), cache.probs (B, nh, T, T), dout (B, T, C)",
        "dx": "x feeds q, k and v: its gradient is the sum of the three paths",
        "dw_attn": "dq, dk and dv stacked back in the layout of the qkv projection's output",
        "db_attn": "the key part of b_attn gets exactly 0: softmax ignores a shift shared by "
                   "a whole row of scores"}, show)


# cross-entropy ------------------------------------------------------------------------------


def _ce_all_rows(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()
    dz[np.arange(len(yv)), yv] -= 1
    dz *= (valid * dloss / len(yv))[:, None]
    return dz.reshape(shape)


def _ce_not_zeroed(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    dz = probs.copy()
    dz[np.arange(len(yv)), yv] -= 1
    return (dz * dloss / max(n_valid, 1)).reshape(shape)


def _ce_no_dloss(dloss, cache):
    return L.softmax_cross_entropy_backward(1.0, cache)


def _ce_no_onehot(dloss, cache):
    probs, yv, valid, n_valid, shape = cache
    return (probs * (valid * dloss / max(n_valid, 1))[:, None]).reshape(shape)


CROSS_ENTROPY_MISTAKES = [
    ("divided by the number of all targets instead of the valid ones (the loss is a mean "
     "over the targets that count)", _ce_all_rows),
    ("ignored targets not zeroed: a row whose target is -1 gets no gradient at all",
     _ce_not_zeroed),
    ("forgot to multiply by dloss (the upstream gradient; here it is not 1)", _ce_no_dloss),
    ("forgot to subtract the one-hot target: d(-log p_y)/dz = p - onehot(y)", _ce_no_onehot),
]


def check_cross_entropy_backward(fn, show=True):
    """fn(dloss, cache) -> dlogits, with cache = (probs, yv, valid, n_valid, shape) as made
    by layers.softmax_cross_entropy_forward. Tried with some targets ignored (-1) and with
    all of them ignored (then the loss is 0 and so is its gradient)."""
    rng = np.random.default_rng(7)

    def forward(z, y):
        return L.softmax_cross_entropy_forward(z, y)

    cases = [
        _grad_case(forward, {"logits": _r(rng, 2, 3, 6, scale=2.0),
                             "targets": np.array([[0, -1, 2], [-1, 3, 4]])}, ["logits"],
                   seed=7, arg_names=("dloss", "cache"), label="some targets ignored"),
        _grad_case(forward, {"logits": _r(rng, 2, 3, 6, scale=2.0),
                             "targets": np.full((2, 3), -1)}, ["logits"], seed=8,
                   arg_names=("dloss", "cache"), label="all targets ignored",
                   hint="with every target ignored, n_valid is 0: nothing to learn from, so "
                        "the gradient is all zeros (not 0/0 = nan)"),
    ]
    return _run("softmax cross-entropy backward", fn, cases, CROSS_ENTROPY_MISTAKES, {
        "dlogits": "the loss is the mean of -log softmax(z)[y] over the valid targets"}, show)


# LM head ------------------------------------------------------------------------------------


def _lm_head_forward(x, wte):
    return x @ wte.T, (x, wte)


def _lm(dlogits, cache):
    x, wte = cache
    V, C = wte.shape
    return dlogits @ wte, dlogits.reshape(-1, V).T @ x.reshape(-1, C)


def _lm_dwte_t(dlogits, cache):
    dx, dwte = _lm(dlogits, cache)
    return dx, dwte.T


def _lm_dx_wte_t(dlogits, cache):
    x, wte = cache
    return dlogits @ wte.T, _lm(dlogits, cache)[1]


def _lm_dwte_first(dlogits, cache):
    x, wte = cache
    return _lm(dlogits, cache)[0], dlogits[0].T @ x[0]


def _lm_mean(dlogits, cache):
    dx, dwte = _lm(dlogits, cache)
    return dx, dwte / (dlogits.size // dlogits.shape[-1])


LM_HEAD_MISTAKES = [
    ("dwte transposed: dwte must have wte's shape (V, C)", _lm_dwte_t),
    ("dx used wte.T: logits = x @ wte.T, so dx = dlogits @ wte", _lm_dx_wte_t),
    ("dwte from the first sequence only: flatten B and T and sum over all positions",
     _lm_dwte_first),
    ("dwte averaged over positions instead of summed", _lm_mean),
]


def check_lm_head_backward(fn, show=True):
    """fn(dlogits (B, T, V), cache=(x (B, T, C), wte (V, C))) -> (dx, dwte) for the tied
    language-model head logits = x @ wte.T. Tried with V = C (where a transposed product
    still runs) and V != C."""
    rng = np.random.default_rng(12)
    cases = [_grad_case(_lm_head_forward, {"x": _r(rng, 2, 3, C), "wte": _r(rng, V, C)},
                        ["x", "wte"], seed=12 + V, label=f"C={C}, V={V}",
                        arg_names=("dlogits", "cache"))
             for C, V in ((5, 5), (4, 7))]
    return _run("LM head backward (logits = x @ wte.T)", fn, cases, LM_HEAD_MISTAKES, {
        "call": "shapes: dlogits (B, T, V), x (B, T, C), wte (V, C): which product gives dx "
                "(B, T, C), which one dwte (V, C)?",
        "dx": "logits[b, t, v] = sum_c x[b, t, c] wte[v, c]",
        "dwte": "wte[v, c] is used at every position (b, t)"}, show)


# --- values that are not gradients -----------------------------------------------------------


def _nll_sum(probs, tokens):
    return -np.sum(np.log(probs[np.arange(len(tokens)), tokens]))


SEQUENCE_NLL_MISTAKES = [
    ("sum instead of mean: the NLL here is the mean over the T tokens", _nll_sum),
    ("log of the wrong entries: probs[t, tokens[t]] is the probability of token t",
     lambda p, t: -np.mean(np.log(p[t, np.arange(len(t))]))),
    ("log of the wrong entries: probs[:, tokens] picks a (T, T) block, not one entry per row",
     lambda p, t: -np.mean(np.log(p[:, t]))),
    ("averaged log p over the whole table instead of picking the actual tokens",
     lambda p, t: -np.mean(np.log(p))),
    ("log base 2: the NLL uses the natural log (nats)",
     lambda p, t: -np.mean(np.log2(p[np.arange(len(t)), t]))),
]


def check_sequence_nll(fn, show=True):
    """fn(probs, tokens) -> the mean negative log-likelihood -(1/T) sum_t log P(x_t | x_<t),
    with probs (T, V) the model's next-token distributions and tokens (T,) the actual tokens."""
    rng = np.random.default_rng(9)
    e = np.exp(_r(rng, 6, 8))
    probs = e / e.sum(-1, keepdims=True)
    tokens = np.array([3, 0, 4, 4, 1, 2])
    expected = -np.mean(np.log(probs[np.arange(6), tokens]))
    case = _Case((probs, tokens), ("nll",), (expected,), arg_names=("probs", "tokens"),
                 call=lambda f, a: _scalar(f(*a)))
    return _run("sequence negative log-likelihood", fn, [case], SEQUENCE_NLL_MISTAKES, {
        "nll": "-(1/T) sum_t log probs[t, tokens[t]]"}, show)


def _scalar(x):
    """A 1-element array or a NumPy scalar as a number; anything else unchanged."""
    if isinstance(x, np.ndarray) and x.size == 1 and x.ndim <= 1:
        return x.reshape(()).item() if x.ndim == 0 else x
    return x


def _table(T, C, swap=False, exponent=None, start=0):
    pos = np.arange(start, T + start, dtype=np.float64)[:, None]
    i = np.arange(0, C, 2) if exponent is None else exponent(C)
    angle = pos / np.power(10000.0, i / C)
    out = np.empty((T, C))
    sin, cos = (np.cos, np.sin) if swap else (np.sin, np.cos)
    out[:, 0::2] = sin(angle)
    out[:, 1::2] = cos(angle[:, : C // 2])
    return out


def _table_halves(T, C):
    pos = np.arange(T, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(0, C, 2) / C)
    return np.concatenate([np.sin(angle), np.cos(angle[:, : C // 2])], axis=1)


def _table_per_column(T, C):
    pos = np.arange(T, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(C) / C)
    out = np.cos(angle)
    out[:, 0::2] = np.sin(angle[:, 0::2])
    return out


SINUSOIDAL_MISTAKES = [
    ("sin and cos swapped: even columns are sines, odd columns cosines",
     lambda T, C: _table(T, C, swap=True)),
    ("exponent 2i/C written as i/C: columns 2i and 2i+1 share the frequency 1/10000^(2i/C)",
     lambda T, C: _table(T, C, exponent=lambda C: np.arange((C + 1) // 2))),
    ("each column j used its own exponent j/C: the pair 2i, 2i+1 shares 2i/C",
     _table_per_column),
    ("sines in the first half and cosines in the second: this table interleaves them "
     "(even columns sin, odd columns cos)", _table_halves),
    ("positions start at 1: the first position is t = 0", lambda T, C: _table(T, C, start=1)),
]


def check_sinusoidal_table(fn, show=True):
    """fn(T, C) -> the (T, C) float64 table PE[t, 2i] = sin(t / 10000^(2i/C)),
    PE[t, 2i+1] = cos(...). Tried with an even and an odd C (then the last column is a sine)."""
    cases = [_Case((T, C), ("table",), (L.sinusoidal_table(T, C, np.float64),),
                   label=f"T={T}, C={C}", arg_names=("T", "C"),
                   hint="" if C % 2 == 0 else "with an odd C there is one more sine column "
                                              "than cosine columns")
             for T, C in ((16, 8), (7, 5))]
    return _run("sinusoidal position table", fn, cases, SINUSOIDAL_MISTAKES, {}, show)


def _adamw_ref(p, g, m, v, t, lr, betas, eps, wd, bias=True, l2=False, decay_after=False,
               eps_in=False, v_g=False, decay_no_lr=False, t_minus=0):
    b1, b2 = betas
    if l2:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g if v_g else g * g)
    tt = t - t_minus
    mh, vh = (m / (1 - b1**tt), v / (1 - b2**tt)) if bias else (m, v)
    step = mh / (np.sqrt(vh + eps) if eps_in else np.sqrt(vh) + eps)
    if l2:
        return p - lr * step, m, v
    if decay_after:
        return (p - lr * step) * (1 - lr * wd), m, v
    return p * (1 - (wd if decay_no_lr else lr * wd)) - lr * step, m, v


def _adamw_mistake(**kw):
    return lambda p, g, m, v, t, lr, betas, eps, wd: _adamw_ref(p, g, m, v, t, lr, betas, eps,
                                                                 wd, **kw)


ADAMW_MISTAKES = [
    ("no bias correction: m and v start at 0, so early on they are too small by "
     "(1 - beta^t)", _adamw_mistake(bias=False)),
    ("weight decay added to the gradient (Adam + L2, not AdamW): AdamW shrinks p directly, "
     "p *= 1 - lr * weight_decay", _adamw_mistake(l2=True)),
    ("weight decay applied after the update: decay the old p", _adamw_mistake(decay_after=True)),
    ("eps inside the square root: it is added to sqrt(v_hat)", _adamw_mistake(eps_in=True)),
    ("v averages g, not g * g (the squared gradient)", _adamw_mistake(v_g=True)),
    ("weight decay without the learning rate: p *= 1 - lr * weight_decay",
     _adamw_mistake(decay_no_lr=True)),
    ("bias correction with t - 1: t is already 1 at the first update",
     _adamw_mistake(t_minus=1)),
]


def check_adamw_step(fn, show=True):
    """fn(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v) after one AdamW update of a
    2-D weight, where t is the step number (1 for the first update)."""
    rng = np.random.default_rng(10)
    p, g = _r(rng, 3, 4), _r(rng, 3, 4)
    m, v = _r(rng, 3, 4) * 0.1, np.abs(_r(rng, 3, 4)) * 0.1
    args = (p, g, m, v, 3, 0.01, (0.9, 0.99), 1e-6, 0.1)
    case = _Case(args, ("p", "m", "v"), _adamw_ref(*args),
                 arg_names=("p", "g", "m", "v", "t", "lr", "betas", "eps", "weight_decay"))
    return _run("AdamW step", fn, [case], ADAMW_MISTAKES, {
        "m": "m is a moving average of the gradient with weight beta1",
        "v": "v is a moving average of the squared gradient with weight beta2",
        "p": "AdamW: decay p, then step by lr * m_hat / (sqrt(v_hat) + eps)"}, show)


_LR_ITS = (0, 5, 9, 10, 30, 55, 99, 100, 101, 150)
_LR_ARGS = (1e-3, 1e-4, 10, 100)


def _lr_no_warmup(it, lr, min_lr, warmup, decay):
    from ..training.optim import cosine_lr

    return cosine_lr(max(it, warmup), lr, min_lr, warmup, decay)


def _lr_no_floor(it, lr, min_lr, warmup, decay):
    from ..training.optim import cosine_lr

    if it < warmup:
        return cosine_lr(it, lr, min_lr, warmup, decay)
    r = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def _lr_to_zero(it, lr, min_lr, warmup, decay):
    from ..training.optim import cosine_lr

    return cosine_lr(it, lr, 0.0, warmup, decay)


def _lr_warmup(shift, denom_shift):
    def f(it, lr, min_lr, warmup, decay):
        from ..training.optim import cosine_lr

        if it < warmup:
            return lr * (it + shift) / (warmup + denom_shift)
        return cosine_lr(it, lr, min_lr, warmup, decay)
    return f


def _lr_ratio_from_zero(it, lr, min_lr, warmup, decay):
    from ..training.optim import cosine_lr

    if it < warmup or it > decay:
        return cosine_lr(it, lr, min_lr, warmup, decay)
    return min_lr + 0.5 * (1 + math.cos(math.pi * it / decay)) * (lr - min_lr)


COSINE_LR_MISTAKES = [
    ("no warmup: for it < warmup_iters the rate climbs linearly, lr * (it + 1) / "
     "(warmup_iters + 1)", _lr_no_warmup),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(0, 0)),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(1, 0)),
    ("warmup off by one: at it = 0 the rate is lr * 1 / (warmup_iters + 1)", _lr_warmup(0, 1)),
    ("no min_lr floor after the decay: past lr_decay_iters the rate stays at min_lr (the "
     "cosine would climb back up)", _lr_no_floor),
    ("decays to 0 instead of min_lr", _lr_to_zero),
    ("the cosine's progress counted from 0, not from the end of the warmup",
     _lr_ratio_from_zero),
]


def check_cosine_lr(fn, show=True):
    """fn(it, lr, min_lr, warmup_iters, lr_decay_iters) -> the learning rate (nanoGPT's),
    tried at iterations across the warmup, the decay and after it."""
    from ..training.optim import cosine_lr

    def call(f, args):
        out = []
        for it in _LR_ITS:
            value = f(it, *_LR_ARGS)
            if value is None:
                return None
            out.append(_scalar(value))
        try:
            return np.array(out, dtype=np.float64)
        except (TypeError, ValueError):
            return out

    expected = np.array([cosine_lr(i, *_LR_ARGS) for i in _LR_ITS])
    case = _Case((), ("lr",), (expected,), call=call,
                 index=lambda i: f"lr(it={_LR_ITS[i[0]]})")
    return _run("warmup + cosine learning rate (lr=1e-3, min_lr=1e-4, warmup_iters=10, "
                "lr_decay_iters=100)", fn, [case], COSINE_LR_MISTAKES, {
        "lr": "three pieces: a linear warmup, a cosine from lr down to min_lr, then min_lr"},
        show)


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
     "top_p, the crossing one included", lambda p, t: _top_p_ref(p, t, keep_crossing=False)),
    ("not renormalised: the kept probabilities must sum to 1 again",
     lambda p, t: _top_p_ref(p, t, renorm=False)),
    ("sorted in ascending order: the nucleus holds the *most* likely tokens",
     lambda p, t: _top_p_ref(p, t, ascending=True)),
    ("the kept probabilities were not put back in vocabulary order (still sorted)",
     lambda p, t: -np.sort(-_top_p_ref(p, t), -1)),
]


def check_top_p_filter(fn, show=True):
    """fn(probs, top_p) -> probs with everything outside the nucleus set to 0 and the rest
    renormalised; probs is (B, V), the nucleus is the smallest set of most likely tokens whose
    probability sums to >= top_p."""
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.05, 0.8, 0.1, 0.05]])
    case = _Case((probs, 0.75), ("probs",), (reference_top_p_filter(probs, 0.75),),
                 arg_names=("probs", "top_p"))
    return _run("top-p (nucleus) filter (top_p=0.75)", fn, [case], TOP_P_MISTAKES, {
        "probs": "sort each row, keep the most likely tokens until their sum reaches top_p"},
        show)


COSINE_SIMILARITY_MISTAKES = [
    ("not normalised: these are dot products; divide each row by its length first",
     lambda E: E @ E.T),
    ("normalised the columns instead of the rows (axis=0): each row is one vector",
     lambda E: (E / np.linalg.norm(E, axis=0, keepdims=True)) @
     (E / np.linalg.norm(E, axis=0, keepdims=True)).T),
    ("divided by the squared lengths: cos = a.b / (|a| |b|)",
     lambda E: (E @ E.T) / ((E * E).sum(1)[:, None] * (E * E).sum(1)[None, :])),
    ("only one side normalised: both vectors need unit length",
     lambda E: (E / np.linalg.norm(E, axis=1, keepdims=True)) @ E.T),
]


def check_cosine_similarity(fn, show=True):
    """fn(E) -> the (N, N) matrix of cosine similarities between the rows of E (N, C)."""
    E = _r(np.random.default_rng(11), 5, 3)
    case = _Case((E,), ("sim",), (reference_cosine_similarity(E),), arg_names=("E",))
    return _run("cosine similarity matrix", fn, [case], COSINE_SIMILARITY_MISTAKES, {
        "sim": "sim[i, j] = E[i].E[j] / (|E[i]| |E[j]|)"}, show)


def _pt_ref(ids, prompt_len, shift=0, x_masked=False, fill=-1, unshifted=False):
    x = ids[:, :-1].copy()
    y = (ids[:, :-1] if unshifted else ids[:, 1:]).copy()
    n = max(prompt_len - 1 + shift, 0)
    if x_masked:
        x[:, :n] = fill
    else:
        y[:, :n] = fill
    return x, y


def _pt_in_place(ids, prompt_len):
    y = ids[:, 1:]
    y[:, : prompt_len - 1] = -1
    return ids[:, :-1], y


_PT_IN_PLACE = ("modified ids in place: ids[:, 1:] is a view of ids, so writing -1 into it "
                "changes ids (and x); copy first")

PROMPT_TARGETS_MISTAKES = [
    ("masked one position too many: the target at position prompt_len - 1 is the first "
     "answer token, and it counts", lambda ids, n: _pt_ref(ids, n, shift=1)),
    ("masked one position too few: targets that are prompt tokens do not count",
     lambda ids, n: _pt_ref(ids, n, shift=-1)),
    ("masked the inputs x instead of the targets y", lambda ids, n: _pt_ref(ids, n, x_masked=True)),
    ("masked with 0: the loss ignores -1 (its ignore_index), 0 is a real token",
     lambda ids, n: _pt_ref(ids, n, fill=0)),
    ("y not shifted: the target at position t is the *next* token ids[t + 1]",
     lambda ids, n: _pt_ref(ids, n, unshifted=True)),
    (_PT_IN_PLACE, _pt_in_place),
]


def check_prompt_targets(fn, show=True):
    """fn(ids, prompt_len) -> (x, y) for training on 'prompt -> answer' examples: x = ids[:-1],
    y = ids[1:] with every target that lies inside the prompt set to -1 (ignored), so the
    loss only counts the answer. ids is (B, T+1), prompt_len the number of prompt tokens."""
    ids = np.array([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]])
    case = _Case((ids, 3), ("x", "y"), reference_prompt_targets(ids, 3),
                 arg_names=("ids", "prompt_len"), in_place=_PT_IN_PLACE)
    return _run("prompt masking for continuation tasks (prompt_len=3)", fn, [case],
                PROMPT_TARGETS_MISTAKES, {
        "x": "the inputs are every token but the last", "y": "targets are the next tokens; "
        "a target that is still a prompt token is set to -1"}, show)


def param_count(cfg):
    """Number of parameters of a GPT with config cfg, by formula (for checking exercises)."""
    C, V, Lr = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    per_block = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) \
        + (4 * C * C + C)
    wpe = cfg.block_size * C if cfg.pos_encoding == "learned" else 0
    return V * C + wpe + Lr * per_block + 2 * C


def _pc_no_biases(cfg):
    C = cfg.n_embd
    return param_count(cfg) - cfg.n_layer * (3 * C + C + 4 * C + C)


def _pc_always_wpe(cfg):
    wpe = cfg.block_size * cfg.n_embd if cfg.pos_encoding != "learned" else 0
    return param_count(cfg) + wpe


PARAM_COUNT_MISTAKES = [
    ("forgot the biases of the linear layers (3C + C + 4C + C per block)", _pc_no_biases),
    ("counted wpe with sinusoidal positions: the sinusoidal table is fixed, not a parameter",
     _pc_always_wpe),
    ("counted the tied head twice: the LM head reuses wte",
     lambda cfg: param_count(cfg) + cfg.vocab_size * cfg.n_embd),
    ("forgot the layer norms (a gain and a bias of C each: two per block, one at the end)",
     lambda cfg: param_count(cfg) - (4 * cfg.n_layer + 2) * cfg.n_embd),
    ("forgot the final layer norm ln_f", lambda cfg: param_count(cfg) - 2 * cfg.n_embd),
    ("forgot the position table wpe (block_size x C)",
     lambda cfg: param_count(cfg) - (cfg.block_size * cfg.n_embd
                                     if cfg.pos_encoding == "learned" else 0)),
    ("forgot the token embedding wte", lambda cfg: param_count(cfg) - cfg.vocab_size * cfg.n_embd),
]


def check_param_count(fn, show=True):
    """fn(cfg) -> the number of parameters of a GPT with that GPTConfig; tried with learned
    and with sinusoidal positions, and with GPT-2 small's sizes."""
    from ..models.gpt import GPTConfig, param_shapes

    configs = [("learned positions", GPTConfig()),
               ("sinusoidal positions", GPTConfig(pos_encoding="sinusoidal")),
               ("GPT-2 small", GPTConfig(vocab_size=50257, block_size=1024, n_layer=12,
                                         n_head=12, n_embd=768))]
    cases = [_Case((cfg,), ("n_params",),
                   (sum(math.prod(s) for s in param_shapes(cfg).values()),), label=label,
                   arg_names=("cfg",), call=lambda f, a: _int(f(*a)), threshold=0)
             for label, cfg in configs]
    return _run("parameter count", fn, cases, PARAM_COUNT_MISTAKES, {
        "n_params": "go through the model's parameters one by one: embeddings, per block "
                    "(two layer norms, attention, MLP), the final layer norm, the head"}, show)


def _int(x):
    x = _scalar(x)
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return int(x)
    return x


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
                ([4], (1, 2), 9), ([], (1, 2), 9)]


def check_merge(fn, show=True):
    """fn(ids, pair, new_id) -> a new list where every occurrence of `pair` in the list `ids`
    is replaced by `new_id`, scanning left to right (occurrences do not overlap: with pair
    (a, a), [a, a, a] becomes [new_id, a]). `ids` itself must not change."""
    cases = [_Case((list(ids), pair, new), ("out",), (np.array(bpe_merge(ids, pair, new),
                                                               dtype=np.int64),),
                   label=f"merge({ids}, {pair}, {new})", threshold=0,
                   arg_names=("ids", "pair", "new_id"),
                   in_place="modified ids in place: build and return a new list",
                   call=lambda f, a: _int_list(f(*a)), lists=True)
             for ids, pair, new in _MERGE_CASES]
    return _run("BPE merge", fn, cases, MERGE_MISTAKES, {
        "out": "walk i along the list: a match emits new_id and skips two tokens, else emit "
               "ids[i] and move one"}, show)


def _int_list(x):
    """The learner's list as an int64 array (an empty list too); anything else unchanged."""
    if isinstance(x, (list, tuple, np.ndarray)):
        a = _as_array(list(x))
        if a is not None and a.ndim == 1 and (a.size == 0 or a.dtype.kind in "iu"):
            return a.astype(np.int64)
    return x


def _surprisal_ref(z, t, base=2.0, axis=-1, stable=True):
    shift = z.max(axis, keepdims=True) if stable else 0.0
    lse = np.log(np.exp(z - shift).sum(axis, keepdims=True)) + shift
    logp = z - lse
    return -logp[np.arange(len(t)), t] / math.log(base)


SURPRISAL_MISTAKES = [
    ("natural log instead of bits: surprisal in bits is -log2 p = -ln p / ln 2",
     lambda z, t: _surprisal_ref(z, t, base=math.e)),
    ("overflow: exp of logits ~1e3 is inf; subtract the row max first (softmax does not "
     "change)", lambda z, t: _surprisal_ref(z, t, stable=False)),
    ("softmax over the wrong axis: each row (position) is one distribution over the "
     "vocabulary", lambda z, t: _surprisal_ref(z, t, axis=0)),
    ("-log2 of the logit itself: take the softmax first",
     lambda z, t: -np.log2(np.abs(z[np.arange(len(t)), t]))),
]


def check_token_surprisal(fn, show=True):
    """fn(logits (T, V), targets (T,)) -> (T,) surprisal in bits,
    -log2 softmax(logits)[t, targets[t]], which must stay finite for logits around 1e3."""
    rng = np.random.default_rng(13)
    cases = []
    for label, scale, offset in (("logits ~ 1", 2.0, 0.0), ("logits ~ 1e3", 30.0, 1000.0)):
        z = _r(rng, 5, 6, scale=scale) + offset
        t = np.array([2, 0, 5, 5, 1])
        cases.append(_Case((z, t), ("bits",), (reference_token_surprisal(z, t),), label=label,
                           arg_names=("logits", "targets")))
    return _run("token surprisal (bits)", fn, cases, SURPRISAL_MISTAKES, {
        "bits": "log softmax(z) = z - log sum exp(z), and log2 x = ln x / ln 2"}, show)


# --- the package's versions of the value exercises -------------------------------------------
# The checkers compare with these, and a notebook falls back to them until the learner's own
# function passes its checker, e.g.
#     top_p_filter = my_top_p_filter if report.ok else reference_top_p_filter


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


def reference_cosine_similarity(E):
    """E (N, C) -> (N, N) cosine similarities between its rows."""
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)  # (N, C)
    return unit @ unit.T


def reference_prompt_targets(ids, prompt_len):
    """ids (B, T+1) prompt-then-answer sequences -> (x, y), both (B, T): x = ids[:, :-1],
    y = ids[:, 1:] with the targets that are prompt tokens set to -1 (ignored by the loss)."""
    y = ids[:, 1:].copy()
    y[:, :prompt_len - 1] = -1
    return ids[:, :-1], y


def reference_token_surprisal(logits, targets):
    """logits (T, V), targets (T,) -> (T,) surprisal in bits, -log2 softmax(logits)[t, y_t]."""
    z = logits - logits.max(axis=-1, keepdims=True)  # (T, V), stable for large logits
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets] / np.log(2.0)


def bigram_model(ids, V, smoothing):
    """The bigram table of a token sequence (a reference for the course's exercise).

    Inputs: ids (N,) integer token ids in [0, V); V the vocabulary size; smoothing >= 0, the
    pseudo-count added to every pair (with 0, a token never followed by anything has a row of
    nan: 0/0).
    Returns P (V, V) float64: P[a, b] = (count(a -> b) + smoothing) / sum_b' (count(a -> b')
    + smoothing), the estimated probability that token b follows token a.
    """
    with np.errstate(invalid="ignore"):  # 0/0 = nan rows without smoothing
        return _bigram_ref(np.asarray(ids), V, smoothing)


def _bigram_ref(ids, V, s, norm=True, transpose=False, axis=1, wrap=False, smooth_after=False,
                row_smooth=False, buffered=False):
    c = np.zeros((V, V))
    a, b = (ids, np.roll(ids, -1)) if wrap else (ids[:-1], ids[1:])
    if buffered:
        c[a, b] += 1.0  # the trap: a pair that repeats is counted once
    else:
        np.add.at(c, (a, b), 1.0)
    if transpose:
        c = c.T
    if smooth_after:
        p = c / c.sum(axis, keepdims=True)
        return p + s
    if row_smooth:
        return (c + s) / (c.sum(axis, keepdims=True) + s)
    c = c + s
    return c / c.sum(axis, keepdims=True) if norm else c


BIGRAM_MISTAKES = [
    ("counts[a, b] += 1 with index arrays counts a repeated pair only once (fancy-index "
     "assignment is buffered): use np.add.at(counts, (a, b), 1)",
     lambda ids, V, s: _bigram_ref(ids, V, s, buffered=True)),
    ("rows not normalised: divide each row by its sum so that sum_b P[a, b] = 1",
     lambda ids, V, s: _bigram_ref(ids, V, s, norm=False)),
    ("smoothing forgotten: add `smoothing` to every count before normalising (a row with no "
     "counts would be 0/0)", lambda ids, V, s: _bigram_ref(ids, V, 0.0)),
    ("counts transposed: P[a, b] is the probability that b follows a (row a, column b)",
     lambda ids, V, s: _bigram_ref(ids, V, s, transpose=True)),
    ("normalised the columns instead of the rows", lambda ids, V, s: _bigram_ref(ids, V, s,
                                                                                 axis=0)),
    ("counted the pair (last, first) too: np.roll wraps around; pairs are (ids[i], ids[i+1]) "
     "for i < N - 1", lambda ids, V, s: _bigram_ref(ids, V, s, wrap=True)),
    ("smoothing added after normalising: add it to the counts",
     lambda ids, V, s: _bigram_ref(ids, V, s, smooth_after=True)),
    ("smoothing added once to the row sum: every one of the V entries gets it, so the row "
     "sum grows by V * smoothing", lambda ids, V, s: _bigram_ref(ids, V, s, row_smooth=True)),
]


def check_bigram_model(fn, show=True):
    """fn(ids (N,) int, V, smoothing) -> the (V, V) bigram table
    P[a, b] = (count(a -> b) + smoothing) / sum_b' (count(a -> b') + smoothing).
    Token 4 only occurs last (its row has no counts), token 5 never occurs."""
    ids = np.array([0, 1, 2, 1, 2, 3, 0, 1, 1, 2, 0, 3, 3, 2, 4])
    cases = [_Case((ids, 6, s), ("P",), (bigram_model(ids, 6, s),), label=f"smoothing={s}",
                   arg_names=("ids", "V", "smoothing")) for s in (1.0, 0.1)]
    return _run("bigram model", fn, cases, BIGRAM_MISTAKES, {
        "P": "count every neighbouring pair (ids[i], ids[i + 1]), add the smoothing, then "
             "normalise each row"}, show)


def fast_mode():
    """True in CI (CI=true) or with NUMPYGPT_FAST=1: notebooks shrink their training runs."""
    return os.environ.get("NUMPYGPT_FAST", "") not in ("", "0") or \
        os.environ.get("CI", "").lower() in ("1", "true", "yes")


__all__ = [name for name in dir() if name.startswith("check_")] + [
    "Report", "bigram_model", "fast_mode", "param_count"]


# --- fine-tuning (notebooks 16-18) -----------------------------------------------------------


# classification head ------------------------------------------------------------------------


def _cls_rows(dlogits, cache):
    """dlogits @ w.T: the gradient of each sequence's last hidden state, (B, C)."""
    return dlogits @ cache[3].T


def _cls_at_end(dlogits, cache):
    h_shape, lengths, last, w = cache
    dh = np.zeros(h_shape, dtype=dlogits.dtype)
    dh[:, -1] = _cls_rows(dlogits, cache)
    return dh, last.T @ dlogits, dlogits.sum(0)


def _cls_everywhere(dlogits, cache):
    h_shape, lengths, last, w = cache
    dh = np.broadcast_to(_cls_rows(dlogits, cache)[:, None, :], h_shape).copy()
    return dh, last.T @ dlogits, dlogits.sum(0)


def _cls_mean_pool(dlogits, cache):
    h_shape, lengths, last, w = cache
    real = (np.arange(h_shape[1])[None, :] < lengths[:, None]) / lengths[:, None]  # (B, T)
    dh = real[:, :, None] * _cls_rows(dlogits, cache)[:, None, :]
    return dh.astype(dlogits.dtype), last.T @ dlogits, dlogits.sum(0)


def _cls_dw_t(dlogits, cache):
    dh, dw, db = L.classifier_backward(dlogits, cache)
    return dh, dlogits.T @ cache[2], db


def _cls_db_not_summed(dlogits, cache):
    dh, dw, _ = L.classifier_backward(dlogits, cache)
    return dh, dw, dlogits.copy()


def _cls_db_mean(dlogits, cache):
    dh, dw, _ = L.classifier_backward(dlogits, cache)
    return dh, dw, dlogits.mean(0)


CLASSIFIER_MISTAKES = [
    ("the gradient went to position T-1 for every sequence: the head read position "
     "lengths[b] - 1, the last REAL token; a padded sequence's position T-1 is padding",
     _cls_at_end),
    ("the gradient was spread over every position: the head read one position per sequence, "
     "so dh is zero everywhere else (the padding and the earlier tokens)", _cls_everywhere),
    ("dh is mean pooling's gradient (divided over the real positions): this head reads only "
     "the last real token, which gets all of dlogits @ w.T", _cls_mean_pool),
    ("dw = dlogits.T @ last (transposed): dw must have w's shape (C, K), last.T @ dlogits",
     _cls_dw_t),
    ("db not summed over the batch: b is added to every sequence's logits, so db sums "
     "dlogits over B", _cls_db_not_summed),
    ("db averaged over the batch instead of summed (the loss already holds the mean)",
     _cls_db_mean),
]


def check_classifier_backward(fn, show=True):
    """fn(dlogits, cache) -> (dh, dw, db), with cache = (h_shape, lengths, last, w) as made
    by layers.classifier_forward(h, lengths, w, b): h (B, T, C) right-padded hidden states,
    lengths (B,) the real lengths, last (B, C) = h[b, lengths[b] - 1], w (C, K).
    Tried with padded sequences of different lengths, and with a sequence of length 1."""
    rng = np.random.default_rng(16)

    def case(lengths, seed, label):
        lengths = np.array(lengths)
        B, T = len(lengths), int(lengths.max())
        return _grad_case(lambda h, w, b: L.classifier_forward(h, lengths, w, b),
                          {"h": _r(rng, B, T, 5), "w": _r(rng, 5, 3), "b": _r(rng, 3)},
                          ["h", "w", "b"], seed=seed, label=label,
                          arg_names=("dlogits", "cache"))

    cases = [case([4, 2, 3], 16, "padded batch"), case([1, 5], 17, "a sequence of length 1")]
    return _run("classification head backward", fn, cases, CLASSIFIER_MISTAKES, {
        "call": "shapes: dlogits (B, K); cache = (h_shape, lengths, last, w), last (B, C), "
                "w (C, K); dh has h's shape (B, T, C)",
        "dh": "which positions of h did the forward pass read? every other one gets 0",
        "dw": "logits = last @ w + b, a linear layer on the (B, C) rows `last`",
        "db": "b is added to every sequence's logits"}, show)


# per-sequence mean cross-entropy --------------------------------------------------------------


def sequence_mean_ce_forward(logits, targets, ignore_index=-1):
    """The instruction-tuning loss that weighs every example alike: the mean over the B
    sequences of (the mean cross-entropy over that sequence's counted targets).

        loss = (1/B) sum_b (1/n_b) sum_{t: y[b,t] != -1} -log softmax(z[b, t])[y[b, t]]

    with n_b the number of counted targets of sequence b (each sequence must have one at
    least). The usual token mean, (1/N) sum over all N counted targets, lets a long answer
    weigh n_b times as much as a one-word one.

    Inputs: logits (B, T, V); targets int (B, T), ignore_index for the prompt and padding.
    Returns (loss, cache): loss a scalar of logits' dtype; cache = (probs (B, T, V), targets).
    """
    z = logits - logits.max(axis=-1, keepdims=True)  # (B, T, V)
    probs = np.exp(z)
    sumexp = probs.sum(axis=-1, keepdims=True)  # (B, T, 1)
    probs /= sumexp
    valid = targets != ignore_index  # (B, T)
    yv = np.where(valid, targets, 0)
    logp = np.take_along_axis(z, yv[..., None], axis=-1)[..., 0] - np.log(sumexp[..., 0])
    n = valid.sum(axis=1)  # (B,) counted targets per sequence
    per_seq = -(logp * valid).sum(axis=1) / n  # (B,)
    return logits.dtype.type(per_seq.mean()), (probs, targets)


def sequence_mean_ce_backward(dloss, cache, ignore_index=-1):
    """Backward of sequence_mean_ce_forward: dlogits (B, T, V), which is
    dloss * (probs - onehot(y)) / (B n_b) on the counted rows of sequence b, 0 elsewhere."""
    probs, targets = cache
    B = targets.shape[0]
    valid = targets != ignore_index  # (B, T)
    n = valid.sum(axis=1, keepdims=True)  # (B, 1)
    dz = probs.copy()  # (B, T, V)
    b_idx, t_idx = np.nonzero(valid)
    dz[b_idx, t_idx, targets[b_idx, t_idx]] -= 1  # p - onehot(y) on the counted rows
    weight = valid * (dloss / (B * n))  # (B, T): 1 / (B n_b) there, 0 elsewhere
    return dz * weight[..., None].astype(dz.dtype)


def _sce(dloss, cache, per="seq", zero=True):
    probs, targets = cache
    B = targets.shape[0]
    valid = targets != -1
    n = valid.sum(axis=1, keepdims=True)
    dz = probs.copy()
    b_idx, t_idx = np.nonzero(valid)
    dz[b_idx, t_idx, targets[b_idx, t_idx]] -= 1
    scale = {"seq": 1.0 / (B * n), "token": np.full_like(n, 1.0 / valid.sum(), dtype=float),
             "n_b": 1.0 / n, "B": np.full_like(n, 1.0 / B, dtype=float),
             "T": np.full_like(n, 1.0 / (B * targets.shape[1]), dtype=float)}[per]
    weight = (valid if zero else np.ones_like(valid)) * scale * dloss
    return dz * weight[..., None]


SEQUENCE_MEAN_CE_MISTAKES = [
    ("the token mean's gradient, (p - onehot) / N with N all the counted targets of the "
     "batch: here each sequence is averaged first, so a row of sequence b gets 1 / (B n_b)",
     lambda d, c: _sce(d, c, "token")),
    ("ignored rows not zeroed: a prompt or padding position (target -1) is not in the loss, "
     "so its logits get no gradient at all", lambda d, c: _sce(d, c, zero=False)),
    ("divided by n_b only: the outer mean over the B sequences adds a factor 1/B",
     lambda d, c: _sce(d, c, "n_b")),
    ("divided by B only: each sequence's loss is itself a mean over its n_b targets",
     lambda d, c: _sce(d, c, "B")),
    ("divided by B T (every position, padding and prompt included): n_b counts only the "
     "targets that are not -1", lambda d, c: _sce(d, c, "T")),
    ("forgot to multiply by dloss (the upstream gradient; here it is not 1)",
     lambda d, c: _sce(1.0, c)),
]


def check_sequence_mean_ce_backward(fn, show=True):
    """fn(dloss, cache) -> dlogits (B, T, V), the gradient of sequence_mean_ce_forward's
    loss, with cache = (probs (B, T, V), targets (B, T)), targets -1 where ignored. Tried
    with sequences whose numbers of counted targets differ, and with one sequence only."""
    rng = np.random.default_rng(17)
    cases = [
        _grad_case(sequence_mean_ce_forward,
                   {"logits": _r(rng, 3, 5, 6, scale=2.0),
                    "targets": np.array([[-1, -1, 2, 4, 0], [-1, 5, 1, -1, -1],
                                         [-1, -1, -1, -1, 3]])},
                   ["logits"], seed=17, arg_names=("dloss", "cache"),
                   label="3 sequences: 3, 2 and 1 targets"),
        _grad_case(sequence_mean_ce_forward,
                   {"logits": _r(rng, 1, 4, 6, scale=2.0),
                    "targets": np.array([[-1, 1, 1, -1]])},
                   ["logits"], seed=18, arg_names=("dloss", "cache"), label="one sequence"),
    ]
    return _run("per-sequence mean cross-entropy backward", fn, cases,
                SEQUENCE_MEAN_CE_MISTAKES, {
                    "call": "shapes: dloss a number; cache = (probs (B, T, V), targets (B, T)); "
                            "count each sequence's targets with targets != -1",
                    "dlogits": "write the loss as a weighted sum of per-row cross-entropies: "
                               "what weight does a counted row of sequence b carry?"}, show)


# LoRA -----------------------------------------------------------------------------------------


def _lora(dout, cache, scale=True, adapter=True, dA_t=False, dB_t=False):
    x, w, A, B, u, s = cache
    s = s if scale else 1.0
    Din, Dout = w.shape
    dy = dout.reshape(-1, Dout)
    x2 = x.reshape(-1, Din)
    du = s * dy @ B.T  # (N, r)
    dB = s * u.T @ dy  # (r, Dout)
    dA = x2.T @ du  # (Din, r)
    dx = dy @ w.T + (du @ A.T if adapter else 0.0)
    return dx.reshape(x.shape), (dA.T if dA_t else dA), (dB.T if dB_t else dB)


LORA_MISTAKES = [
    ("forgot the scale s = alpha / r: the adapter's output is s (x A) B, so s multiplies "
     "dA, dB and the adapter's share of dx", lambda d, c: _lora(d, c, scale=False)),
    ("dx without the adapter's term: x also flows through A, so dx = dy w^T + s (dy B^T) A^T",
     lambda d, c: _lora(d, c, adapter=False)),
    ("dA transposed (r, Din): dA = x^T (s dy B^T) has A's shape (Din, r)",
     lambda d, c: _lora(d, c, dA_t=True)),
    ("dB transposed (Dout, r): dB = s (x A)^T dy has B's shape (r, Dout)",
     lambda d, c: _lora(d, c, dB_t=True)),
]


def check_lora_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dA, dB), with cache = (x, w, A, B, u, scale) as made by
    layers.lora_forward(x, w, b, A, B, scale): x (B, T, Din), w (Din, Dout) frozen, A
    (Din, r), B (r, Dout), u = x @ A flattened to (N, r). w and b are frozen: no dw, no db.
    Tried with B != 0 (after some training: at B = 0, dA would be 0) and with rank 1."""
    rng = np.random.default_rng(18)

    def case(r, alpha, seed, label):
        w, b = _r(rng, 5, 4), _r(rng, 4)
        scale = alpha / r
        return _grad_case(lambda x, A, B: L.lora_forward(x, w, b, A, B, scale),
                          {"x": _r(rng, 2, 3, 5), "A": _r(rng, 5, r), "B": _r(rng, r, 4)},
                          ["x", "A", "B"], seed=seed, label=label)

    cases = [case(2, 3.0, 18, "r=2, alpha=3"), case(1, 4.0, 19, "r=1, alpha=4")]
    returned = []

    def counted(dout, cache):
        out = fn(dout, cache)
        returned.append(len(out) if isinstance(out, (tuple, list)) else 1)
        return out

    counted.__name__ = _fn_name(fn)
    report = _run("LoRA backward", counted if callable(fn) else fn, cases, LORA_MISTAKES, {
        "call": "shapes: dout (B, T, Dout); cache = (x, w, A, B, u, scale) with u = x @ A of "
                "shape (N, r), N = B T; flatten x and dout to (N, Din) and (N, Dout)",
        "dx": "x reaches the output along two paths: through w, and through A then B",
        "dA": "with u = x @ A, find du first: the adapter's output is scale * u @ B",
        "dB": "the adapter's output is scale * u @ B: a linear layer on u"}, show=False)
    if 4 in returned:
        at = next(i for i, ln in enumerate(report.lines) if ln.startswith("✗ outputs"))
        report.lines.insert(at + 1, "    this looks like: 4 values, a dw too? w is frozen: the "
                                    "layer returns no dw (not computing it is what LoRA saves)")
    return _show(report, show)


__all__ += ["check_classifier_backward", "check_sequence_mean_ce_backward",
            "check_lora_backward", "sequence_mean_ce_forward", "sequence_mean_ce_backward"]


# --- from GPT-2 to Llama (notebook 20) ---------------------------------------------------------


# RMSNorm --------------------------------------------------------------------------------------


def _rms_parts(dout, cache):
    x, rstd, w = cache
    xhat = x * rstd
    return xhat, dout * w, rstd, _sum_rows(dout * xhat)


def _rms(dout, cache, mean_term=False, var_term=True, gain=True, C_divide=True):
    xhat, g, rstd, dw = _rms_parts(dout, cache)
    g = g if gain else dout
    C = xhat.shape[-1]
    proj = (g * xhat).sum(-1, keepdims=True) / (C if C_divide else 1)
    dx = g - (xhat * proj if var_term else 0.0) - (g.mean(-1, keepdims=True) if mean_term
                                                   else 0.0)
    return rstd * dx, dw


RMSNORM_MISTAKES = [
    ("layer norm's -mean(g) term is still there: RMSNorm subtracts no mean, so no x_i "
     "reaches the output through a mean", lambda d, c: _rms(d, c, mean_term=True)),
    ("the -xhat*mean(g*xhat) term is missing: rstd depends on every x_i, so each dx_i gets a "
     "share of the change of scale", lambda d, c: _rms(d, c, var_term=False)),
    ("forgot the gain: the gradient reaching xhat is g = dout * w",
     lambda d, c: _rms(d, c, gain=False)),
    ("a sum where the mean belongs: rstd = 1/sqrt(mean(x^2) + eps), so its derivative "
     "carries a 1/C", lambda d, c: _rms(d, c, C_divide=False)),
    ("dw not summed over B and T: w is used at every position",
     lambda d, c: (_rms(d, c)[0], d * c[0] * c[1])),
    ("dw = sum(dout * x): y = w * xhat, so dw sums dout * xhat (x times rstd)",
     lambda d, c: (_rms(d, c)[0], _sum_rows(d * c[0]))),
]


def check_rmsnorm_backward(fn, show=True):
    """fn(dout, cache) -> (dx, dw), with cache = (x, rstd, w) as made by
    layers.rmsnorm_forward(x, w): x (B, T, C), rstd (B, T, 1) = 1 / sqrt(mean(x^2) + eps),
    w (C,). Tried on inputs far from zero mean (where layer norm's extra term would show)
    and with T = 1."""
    rng = np.random.default_rng(20)
    cases = [_grad_case(L.rmsnorm_forward, {"x": _r(rng, *shape, scale=2.0) + 1.5,
                                            "w": _r(rng, shape[-1])},
                        ["x", "w"], seed=seed, label=label)
             for shape, seed, label in [((2, 3, 6), 20, "B=2 T=3 C=6"),
                                        ((1, 1, 5), 21, "B=1 T=1 C=5")]]
    return _run("RMSNorm backward", fn, cases, RMSNORM_MISTAKES, {
        "call": "shapes: dout (B, T, C); cache = (x, rstd, w), rstd of shape (B, T, 1)",
        "dx": "x reaches the output two ways: directly, and through rstd (every x_i changes "
              "the root mean square)",
        "dw": "y = w * xhat, and w is used at every position"}, show)


__all__ += ["check_rmsnorm_backward"]


# --- data parallelism (notebook 19) ------------------------------------------------------------
#
# The learner gets a `worker(x_rows, y_rows) -> (loss, grads)` (a forward and backward of the
# model on some rows) and plays N workers of one global batch, then the all-reduce.


def _dp_model():
    from ..models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8)
    return GPT(cfg, seed=19, dtype=np.float64)


def _dp_worker(model, record=None):
    def worker(x_rows, y_rows):
        """Forward and backward on some rows: (mean loss over them, {name: gradient})."""
        if record is not None:
            record.append(np.shape(x_rows))
        _, loss = model.forward(np.asarray(x_rows), np.asarray(y_rows))
        return float(loss), model.backward()

    return worker


def _dp(worker, x, y, N, loss_div=None, grad_div=None, shard=None, workers=None):
    """The data-parallel gradient, and its mistakes: worker r takes rows shard(r, B, N)."""
    B = len(x)
    shard = shard or (lambda r, B, N: (slice(r * B // N, (r + 1) * B // N),))
    loss, grads = 0.0, None
    for r in range(N if workers is None else workers):
        rows = shard(r, B, N)
        loss_r, g = worker(x[rows], y[rows])
        loss += loss_r
        grads = {k: v.copy() for k, v in g.items()} if grads is None else \
            {k: grads[k] + g[k] for k in grads}  # the all-reduce: a sum
    loss_div, grad_div = loss_div or N, grad_div or N
    return loss / loss_div, {k: v / grad_div for k, v in grads.items()}


DATA_PARALLEL_MISTAKES = [
    ("no 1/N anywhere: losses and gradients summed over the workers; each worker's loss is "
     "already a mean over its B/N rows, so the batch mean is the mean of the N means",
     lambda w, x, y, N: _dp(w, x, y, N, loss_div=1, grad_div=1)),
    ("the losses averaged but the gradients summed: the gradient of a mean of N losses is the "
     "mean of their gradients, so the all-reduced sum needs the same 1/N",
     lambda w, x, y, N: _dp(w, x, y, N, grad_div=1)),
    ("the gradients averaged but the losses summed: the batch's loss is the mean of the "
     "workers' losses", lambda w, x, y, N: _dp(w, x, y, N, loss_div=1)),
    ("divided by B (the rows) instead of N (the workers): each worker's loss is already a "
     "mean over its rows", lambda w, x, y, N: _dp(w, x, y, N, loss_div=len(x),
                                                  grad_div=len(x))),
    ("every worker took the first B/N rows: worker r's rows start at r B/N",
     lambda w, x, y, N: _dp(w, x, y, N, shard=lambda r, B, N: (slice(0, B // N),))),
    ("one worker missing (range(N - 1)?): the last B/N rows never reach the sum",
     lambda w, x, y, N: _dp(w, x, y, N, workers=N - 1)),
    ("split along T (the columns x[:, ...]), not along the batch: a worker then sees pieces of "
     "sequences, at the wrong positions",
     lambda w, x, y, N: _dp(w, x, y, N, shard=lambda r, B, N: (
         slice(None), slice(r * x.shape[1] // N, (r + 1) * x.shape[1] // N)))
     if x.shape[1] % N == 0 else None),
]


def reference_data_parallel_grads(worker, x, y, N):
    """N workers, worker r on rows [r B/N, (r+1) B/N); the mean of their losses and of their
    gradients (the all-reduced sum / N)."""
    return _dp(worker, x, y, N)


def check_data_parallel_grads(fn, show=True):
    """fn(worker, x, y, N) -> (loss, grads): play N data-parallel workers on the global batch
    (x, y) of shape (B, T), worker(x_rows, y_rows) -> (mean loss, {name: gradient}) being one
    worker's forward and backward; the result must be the loss and gradients of the whole
    batch. Tried with B=4, N=2 and B=6, N=3 on a one-block GPT in float64."""
    model = _dp_model()
    keys = list(model.params)
    sizes = [model.params[k].size for k in keys]
    starts = np.cumsum([0, *sizes])
    calls = {}

    def flat(result):
        # (loss, {name: grad}) -> (loss, one flat array in the model's order), if it is that
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            return result
        loss, grads = result
        if not isinstance(grads, dict) or set(grads) != set(keys):
            return result
        try:
            return loss, np.concatenate([np.asarray(grads[k], np.float64).ravel()
                                         for k in keys])
        except (ValueError, TypeError):
            return result

    def call(f, args):
        calls[id(f)] = []
        return flat(f(_dp_worker(model, calls[id(f)]), *args))

    def index(w):
        i = int(w[0])
        j = int(np.searchsorted(starts, i, side="right")) - 1
        at = np.unravel_index(i - starts[j], model.params[keys[j]].shape)
        return f"grads['{keys[j]}'][{', '.join(str(int(a)) for a in at)}]"

    rng = np.random.default_rng(19)
    cases = []
    for B, N in ((4, 2), (6, 3)):
        x, y = rng.integers(0, 7, (B, 6)), rng.integers(0, 7, (B, 6))  # (B, T)
        _, loss = model.forward(x, y)
        g = model.backward()  # the whole batch at once: what N workers must reproduce
        expected = (float(loss), np.concatenate([g[k].ravel() for k in keys]))
        cases.append(_Case((x, y, N), ("loss", "grads"), expected, f"B={B}, N={N}",
                           threshold=1e-10, call=call, arg_names=("x", "y", "N"),
                           index=index))
    report = _run("data-parallel gradients", fn, cases, [
        (s, _named(m)) for s, m in DATA_PARALLEL_MISTAKES], {
        "call": "fn(worker, x, y, N): worker(x_rows, y_rows) returns (loss, grads); return "
                "(loss, grads) of the whole batch, grads a dict like the worker's",
        "loss": "each worker's loss is the mean over its own rows",
        "grads": "a dict {name: gradient} with the worker's keys; the gradient of a mean is "
                 "the mean of the gradients"}, show=False)
    _prefer(report, DATA_PARALLEL_MISTAKES[0][0])
    shapes = calls.get(id(fn))  # the last case's calls: B=6, N=3
    if report.ok and shapes is not None and shapes != [(2, 6)] * 3:
        report.fail("calls", f"the right numbers, but worker was called on "
                             f"{[s[0] for s in shapes]} rows (B=6, N=3): each of the N "
                             f"workers computes only its B/N rows, one call each")
    return _show(report, show)


def _prefer(report, sentence):
    """Where `sentence` names the mistake under an output, drop the other "this looks like"
    sentences there: "no 1/N anywhere" also fits, output by output, the mistakes that forget
    the 1/N only on the loss or only on the gradients."""
    looks = "    this looks like: "
    head = looks + sentence[:40]
    out, block = [], []
    for line in [*report.lines, "✓"]:  # the sentinel ends the last block (and is dropped)
        if line.startswith(" "):
            block.append(line)
            continue
        entries = _split_entries(block)
        if any(e.startswith(head) for e in entries):
            entries = [e for e in entries if not e.startswith(looks) or e.startswith(head)]
        out += [ln for e in entries for ln in e.split("\n")]
        block = [line]
    report.lines = out
    return report


def _split_entries(block):
    """The lines of a block joined into entries: a line with its wrapped continuations."""
    entries = []
    for line in block:
        if line.startswith("      ") and entries:
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return entries


def _named(mistake):
    """A mistake that returns None for inputs where it does not apply (raises instead)."""
    def run(*args):
        out = mistake(*args)
        if out is None:
            raise ValueError("does not apply")
        return out

    return run


__all__ += ["check_data_parallel_grads", "reference_data_parallel_grads"]
