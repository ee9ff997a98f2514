"""The machinery every checker uses: a Case (one call of the learner's function and what its
outputs must be), `run` (calls the learner's function on every case without ever letting it
raise, compares each output and prints the Report), `grad_case` and `check_backward` for
backward passes, and the small helpers the chapters' checkers share.

Thresholds follow the dtype (diagnosis.threshold): a float64 case asks for what float64
rounding allows, a float32 case (inputs in float32, as training runs) for what float32
rounding allows, and a gradient never for less than finite differences can resolve
(gradcheck.THRESHOLD). A float32 case runs once the float64 cases pass: its looser threshold
could not show a mistake they did not, and it checks what is new there, that the function
works in the dtype it is given."""

from __future__ import annotations

import copy
import os
import textwrap
import traceback
from dataclasses import dataclass

import numpy as np

from ...gradcheck import THRESHOLD, numerical_gradient
from .diagnosis import (
    compare,
    describe,
    find_swaps,
    fits,
    outputs_of,
    split_outputs,
    upcast_remark,
)
from .report import Report, fn_name

# --- calling the learner's function ----------------------------------------------------------


class _Stub(Exception):
    """The learner's function raised NotImplementedError."""


class _Raised(Exception):
    """The learner's function raised some other exception (kept in .error)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


_NUMPY_DIR = os.path.dirname(np.__file__)
_CHECKERS_DIR = os.path.dirname(os.path.abspath(__file__))  # every file of this package


def _learner_frames(error):
    """The traceback lines of the learner's own code: not the checkers', not NumPy's."""
    lines = []
    for fr in traceback.extract_tb(error.__traceback__):
        if _is_checker_file(fr.filename) or fr.filename.startswith(_NUMPY_DIR):
            continue
        where = "" if _is_notebook_cell(fr.filename) else f"{os.path.basename(fr.filename)}, "
        code = f":  {fr.line.strip()}" if fr.line else ""
        lines.append(f"at {where}line {fr.lineno}, in {fr.name}{code}")
    return lines[-4:]


def _is_checker_file(filename):
    return os.path.dirname(os.path.abspath(filename)) == _CHECKERS_DIR


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


# --- running the cases -----------------------------------------------------------------------


class Opaque:
    """The learner's own cache, handed through the checker's deep copies untouched (it may
    hold anything, even a Generator); the learner's backward gets a deep copy of it."""

    def __init__(self, value):
        self.value = value

    def __deepcopy__(self, memo):
        return self


def learner_cache(report, forward, args, judge, checker, label):
    """For a backward's checker, which works on the cache the learner's own forward returns:
    call forward on deep copies of args. Returns its result (output, cache), or None after
    writing in `report` why the backward cannot be checked yet: the forward raises
    NotImplementedError (report.not_implemented), raises anything else, or judge(result)
    names what is wrong with it ("" when it is right; `checker` is the check to pass
    first)."""
    try:
        with np.errstate(all="ignore"):
            result = forward(*copy.deepcopy(args))
    except NotImplementedError:
        report.lines.append(f"✗ {fn_name(forward)} raises NotImplementedError: not "
                            "implemented yet (the backward is checked on the cache your "
                            "forward returns)")
        report.not_implemented = True
        return None
    except Exception as e:  # the learner's forward failed: say so, never raise
        why = f"raised {type(e).__name__}"
    else:
        why = judge(result)
    if why:
        report.fail(f"forward ({label})", f"{fn_name(forward)} {why}: make {checker} pass "
                    "first (the backward is checked on the cache your forward returns)")
        return None
    return result


@dataclass
class Case:
    """One call of the learner's function and what its outputs must be."""

    args: tuple  # the learner's function is called with deep copies of these
    names: tuple  # one per output
    expected: object  # tuple of arrays/numbers, or a function computing it (lazily)
    label: str = ""  # e.g. "padding_idx=0": shown after the output names
    threshold: float = None  # a floor under the dtype's rounding threshold (0: none)
    call: object = None  # call(fn, args) -> outputs; default fn(*args)
    arg_names: tuple = ()  # to say which input was changed in place
    in_place: str = ""  # if set, modifying an input is this mistake here, not a remark
    index: object = None  # index formatter for 1-D outputs, e.g. lr(it=10)
    hint: str = ""  # shown under a wrong output of this case
    lists: bool = False  # the outputs are lists: say "length", not "shape"
    terms: int = None  # the longest sum the computation makes (default: from the inputs)
    dtype: object = None  # the float outputs' dtype (default: the inputs'); a tuple: any of
    #                       these, the threshold following the answer's
    strict_dtype: bool = True  # more digits than the inputs: a mistake (False: a remark)
    after_pass: bool = False  # tried only if every case before it passed (a float32 case)
    alternatives: tuple = ()  # (sentence, fn): other right answers, accepted and named


