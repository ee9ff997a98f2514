"""The course as a static web site: `python -m numpygpt course build`.

The notebooks are committed without outputs, so on a code host a reader sees code and LaTeX
but no plot and no printed check. This module runs the course and writes what a reader needs
instead, into one folder that opens in any browser, offline:

- `index.html`: the course map (every notebook's title, summary, exercises and questions);
- `NN_name.html`: one page per notebook: its text and formulas, its code (highlighted), every
  printed output and every plot (`img/NN_name-K.png`), links to the previous and next page;
- `style.css`, and `.numpygpt-course-site`, the marker that says "a build of ours lives here".

Each notebook runs top to bottom in a fresh kernel, with its own folder as working directory,
with the solutions put in (`numpygpt.course.notebooks.with_solutions`) unless `stubs=True`.
An exercise shows the stub the learner sees, with the solution folded under it; an open
question shows its answer folded under it.

Formulas are typeset at build time: `latex2mathml` turns the TeX into MathML, which browsers
render natively, so the site needs no network and no script. The Markdown parser never sees a
formula (each one is swapped for a placeholder first), so `_`, `*` and `\\` inside TeX survive.
A formula latex2mathml cannot convert is shown as its TeX source in `<code class="tex-fallback">`
and counted in `SiteBuild.math_fallbacks`.
"""

from __future__ import annotations

import base64
import copy
import datetime
import html
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .notebooks import (
    CourseError,
    answer_markdown,
    default_notebook_dir,
    exercises,
    notebook_paths,
    questions,
    read_solutions,
    solutions_path,
    with_solutions,
)

MARKER = ".numpygpt-course-site"  # in every site we build; we only ever replace such a folder
SITE_TITLE = "numpygpt: a GPT in pure NumPy, the course"

# --------------------------------------------------------------------------------------------
# What a build produced


@dataclass
class MathFallback:
    """A formula latex2mathml could not typeset: the page shows its TeX source instead."""

    where: str
    tex: str
    problem: str


@dataclass
class Page:
    """One notebook of the course and the page made from it."""

    path: Path                   # the notebook
    html_name: str               # NN_name.html
    title: str                   # its first '#' heading
    summary_html: str            # one sentence, rendered
    goals_html: str              # its learning goals (a rendered list), or ""
    exercises: list              # [(cell index, name)]
    questions: list              # [(cell index, name)]
    source: object = None        # the notebook as committed (stubs in place)
    executed: object = None      # the notebook as run, with its outputs
    images: list = field(default_factory=list)  # image files written, relative to the site
    seconds: float = 0.0         # run time of the notebook
    left_files: list = field(default_factory=list)  # files the run left in the notebook folder

    @property
    def stem(self):
        return self.path.stem


@dataclass
class SiteBuild:
    """The result of `build_site`."""

    out: Path
    pages: list
    fast: bool
    stubs: bool
    seconds: float = 0.0
    math_fallbacks: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Dependencies (Jupyter and friends are not needed by the library itself)


def _require():
    """The site builder's imports, or a CourseError that says what to install."""
    try:
        import latex2mathml.converter
        import mistune
        import nbclient
        import nbformat
        import pygments  # noqa: F401
    except ImportError as e:
        raise CourseError(f"building the course site needs {e.name}: pip install -r "
                          "requirements.txt (or pip install 'numpygpt[course]')") from None
    if int(mistune.__version__.split(".")[0]) < 3:
        raise CourseError(f"building the course site needs mistune >= 3 (found "
                          f"{mistune.__version__}): pip install -U mistune")
    return nbformat, nbclient, mistune, latex2mathml.converter


# --------------------------------------------------------------------------------------------
# Formulas: find them, hide them from Markdown, typeset them to MathML

# Fenced code blocks hold no math (their `$` are code).
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[^\n]*$", re.M | re.S)
_MATH = re.compile(r"""
      (?P<code>(?P<ticks>`+).+?(?P=ticks))                    # a code span: no math inside
    | (?P<esc>\\\$)                                             # an escaped dollar
    | \$\$(?P<display>.+?)\$\$                                  # $$ display $$
    | (?P<env>\\begin\{(?P<envname>[A-Za-z]+\*?)\}.*?\\end\{(?P=envname)\})  # a bare environment
    | \$(?P<inline>(?:\\.|[^$\\])+?)\$                         # $ inline $
""", re.S | re.X)
_PLACEHOLDER = re.compile(r"MATHPH(\d+)END")


