"""NumPy's docstrings, parsed: the summary line and the extended description that the
built-in fine-tuning tasks are made from (numpy-topics, numpy-qa, numpy-summaries).

numpydoc layout: an optional call signature, a one-paragraph summary, an extended
description, then sections underlined with dashes ("Parameters\n----------").
"""

from __future__ import annotations

import re
from typing import NamedTuple


def is_signature(text):
    """Is this line (or paragraph) a call signature, as ufuncs, methods and C functions start
    their docstrings with: "add(x1, x2, /, out=None, ...)", "a.copy(order='C')",
    "int8.bit_count() -> int"? The parenthesis after the name must close at the end (or
    before a "-> type"), so "sum(a) of the elements (see notes)" is not one."""
    m = re.match(r"[A-Za-z_][\w.]*\(", text)
    if not m:
        return False
    depth = 0
    for i in range(m.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return re.fullmatch(r"(\s*->\s*\S.*)?", text[i + 1:]) is not None
    return False


_UNDERLINE = re.compile(r"-{3,}")  # numpydoc's section underline: "Parameters\n----------"


class ParsedDoc(NamedTuple):
    """The parts of a numpydoc docstring that the tasks use."""

    summary: str  # the first paragraph after any signature, on one line ("" if none)
    description: list  # the paragraphs between the summary and the first section, one line each


def parse_docstring(doc):
    """Split a numpydoc docstring into its summary line and its extended description.

    Signature lines at the top are skipped (ufuncs, methods); so are reST directives
    (".. note::", ".. math::" and their indented bodies) and doctest or other indented blocks:
    they are markup and code, not the prose a summary is written from. The description stops
    at the first section header (a line underlined with dashes, like "Parameters").

    Inputs:
    - doc: a cleaned docstring (no common indentation)

    Returns:
    - ParsedDoc(summary, description)
    """
    lines = doc.strip().split("\n")
    for i in range(1, len(lines)):
        if _UNDERLINE.fullmatch(lines[i].strip()) and lines[i - 1].strip():
            lines = lines[:i - 1]  # "Parameters\n----------": the description is over
            break
    paragraphs = [p.split("\n") for p in re.split(r"\n[ \t]*\n", "\n".join(lines).strip())]
    # drop the signature at the top: a line, a paragraph (numpy.array's spans three lines),
    # and the "--" that ends a C signature
    while paragraphs:
        first = [line for line in paragraphs[0] if line.strip() != "--"]
        if is_signature(" ".join(line.strip() for line in first)):
            first = []
        while first and is_signature(first[0].strip()):
            first.pop(0)
        if first:
            paragraphs[0] = first
            break
        paragraphs.pop(0)
    prose = []
    for para in paragraphs:
        head = para[0]
        if not head.strip() or head.startswith((".. ", ">>>")) or head[:1].isspace():
            prose.append(None)  # markup or code: keep its place (a summary cannot be one)
            continue
        prose.append(" ".join(line.strip() for line in para).strip())
    if not prose or prose[0] is None:
        return ParsedDoc("", [])
    return ParsedDoc(prose[0], [p for p in prose[1:] if p])


def text_windows(parsed, max_chars, k):
    """Up to k texts of at most max_chars characters: the summary line first, then the
    description, packed word by word and cut at spaces (a word longer than a window is cut
    where it must be). A last window shorter than a quarter of max_chars is dropped: "axis."
    says nothing about a topic."""
    words = " ".join([parsed.summary, *parsed.description]).split()
    out, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) <= max_chars:
            line += " " + word
            continue
        if line:
            out.append(line)
        while len(word) > max_chars:
            out.append(word[:max_chars])
            word = word[max_chars:]
        line = word
        if len(out) >= k:
            return out[:k]
    if line and (not out or len(line) >= max_chars // 4):
        out.append(line)
    return out[:k]