def _run_case(report, fn, case, mistakes, hints):
    """Run one case; returns False when the checker must stop (a stub)."""
    call = case.call or (lambda f, a: f(*a))
    label = f" ({case.label})" if case.label else ""
    passed = copy.deepcopy(case.args)
    try:
        result = _call(lambda: call(fn, passed))
    except _Stub:
        where = label if report.lines else ""  # which case, if an earlier one ran
        report.lines.append(f"✗ {fn_name(fn)} raises NotImplementedError{where}: "
                            "not implemented yet")
        report.not_implemented = True
        return False
    except _Raised as r:
        _report_raised(report, fn, case, label, r.error, hints)
        return True
    if result is None:
        where = label if report.lines else ""
        report.lines.append(f"✗ {fn_name(fn)} returned None{where}: not implemented yet "
                            "(or a missing `return`)")
        report.not_implemented = True
        return False
    if len(case.names) == 1 and isinstance(result, tuple):
        report.fail("outputs" + label, f"{fn_name(fn)} returned a tuple of {len(result)}; "
                                       f"expected {case.names[0]} alone")
        return True
    got = split_outputs(case, result)
    if len(got) != len(case.names):
        report.fail("outputs" + label,
                    f"{fn_name(fn)} returned {len(got)} value(s); expected "
                    f"{len(case.names)}: {', '.join(case.names)}")
        return True
    expected = case.expected() if callable(case.expected) else case.expected
    expected = _alternative(report, case, got, expected)
    swaps, permuted = find_swaps(case, got, expected)
    for i, name in enumerate(case.names):
        compare(report, name + label, name, case, i, got, expected, mistakes,
                hints.get(name, ""), swaps.get(i), permuted)
    upcast_remark(report, label)
    for k, (a, b) in enumerate(zip(case.args, passed, strict=True)):
        what = case.arg_names[k] if k < len(case.arg_names) else f"argument {k + 1}"
        if _same(a, b) or what in report.changed:
            continue
        report.changed.append(what)  # said once per report
        msg = f"changed in place by {fn_name(fn)}: the caller still needs it (work on a copy)"
        if case.in_place:
            report.fail(what + label, "wrong: " + msg, ["this looks like: " + case.in_place])
        else:
            report.lines.append(f"! {what}{label}  {msg}")
    return True