def split_math(markdown):
    """Markdown with every formula swapped for a placeholder, and the formulas.

    Returns (text, [(tex, display)]): formula n became the word `MATHPH<n>END`, which no
    Markdown parser touches. Formulas are `$...$` (inline), `$$...$$` and a bare
    `\\begin{env}...\\end{env}` (display), as Jupyter reads them; code spans, fenced code
    and `\\$` are left alone, and an inline `$` never spans a blank line.
    """
    maths, parts, pos = [], [], 0
    for fence in _FENCE.finditer(markdown):
        parts.append(_split_math_text(markdown[pos:fence.start()], maths))
        parts.append(fence.group(0))
        pos = fence.end()
    parts.append(_split_math_text(markdown[pos:], maths))
    return "".join(parts), maths


def _split_math_text(text, maths):
    out, pos = [], 0
    while True:
        m = _MATH.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        if m.group("code") or m.group("esc"):
            out.append(text[pos:m.end()])
            pos = m.end()
            continue
        tex = m.group("display") or m.group("env") or m.group("inline")
        display = m.group("inline") is None
        if not tex.strip() or re.search(r"\n[ \t]*\n", tex):
            out.append(text[pos:m.start() + 1])  # not a formula: keep the '$' and go on
            pos = m.start() + 1
            continue
        out.append(text[pos:m.start()] + f"MATHPH{len(maths)}END")
        maths.append((tex.strip(), display))
        pos = m.end()


# latex2mathml (3.8x) has no `aligned`, `gathered` or `\arg`; these rewrite them into what it has.
_TEX_REWRITES = [
    (re.compile(r"\\begin\{aligned\}"), r"\\begin{align*}"),
    (re.compile(r"\\end\{aligned\}"), r"\\end{align*}"),
    (re.compile(r"\\arg(?![A-Za-z])"), r"\\operatorname{arg}"),
]
_UNCONVERTED = re.compile(r">[^<]*(\\[A-Za-z_%#$]+|&(?!#?\w+;))[^<]*<")
# latex2mathml keeps TeX's escapes inside \text{...} (min\_lr): the reader wants min_lr
_ESCAPED = re.compile(r"\\([_%#$])")
# latex2mathml puts no space after \log, \ln, \exp...: TeX's thin space before an operand
_FUNCTION = re.compile(r"(<mi>(?:arccos|arcsin|arctan|cos|cosh|det|exp|lg|ln|log|sin|sinh|tan|"
                       r"tanh)</mi>|<msub><mi>log</mi><mn>[^<]*</mn></msub>)"
                       r"(?=<(?:mi|mn|msub|msup|msubsup|mfrac|msqrt)[ >])")


class MathTypesetter:
    """TeX to MathML with latex2mathml; what it cannot do is counted and shown as TeX."""

    def __init__(self, converter):
        self._convert = converter.convert
        self.fallbacks = []

    def __call__(self, tex, display, where):
        prepared = tex
        for pattern, repl in _TEX_REWRITES:
            prepared = pattern.sub(repl, prepared)
        try:
            mathml = self._convert(prepared, display="block" if display else "inline")
            mathml = _FUNCTION.sub(r'\1<mspace width="0.167em"></mspace>', mathml)
            mathml = _ESCAPED.sub(r"\1", mathml)
            bad = _UNCONVERTED.search(mathml)
            problem = f"left {bad.group(1)!r} unconverted" if bad else ""
        except Exception as e:  # latex2mathml raises many kinds; any of them means "cannot"
            problem = f"{type(e).__name__}: {e}"
        if problem:
            self.fallbacks.append(MathFallback(where, tex, problem))
            delim = "$$" if display else "$"
            return (f'<code class="tex-fallback" title="{html.escape(problem)}">'
                    f"{html.escape(delim + tex + delim)}</code>")
        return mathml


# --------------------------------------------------------------------------------------------
# Markdown and code


def _slug(text, taken):
    text = re.sub(r"<[^>]+>", "", _PLACEHOLDER.sub("", text))
    slug = re.sub(r"[^\w]+", "-", html.unescape(text).lower(), flags=re.UNICODE).strip("-")
    slug = slug or "section"
    base, n = slug, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _local_href(url):
    """A link to a course notebook points to its page on the site."""
    m = re.fullmatch(r"(?:\./)?(\d\d_[\w.-]+)\.ipynb(#.*)?", url)
    return f"{m.group(1)}.html{m.group(2) or ''}" if m else url


def _highlight(source):
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    return highlight(source, _python_lexer(), HtmlFormatter(nowrap=True))


def _python_lexer():
    try:  # knows %magics and !shell lines; IPython brings it
        from ipython_pygments_lexers import IPython3Lexer
        return IPython3Lexer()
    except ImportError:
        from pygments.lexers import PythonLexer
        return PythonLexer()


