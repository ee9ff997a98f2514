"""A checker's verdict, the Report, and how it writes errors, values and positions."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import numpy as np


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
    remarked: list = field(default_factory=list)  # outputs of a case with more digits than asked
    raised: list = field(default_factory=list)  # the errors the learner's code raised
    said: list = field(default_factory=list)  # diagnoses said once for every case

    @property
    def ok(self):
        return not self.wrong and not self.not_implemented

    def add(self, name, err, threshold, hint="", details=()):
        """One output compared by its error `err` (already measured): a ✓ or a ✗ line, with
        `details` and the `hint` as indented lines under a wrong one."""
        text = f"max error {num_text(err)} x max|expected| ({must_text(threshold)})"
        if err <= threshold:
            self.lines.append(f"✓ {name}  {text}")
        else:
            self.fail(name, "wrong: " + text, details, hint)

    def fail(self, name, message, details=(), hint="", quiet=False):
        """A wrong output: its line, then the indented details and the hint (`quiet`: counted
        in the verdict, not shown, for a diagnosis already said for an earlier case)."""
        if not quiet:
            self.lines.append(f"✗ {name}  {message}")
        for d in [] if quiet else [*details, *(["hint: " + hint] if hint else [])]:
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


def must_text(threshold):
    return "must match exactly" if threshold == 0 else f"must be < {threshold:.0e}"


def num_text(x):
    """An error measure: 3 significant digits in a readable range, else scientific."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return str(x if x else 0)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.1e}"


def value_text(x, digits):
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10000 else str(int(x))
    x = float(x)
    return str(x) if not math.isfinite(x) else f"{x:.{digits}g}"


def pair_text(a, b):
    """Two numbers with just enough digits to tell them apart (at least 4)."""
    for d in range(4, 18):
        sa, sb = value_text(a, d), value_text(b, d)
        if sa != sb or a == b:
            return sa, sb
    return sa, sb


def index_text(name, i):
    return f"{name}[{', '.join(str(int(k)) for k in i)}]" if i else name


def fn_name(fn):
    name = getattr(fn, "__name__", "")
    return name if name and name != "<lambda>" else "your function"