def _report_raised(report, fn, case, label, e, hints):
    """The learner's code raised: the error, where the checker was (its notes, e.g. the
    step), and the learner's own lines; an error already shown for an earlier case is not
    shown again."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    frames = _learner_frames(e)
    if (text, frames) in report.raised:
        return
    report.raised.append((text, frames))
    short = len(text) <= 70 and "\n" not in text
    notes = [n for n in getattr(e, "__notes__", []) if n.startswith("at ")]
    where = f" ({'; '.join(notes)})" if notes else ""
    report.fail("call" + label, f"{fn_name(fn)} raised " + (text if short else
                                                             type(e).__name__) + where,
                [*([] if short else [str(e)[:300]]), *frames],
                case.hint or hints.get("call", ""))


def _alternative(report, case, got, expected):
    """The expected outputs, or those of an accepted alternative form (Kingma & Ba's Adam)
    when the learner's match it and not the textbook's; the alternative is named once."""
    n = len(case.names)
    if not case.alternatives or all(fits(case, got[k], expected[k]) for k in range(n)):
        return expected
    wide = copy.copy(case)
    wide.args = _as_float64(case.args)  # the alternative computed exactly
    for sentence, form in case.alternatives:
        out = outputs_of(wide, form)
        if out is not None and len(out) == n and all(fits(case, got[k], out[k])
                                                     for k in range(n)):
            lines = textwrap.wrap(f"✓ {sentence}", 96, subsequent_indent="    ",
                                  break_on_hyphens=False)
            if lines[0] not in report.lines:  # named once
                report.lines.extend(lines)
            return out
    return expected


def run(title, fn, cases, mistakes=(), hints=None, show=True):
    """Run the learner's function on every case and print the report."""
    report = Report(title)
    if not callable(fn):
        report.fail("call", f"expects your function itself (got {describe(fn)}): pass it "
                            "without calling it, e.g. check_x(my_fn), not check_x(my_fn())")
        return show_report(report, show)
    for case in cases:
        if case.after_pass and not report.ok:
            continue  # a float32 case: once the float64 ones pass
        if not _run_case(report, fn, case, mistakes, hints or {}):
            break
    return show_report(report, show)


def show_report(report, show):
    """Print the report if asked to; return it (every checker ends with this)."""
    if show:
        print(report)
    return report


# --- gradients -------------------------------------------------------------------------------


def grad_case(forward, args, wrt, seed=0, reference=None, label="", learner_args=None,
              zero=None, hint="", arg_names=("dout", "cache"), dtype=np.float64, terms=None,
              strict_dtype=False):
    """A case for a backward pass: the learner gets (dout, cache) from the package's forward
    (or learner_args(dout, cache, out)); the expected gradients are finite differences
    (five-point stencil, h = 1e-3) or, with `reference`, the package's gradient-checked
    backward. `zero` maps an input name to a mask of entries whose gradient is 0 by
    convention (the padding row).

    With dtype=np.float32 the float inputs, the forward pass and dout are float32 (as in
    training) while the expected gradients are still computed in float64 from the same
    values, so that the threshold is float32's rounding alone; such a case is tried once the
    float64 ones pass. `terms` is the longest sum the forward and backward make (default:
    from the inputs, see diagnosis.case_terms)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    args = {k: _as_dtype(v, dtype) for k, v in args.items()}
    values = list(args.values())
    out, cache = forward(*values)
    dout = rng.standard_normal(np.shape(out)).astype(dtype)
    dout = dout if np.ndim(out) else float(dout)
    learner = learner_args(dout, cache, out) if learner_args else (dout, cache)

    def expected():
        wide = {k: _as_dtype(v, np.float64) for k, v in args.items()}  # the same values
        vals = list(wide.values())
        d64 = np.asarray(dout, dtype=np.float64) if np.ndim(out) else dout
        if reference is not None:
            return reference(d64, forward(*vals)[1])
        grads = []
        for n in wrt:
            g = numerical_gradient(lambda: forward(*vals)[0], wide[n], d64, h=1e-3, order=4)
            if zero and n in zero:
                g[zero[n]] = 0.0
            grads.append(g)
        return tuple(grads)

    return Case(learner, tuple("d" + n for n in wrt), expected, label, THRESHOLD,
                arg_names=arg_names, hint=hint, terms=terms, dtype=dtype,
                strict_dtype=strict_dtype, after_pass=dtype != np.float64)


def _as_dtype(x, dtype):
    """A copy of x in `dtype` if it is a float array, else x itself."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(dtype)
    return x


def _as_float64(x):
    """x with every float32 array inside (tuples, lists, named tuples) as float64."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(np.float64)
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_as_float64(y) for y in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_as_float64(y) for y in x)
    return x


def check_backward(title, user_backward, forward, args, wrt, show=True, reference=None,
                   mistakes=(), hints=None):
    """Check a learner's backward pass for `forward` on the arrays in `args`.

    The learner's function is called as user_backward(dout, cache) with the cache made by the
    package's forward, and each returned gradient is compared with finite differences, or,
    when `reference` is given, with the package's own (gradient-checked) backward pass.
    `mistakes` is a list of (sentence, wrong_backward): a gradient that matches one of them
    gets its sentence; `hints` maps an output name ("dx") to a hint for when it is wrong.
    """
    case = grad_case(forward, args, wrt, reference=reference)
    return run(title, user_backward, [case], mistakes, hints, show)


# --- helpers the chapters share --------------------------------------------------------------


def variant(reference, **switches):
    """A catalogued mistake made by switching something off (or on) in a reference written
    with switches: called like the learner's function, it returns reference(*args, **switches)."""
    return lambda *args: reference(*args, **switches)


def randn(rng, *shape, scale=1.0):
    """Standard normal numbers of this shape, times `scale`."""
    return rng.standard_normal(shape) * scale


def sum_rows(a):
    """The sum over every axis but the last (a parameter's gradient, summed over B and T)."""
    return a.reshape(-1, a.shape[-1]).sum(0)


def as_scalar(x):
    """A 0-d array as a NumPy number of its dtype (so that a float32 answer is judged as
    float32); anything else unchanged."""
    if isinstance(x, np.ndarray) and x.size == 1 and x.ndim <= 1:
        return x[()] if x.ndim == 0 else x
    return x


def fast_mode():
    """True in CI (CI=true) or with NUMPYGPT_FAST=1: notebooks shrink their training runs."""
    return os.environ.get("NUMPYGPT_FAST", "") not in ("", "0") or \
        os.environ.get("CI", "").lower() in ("1", "true", "yes")