def _code_block(source, cls="code"):
    return f'<pre class="{cls}"><code>{_highlight(source)}</code></pre>\n'


class _Markdown:
    """Markdown + formulas to HTML, with ids on headings and .ipynb links made .html."""

    def __init__(self, mistune, typeset):
        self._mistune = mistune
        self.typeset = typeset
        self.taken = set()  # heading ids of the current page

    def renderer(self):
        md = self

        class Renderer(self._mistune.HTMLRenderer):
            def heading(self, text, level, **attrs):
                slug = _slug(text, md.taken)
                return (f'<h{level} id="{slug}">{text} <a class="anchor" href="#{slug}" '
                        f'aria-label="link to this section">#</a></h{level}>\n')

            def link(self, text, url, title=None):
                return super().link(text, _local_href(url), title)

            def codespan(self, text):
                # GFM: a pipe inside a table cell's code span is written \| (else it would
                # split the cell); the reader sees a plain |
                return super().codespan(text.replace("\\|", "|"))

            def block_code(self, code, info=None):
                if info and info.split()[0].lower() in ("python", "py", "ipython", "python3"):
                    return _code_block(code)
                return super().block_code(code, info)

        return Renderer(escape=False)

    def __call__(self, text, where, inline=False):
        text, maths = split_math(text)
        parse = self._mistune.create_markdown(renderer=self.renderer(),
                                              plugins=["table", "strikethrough", "url"])
        out = parse(text)
        if inline:  # one paragraph, without its <p>
            out = re.sub(r"^\s*<p>(.*)</p>\s*$", r"\1", out, flags=re.S)
        rendered = [self.typeset(tex, display, where) for tex, display in maths]

        def block(m):
            n = int(m.group(1))
            return f'<div class="math-display">{rendered[n]}</div>'

        out = re.sub(r"<p>\s*MATHPH(\d+)END\s*</p>",
                     lambda m: block(m) if maths[int(m.group(1))][1] else m.group(0), out)

        def place(m):
            n = int(m.group(1))
            return rendered[n] if n < len(rendered) else m.group(0)

        return _PLACEHOLDER.sub(place, out)


def _plain(html_text):
    """Visible text of a bit of HTML (for alt text and titles)."""
    text = re.sub(r"<annotation[^>]*>.*?</annotation>", "", html_text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


# --------------------------------------------------------------------------------------------
# Outputs

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal_text(text):
    """Text as a terminal would show it: no colour codes, a '\\r' rewrites its line."""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _png_size(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


def _outputs_html(outputs, save_image, md, where):
    """The outputs of one code cell. `save_image(data, ext, metadata)` -> <img> HTML."""
    parts, stream = [], None  # consecutive stream outputs of one name are one block
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            name = out.get("name", "stdout")
            if stream and stream[0] == name:
                stream[1].append(out.get("text", ""))
                continue
            stream = (name, [out.get("text", "")])
            parts.append(stream)
            continue
        stream = None
        if kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            image = next((m for m in _IMAGE_TYPES if m in data), None)
            if image:
                raw = data[image]
                raw = raw.encode() if image == "image/svg+xml" else base64.b64decode(raw)
                meta = out.get("metadata", {}).get(image, {})
                parts.append(f'<div class="output image">'
                             f'{save_image(raw, _IMAGE_TYPES[image], meta)}</div>\n')
            elif "text/markdown" in data:
                parts.append(f'<div class="output markdown">'
                             f'{md(data["text/markdown"], where)}</div>\n')
            elif "text/plain" in data:
                text = html.escape(_terminal_text(data["text/plain"]))
                parts.append(f'<pre class="output result">{text}</pre>\n')
            elif "text/html" in data:
                parts.append(f'<div class="output html">{data["text/html"]}</div>\n')
        elif kind == "error":
            trace = "\n".join(out.get("traceback", [])) or \
                f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
            parts.append(f'<pre class="output error">{html.escape(_terminal_text(trace))}'
                         f"</pre>\n")
    html_parts = []
    for p in parts:
        if isinstance(p, tuple):
            text = _terminal_text("".join(p[1])).rstrip("\n")
            if text:
                html_parts.append(f'<pre class="output {p[0]}">{html.escape(text)}</pre>\n')
        else:
            html_parts.append(p)
    return "".join(html_parts)


# --------------------------------------------------------------------------------------------
# Running a notebook


def kernel_env(fast):
    """The environment a course notebook runs in."""
    env = dict(os.environ)
    env["NUMPYGPT_FAST"] = "1" if fast else "0"
    if not fast:
        env.pop("CI", None)  # fast_mode() also reads CI: the flag decides here
    # plots must reach the notebook as image outputs: the inline backend, never Agg
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a debugger warning, not ours
    return env


def run_notebook(nb, path, fast=True, timeout=3600):
    """Execute `nb` (read from `path`) in place, in a fresh kernel, in `path`'s folder.

    Returns the run time in seconds. Raises CourseError naming the notebook and the cell if a
    cell raises, times out, or the kernel dies.
    """
    import subprocess

    _, nbclient, _, _ = _require()
    path = Path(path)
    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}},
                                     on_cell_start=on_cell_start,
                                     # plots at twice the pixels, shown at their usual size
                                     extra_arguments=["--InlineBackend.figure_formats=retina"])
    t0 = time.perf_counter()
    try:
        # the kernel process's own stderr is jupyter's chatter; a cell's stderr is an output
        client.execute(env=kernel_env(fast), stderr=subprocess.DEVNULL)
    except Exception as e:
        raise CourseError(_failure(path, nb, current["index"], e)) from None
    return time.perf_counter() - t0


def _failure(path, nb, index, exc):
    """One line: which notebook, which cell, what went wrong."""
    name = type(exc).__name__
    if name == "CellExecutionError":
        what = f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", None) else str(exc)
    elif name == "CellTimeoutError":
        what = "the cell timed out"
    elif name == "DeadKernelError":
        what = "the kernel died (out of memory?)"
    elif name == "NoSuchKernel":
        what = "no 'python3' Jupyter kernel: pip install ipykernel"
    else:
        what = f"{name}: {exc}"
    what = " ".join(str(what).split())
    if len(what) > 300:
        what = what[:297] + "..."
    if index is None:
        return f"{path.name} did not run: {what}"
    first = next((ln.strip() for ln in nb.cells[index].source.splitlines() if ln.strip()), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"{path.name}, cell {index} ({first}): {what}"


def _snapshot(folder):
    skip = {"__pycache__", ".ipynb_checkpoints"}
    return {p.relative_to(folder) for p in folder.rglob("*")
            if not skip.intersection(p.relative_to(folder).parts)}


# --------------------------------------------------------------------------------------------
# The course, read and checked before anything runs


def _load_page(path, nbformat, md, stubs):
    try:
        source = nbformat.read(path, as_version=4)
        nbformat.validate(source)
    except Exception as e:  # unreadable, not JSON, not a notebook: nbformat raises many kinds
        raise CourseError(f"{path.name} is not a readable notebook: {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}") from None
    solutions = read_solutions(solutions_path(path))
    exs, qs = exercises(source), questions(source)
    if not stubs:  # the course with its solutions: every exercise and question needs one
        with_solutions(source, solutions, path.name)  # raises if a solution is missing
        for _, name in qs:
            if name not in solutions:
                raise CourseError(f"{path.name}: question '{name}' has no '# %% {name}' answer "
                                  f"block in solutions/{solutions_path(path).name}")
    for _, name in qs:
        if name in solutions:
            answer_markdown(solutions[name])  # raises if it is not all comment lines
    title, summary, goals = _intro(source, path, md)
    return Page(path=path, html_name=f"{path.stem}.html", title=title, summary_html=summary,
                goals_html=goals, exercises=exs, questions=qs, source=source)


def _intro(nb, path, md):
    """(title, summary HTML, learning goals HTML) from the first markdown cells.

    The title is the first '#' heading; the summary the first sentence (or two, if the first is
    short) of the first paragraph, or the first learning goal if that sentence only announces a
    formula, unless the notebook's metadata holds its own (`"numpygpt": {"summary": "..."}`);
    the goals are the list under **Learning goals**.
    """
    title, goals, first_goal = path.stem, "", ""
    text = "\n\n".join(c.source for c in nb.cells[:3] if c.cell_type == "markdown")
    m = re.search(r"^#[ \t]+(.+)$", text, re.M)
    if m:
        title = m.group(1).strip()
        text = text[m.end():]
    g = re.search(r"^\*\*Learning goals\*\*[ \t]*\n+((?:[-*] .*\n?(?:[ \t]+.*\n?)*)+)", text,
                  re.M | re.I)
    if g:
        goals = md(g.group(1), f"{path.stem} learning goals")
        first_goal = " ".join(re.split(r"\n[-*] ", "\n" + g.group(1))[1].split())
        text = text[:g.start()]
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", text)
                  if p.strip() and not p.lstrip().startswith(("#", "|", "-", "*", ">", "1."))]
    summary = nb.metadata.get("numpygpt", {}).get("summary", "")  # an author's own wins
    if not summary and paragraphs:
        hidden, maths = split_math(" ".join(paragraphs[0].split()))
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(*`])", hidden)
        summary = sentences[0]
        if len(summary) < 90 and len(sentences) > 1:  # a short first sentence says too little
            summary += " " + sentences[1]
        for n, (tex, display) in enumerate(maths):  # put the formulas back for md()
            delim = "$$" if display else "$"
            summary = summary.replace(f"MATHPH{n}END", delim + tex + delim)
        if not re.search(r"[.!?][*_\"')]*$", summary.rstrip()) and first_goal:
            summary = first_goal  # the paragraph goes on in a formula: take the first goal
    summary = md(summary, f"{path.stem} summary", inline=True) if summary else ""
    return _plain(md(title, path.stem, inline=True)), summary, goals


# --------------------------------------------------------------------------------------------
# Pages


def _page_html(page, prev, nxt, md, solutions, build_note):
    """The HTML of one notebook's page."""
    stem, nb, src = page.stem, page.executed, page.source
    exercise_at, question_at = dict(page.exercises), dict(page.questions)
    md.taken = {"top"}
    body, section, n_img = [], page.title, 0

    def save_image(raw, ext, meta):
        nonlocal n_img
        n_img += 1
        name = f"img/{stem}-{n_img}.{ext}"
        page.images.append((name, raw))
        size = _png_size(raw) if ext == "png" else None
        width = meta.get("width") or (size[0] if size else None)
        height = meta.get("height") or (size[1] if size else None)
        if size and not meta.get("height") and meta.get("width"):
            height = round(size[1] * meta["width"] / size[0])
        dims = f' width="{width}" height="{height}"' if width and height else ""
        alt = f"Figure {n_img} of notebook {stem}, in \u201c{section}\u201d"
        return (f'<a href="{name}" title="the figure at full size">'
                f'<img src="{name}" alt="{html.escape(alt)}"{dims} loading="lazy"></a>')

    for i, cell in enumerate(nb.cells):
        where = f"{stem} cell {i}"
        if cell.cell_type == "markdown":
            rendered = md(cell.source, where)
            heads = re.findall(r"<h\d[^>]*>(.*?)<a class=\"anchor\"", rendered, re.S)
            if heads:
                section = _plain(heads[-1])
            if i in question_at:
                name = question_at[i]
                answer = ""
                if name in solutions:
                    answer = (f'<details class="answer"><summary>show an answer</summary>\n'
                              f'<div class="answer-body">'
                              f'{md(answer_markdown(solutions[name]), where + " answer")}'
                              f"</div></details>\n")
                body.append(f'<section class="cell question" id="question-{name}">'
                            f'<div class="label">open question</div>\n{rendered}{answer}'
                            f"</section>\n")
            else:
                body.append(f'<div class="cell text">\n{rendered}</div>\n')
        elif cell.cell_type == "code":
            outputs = _outputs_html(cell.get("outputs", []), save_image, md, where)
            if i in exercise_at:
                name = exercise_at[i]
                solution = ""
                if name in solutions:
                    solution = (f'<details class="solution"><summary>show a solution</summary>\n'
                                f"{_code_block(solutions[name].rstrip())}</details>\n")
                body.append(f'<section class="cell exercise" id="exercise-{name}">'
                            f'<div class="label">exercise: write <code>{html.escape(name)}'
                            f"</code></div>\n{_code_block(src.cells[i].source)}{solution}"
                            f"{outputs}</section>\n")
            elif cell.source.strip() or outputs:
                body.append(f'<div class="cell code">\n{_code_block(cell.source)}{outputs}'
                            f"</div>\n")
    nav = _nav(prev, nxt)
    return _html_doc(
        f"{page.title} \u00b7 numpygpt course",
        f'<header class="top" id="top">{nav}</header>\n'
        f'<p class="build-note">{build_note}</p>\n'
        f'<main>\n{"".join(body)}</main>\n'
        f'<footer>{nav}<p class="source">This page is notebook <code>notebooks/{stem}.ipynb'
        f"</code> as run by <code>python -m numpygpt course build</code>.</p></footer>")


def _nav(prev, nxt):
    left = (f'<a class="prev" href="{prev.html_name}" rel="prev">\u2190 {html.escape(prev.title)}'
            f"</a>" if prev else '<span class="prev"></span>')
    right = (f'<a class="next" href="{nxt.html_name}" rel="next">{html.escape(nxt.title)} '
             f"\u2192</a>" if nxt else '<span class="next"></span>')
    return (f'<nav class="pager">{left}<a class="home" href="index.html">course map</a>'
            f"{right}</nav>")


def _html_doc(title, body):
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"color-scheme\" content=\"light\">\n"
            f"<title>{html.escape(title)}</title>\n"
            "<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def _index_html(pages, build_note):
    items = []
    for p in pages:
        extras = []
        if p.exercises:
            links = ", ".join(f'<a href="{p.html_name}#exercise-{n}"><code>{html.escape(n)}'
                              f"</code></a>" for _, n in p.exercises)
            extras.append(f'<p class="exercises">exercises: {links}</p>')
        if p.questions:
            links = ", ".join(f'<a href="{p.html_name}#question-{n}">'
                              f'{html.escape(n.replace("_", " "))}</a>' for _, n in p.questions)
            extras.append(f'<p class="questions">open questions: {links}</p>')
        if p.goals_html:
            extras.append(f'<details class="goals"><summary>learning goals</summary>'
                          f"{p.goals_html}</details>")
        items.append(f'<li><h2><a href="{p.html_name}">{html.escape(p.title)}</a></h2>\n'
                     f'<p class="summary">{p.summary_html}</p>\n{"".join(extras)}</li>\n')
    n_ex = sum(len(p.exercises) for p in pages)
    n_q = sum(len(p.questions) for p in pages)
    body = f"""<header class="top"><nav class="pager"><span></span>
<span class="home">course map</span><span></span></nav></header>
<main>
<h1>{html.escape(SITE_TITLE)}</h1>
<p class="lead">A GPT built from scratch in NumPy, one layer at a time: every forward pass
<em>and</em> its hand-written backward pass, checked against finite differences, then trained
and studied. {len(pages)} notebooks, {n_ex} exercises, {n_q} open questions. Each page below is
a notebook as it ran: its text, code, printed checks and plots. Under every exercise a solution
is folded away; try it yourself first.</p>
<p class="build-note">{build_note}</p>
<ol class="course-map">
{"".join(items)}</ol>
<h2 id="run-it-yourself">Run it yourself</h2>
<ol class="howto">
<li>In a checkout of numpygpt, install what the course needs (NumPy, matplotlib, Jupyter):
<pre class="shell"><code>python -m venv .venv &amp;&amp; . .venv/bin/activate
pip install -r requirements.txt</code></pre></li>
<li>Open the notebooks and run them top to bottom, in order:
<pre class="shell"><code>jupyter lab notebooks/</code></pre>
<code>NUMPYGPT_FAST=1 jupyter lab notebooks/</code> shrinks every training run to seconds
(the numbers and plots then differ from these pages).</li>
<li>An exercise is a cell with a stub: write the function where it says
<code># your code here</code>, run the cell, and the cell after it checks your answer and
says what is wrong. Skip one and the rest of the notebook still runs. The solutions and the
answers to the open questions are in <code>notebooks/solutions/</code>.</li>
<li>Rebuild these pages: <code>python -m numpygpt course build --out site</code>
(add <code>--fast</code> for a quick build).</li>
</ol>
</main>
<footer><p class="source">Built by <code>python -m numpygpt course build</code>; works offline,
formulas are MathML.</p></footer>"""
    return _html_doc(SITE_TITLE, body)


# --------------------------------------------------------------------------------------------
# The site folder: built aside, then swapped in


def _check_out(out):
    """Refuse an --out that is a file, or a non-empty folder that is not a site of ours."""
    if out.exists() and not out.is_dir():
        raise CourseError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise CourseError(f"--out {out} is a non-empty folder that is not a course site built "
                          f"by numpygpt (it has no {MARKER} file); choose another folder")


def _make_tmp(out):
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise CourseError(f"cannot write the site to {out}: {e.strerror or e}") from None


def _swap_in(tmp, out):
    """Put the finished build `tmp` at `out`, replacing a previous build there."""
    _check_out(out)  # again: the folder may have changed while the course ran
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        os.replace(out, old / "site")
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / "site", out)  # put the previous build back
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The build


def _style_css():
    from pygments.formatters import HtmlFormatter

    return _CSS + HtmlFormatter(style="default").get_style_defs("pre.code")


def build_site(out="site", notebooks=None, fast=False, stubs=False, timeout=3600, log=print,
               warn=None):
    """Run the course and write its site into `out`; returns a SiteBuild.

    `notebooks`: the folder of NN_name.ipynb (default: the checkout's). `fast`: NUMPYGPT_FAST=1
    (training runs shrink). `stubs`: run the notebooks as a learner gets them instead of with
    the solutions put in. `log` gets one line per notebook; `warn` (default: `log`) gets the
    warnings. Raises CourseError (one line) for a missing folder, an `out` we must not replace
    or cannot write, or a notebook that fails (naming the notebook and the cell).
    """
    nbformat, _, mistune, converter = _require()
    warn = warn or log
    t_start = time.perf_counter()
    folder = Path(notebooks) if notebooks is not None else default_notebook_dir()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise CourseError(f"notebooks folder {folder} {what} (run this from a checkout of "
                          "numpygpt, or pass --notebooks DIR)")
    out = Path(out).expanduser()
    if out.resolve() == folder.resolve() or folder.resolve().is_relative_to(out.resolve()):
        raise CourseError(f"--out {out} would hold the notebooks themselves; choose another "
                          "folder")
    _check_out(out)

    typeset = MathTypesetter(converter)
    md = _Markdown(mistune, typeset)
    pages = [_load_page(p, nbformat, md, stubs) for p in notebook_paths(folder)]
    build = SiteBuild(out=out, pages=pages, fast=fast, stubs=stubs)
    today = datetime.date.today().isoformat()
    note = (f"Built on {today} "
            + ("in fast mode (NUMPYGPT_FAST=1): training runs were shrunk to seconds, so losses "
               "and plots are rougher than a full run's. " if fast else "in full mode. ")
            + ("Exercises ran as stubs (their checks say \u201cnot implemented yet\u201d)."
               if stubs else "Exercises ran with their solutions put in."))

    tmp = _make_tmp(out)
    try:
        (tmp / "img").mkdir()
        for k, page in enumerate(pages):
            solutions = read_solutions(solutions_path(page.path))
            nb = (copy.deepcopy(page.source) if stubs
                  else with_solutions(page.source, solutions, page.path.name))
            before = _snapshot(folder)
            page.seconds = run_notebook(nb, page.path, fast=fast, timeout=timeout)
            page.left_files = sorted(str(p) for p in _snapshot(folder) - before)
            page.executed = nb
            prev = pages[k - 1] if k else None
            nxt = pages[k + 1] if k + 1 < len(pages) else None
            text = _page_html(page, prev, nxt, md, solutions, note)
            for name, raw in page.images:
                (tmp / name).write_bytes(raw)
            (tmp / page.html_name).write_text(text, encoding="utf-8")
            log(f"[{k + 1:2d}/{len(pages)}] {page.path.name:<34} {page.seconds:6.1f} s  "
                f"{len(page.images)} plot{'s' if len(page.images) != 1 else ''}")
            if page.left_files:
                warn(f"warning: {page.path.name} left files in {folder}: "
                     + ", ".join(page.left_files))
        (tmp / "index.html").write_text(_index_html(pages, note), encoding="utf-8")
        (tmp / "style.css").write_text(_style_css(), encoding="utf-8")
        (tmp / MARKER).write_text("A course site built by `python -m numpygpt course build`; "
                                  "the next build replaces this whole folder.\n",
                                  encoding="utf-8")
        _swap_in(tmp, out)
    except OSError as e:  # a full disk, a folder that changed hands while the course ran
        raise CourseError(f"could not build the site in {out}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    build.math_fallbacks = typeset.fallbacks
    for f in build.math_fallbacks:
        warn(f"warning: {f.where}: formula shown as TeX ({f.problem}): {f.tex}")
    build.seconds = time.perf_counter() - t_start
    n_img = sum(len(p.images) for p in pages)
    log(f"wrote {out / 'index.html'} and {len(pages)} pages ({n_img} plots) in "
        f"{build.seconds:.0f} s; open {out / 'index.html'} in a browser")
    return build


_CSS = """\
:root {
  --text: #1f2328; --muted: #59636e; --bg: #ffffff; --soft: #f6f8fa; --line: #d1d9e0;
  --accent: #0b5cad; --ex: #fff8e6; --ex-line: #e3b341; --q: #eef6ff; --q-line: #7ab3ef;
  --err: #fff0f0; --err-line: #e5534b;
}
* { box-sizing: border-box; }
html { background: var(--bg); color: var(--text); }
body {
  margin: 0 auto; padding: 0 1.25rem 3rem; max-width: 62rem;
  font: 17px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue",
        Arial, "Noto Sans CJK SC", sans-serif;
}
a { color: var(--accent); }
h1, h2, h3, h4 { line-height: 1.25; margin: 1.6em 0 0.6em; }
h1 { font-size: 2rem; margin-top: 0.8em; }
h2 { font-size: 1.45rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1.2rem; }
a.anchor { visibility: hidden; text-decoration: none; color: var(--muted); font-weight: normal; }
h1:hover a.anchor, h2:hover a.anchor, h3:hover a.anchor, h4:hover a.anchor { visibility: visible; }
code, pre { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas,
            monospace; font-size: 0.86em; }
:not(pre) > code { background: var(--soft); padding: 0.1em 0.3em; border-radius: 4px; }
pre { margin: 0; padding: 0.7em 0.9em; overflow-x: auto; line-height: 1.45; }
pre.code, pre.shell { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; }
pre.code code, pre.shell code, pre.output { font-size: 13px; }
.cell { margin: 1.1rem 0; }
.cell.code > pre.code { border-bottom-left-radius: 0; border-bottom-right-radius: 0; }
pre.output {
  border: 1px solid var(--line); border-top: none; background: #fff; white-space: pre-wrap;
  max-height: 36em; overflow: auto;
}
pre.output.stderr { background: #fffbea; }
pre.output.error { background: var(--err); border-color: var(--err-line); }
div.output { border: 1px solid var(--line); border-top: none; padding: 0.6em; background: #fff; }
div.output.image { text-align: center; }
img { max-width: 100%; height: auto; }
.math-display { overflow-x: auto; overflow-y: hidden; margin: 0.9em 0; padding: 0.1em 0; }
math { font-size: 1.08em;
       font-family: "Latin Modern Math", "STIX Two Math", "Cambria Math", "DejaVu Math TeX Gyre",
                    math; }
math[display="block"] { margin: 0.4em 0; }
menclose[notation="box"] { border: 1px solid currentColor; padding: 0.15em 0.3em; }
mtd[columnalign="left"] { text-align: left; }
mtd[columnalign="right"] { text-align: right; }
code.tex-fallback { background: var(--err); color: #8b1a1a; }
table { border-collapse: collapse; margin: 1em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: 0.35em 0.7em; text-align: left;
         vertical-align: top; }
th { background: var(--soft); }
blockquote { margin: 1em 0; padding: 0 1em; color: var(--muted);
             border-left: 4px solid var(--line); }
.label { font-size: 0.8rem; font-weight: 600; letter-spacing: 0.03em; text-transform: uppercase;
         color: var(--muted); margin-bottom: 0.35em; }
.label code { text-transform: none; letter-spacing: 0; font-size: 0.95rem; }
section.exercise { background: var(--ex); border: 1px solid var(--ex-line);
                   border-left-width: 5px; border-radius: 6px; padding: 0.8em 1em; }
section.exercise > pre.code { background: #fff; }
section.question { background: var(--q); border: 1px solid var(--q-line);
                   border-left-width: 5px; border-radius: 6px; padding: 0.6em 1em; }
section.question h1, section.question h2, section.question h3 { margin-top: 0.4em; }
details { margin: 0.7em 0 0.2em; }
details > summary {
  display: inline-block; cursor: pointer; list-style: none; user-select: none;
  padding: 0.25em 0.8em; border: 1px solid var(--line); border-radius: 999px;
  background: #fff; color: var(--accent); font-size: 0.9rem; font-weight: 600;
}
details > summary::-webkit-details-marker { display: none; }
details > summary::before { content: "\\25B8\\00a0"; }
details[open] > summary::before { content: "\\25BE\\00a0"; }
details > summary:hover { background: var(--soft); }
details[open] > summary { margin-bottom: 0.5em; }
details.solution > pre.code { background: #fff; border-left: 4px solid #2da44e; }
.answer-body { background: #fff; border: 1px solid var(--line); border-left: 4px solid #2da44e;
               border-radius: 6px; padding: 0.2em 1em; }
.top { padding: 0.8rem 0 0.4rem; border-bottom: 1px solid var(--line); }
footer { margin-top: 3rem; border-top: 1px solid var(--line); padding-top: 0.8rem; }
nav.pager { display: flex; justify-content: space-between; gap: 1em; font-size: 0.92rem; }
nav.pager > * { flex: 1; }
nav.pager .home { text-align: center; flex: 0 0 auto; }
nav.pager .next { text-align: right; }
.build-note, .source { color: var(--muted); font-size: 0.85rem; }
.lead { font-size: 1.1rem; }
ol.course-map { list-style: none; padding: 0; }
ol.course-map > li { border: 1px solid var(--line); border-radius: 8px; padding: 0.2em 1.1em 0.6em;
                     margin: 0.9em 0; }
ol.course-map h2 { font-size: 1.2rem; border: none; margin: 0.6em 0 0.2em; }
ol.course-map h2 a { text-decoration: none; }
ol.course-map p { margin: 0.3em 0; }
ol.course-map .exercises, ol.course-map .questions { font-size: 0.92rem; }
ol.course-map details.goals > summary { font-size: 0.85rem; }
"""
