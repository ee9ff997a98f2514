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

Formulas, Markdown, code and outputs are rendered by render.py (MathML, no network, no
script); a formula that cannot be typeset is shown as TeX and counted in
`SiteBuild.math_fallbacks`.

A build never loses what is there: it runs the course in a temporary folder beside --out and
swaps it in at the end, replacing only the files the previous build wrote (its marker lists
them) and carrying the user's own files over; --out may be a link (it stays); Ctrl-C (SIGTERM,
SIGHUP) interrupts the running notebook and stops with nothing changed.
"""

from __future__ import annotations

import copy
import datetime
import html
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Stopped
from ..io.lock import LOCK_NAME, RunLock
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
from .render import (
    Markdown,
    MathTypesetter,
    code_block,
    outputs_html,
    plain_text,
    png_size,
    split_math,
    style_css,
)

MARKER = ".numpygpt-course-site"  # in every site we build; we only ever replace such a folder
SITE_TITLE = "numpygpt: a GPT in pure NumPy, the course"

# --------------------------------------------------------------------------------------------
# What a build produced


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


def run_notebook(nb, path, fast=True, timeout=3600, stop=None):
    """Execute `nb` (read from `path`) in place, in a fresh kernel, in `path`'s folder.

    stop: a _StopRequest; while the notebook runs, a Ctrl-C (SIGTERM, SIGHUP) is passed on to
    its kernel, which interrupts the running cell.

    Returns the run time in seconds. Raises CourseError naming the notebook and the cell if a
    cell raises, times out, or the kernel dies; the stop request's KeyboardInterrupt when a
    signal asked to stop.
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
    failed = []

    def work():
        try:
            # the kernel process's own stderr is jupyter's chatter; a cell's stderr is output
            client.execute(env=kernel_env(fast), stderr=subprocess.DEVNULL)
        except BaseException as e:
            failed.append(e)

    # The notebook runs in a thread of its own: nbclient then leaves the process's signal
    # handlers alone (it would shut the kernel down mid-cell on Ctrl-C), and the main thread,
    # waiting in short joins, stays free to take a signal (see _StopRequest).
    if stop is not None:
        stop.client = client
    worker = threading.Thread(target=work, name="notebook", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    finally:
        if stop is not None:
            stop.client = None
    if failed:
        if stop is not None and stop.signum is not None:
            stop.raise_()  # the cell failed because we interrupted it
        if not isinstance(failed[0], Exception):
            raise failed[0]
        raise CourseError(_failure(path, nb, current["index"], failed[0])) from None
    return time.perf_counter() - t0


class _StopRequest:
    """While the course builds: Ctrl-C, SIGTERM or SIGHUP sets the request and interrupts
    the running notebook's kernel (the kernels run in a session of their own, so the
    terminal's Ctrl-C does not reach them); the build then stops cleanly between steps. A
    second signal stops at once."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                    if hasattr(signal, n))

    def __init__(self):
        self.signum, self.client, self._old = None, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.raise_()
        self.signum = signum
        pid = getattr(getattr(getattr(self.client, "km", None), "provisioner", None), "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGINT)  # the running cell raises KeyboardInterrupt
            except OSError:
                pass

    def check(self):
        """Between steps: stop here if a signal asked to."""
        if self.signum is not None:
            self.raise_()

    def raise_(self):
        if self.signum in (None, signal.SIGINT):
            raise KeyboardInterrupt
        raise Stopped(self.signum)


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
    return plain_text(md(title, path.stem, inline=True)), summary, goals


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
        size = png_size(raw) if ext == "png" else None
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
                section = plain_text(heads[-1])
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
            outputs = outputs_html(cell.get("outputs", []), save_image, md, where)
            if i in exercise_at:
                name = exercise_at[i]
                solution = ""
                if name in solutions:
                    solution = (f'<details class="solution"><summary>show a solution</summary>\n'
                                f"{code_block(solutions[name].rstrip())}</details>\n")
                body.append(f'<section class="cell exercise" id="exercise-{name}">'
                            f'<div class="label">exercise: write <code>{html.escape(name)}'
                            f"</code></div>\n{code_block(src.cells[i].source)}{solution}"
                            f"{outputs}</section>\n")
            elif cell.source.strip() or outputs:
                body.append(f'<div class="cell code">\n{code_block(cell.source)}{outputs}'
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


def _site_files(folder):
    """{relative path: True} of the files of a site folder, the marker excepted."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.name != MARKER}


def _owned(out):
    """The files of the site in `out` that an earlier build wrote (its marker lists them; a
    marker of a build that kept no list: the pages, the style and the plots)."""
    try:
        listed = json.loads((out / MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list):
        return {f for f in listed if isinstance(f, str)}
    return {f for f in _site_files(out)
            if f.endswith(".html") or f == "style.css" or re.fullmatch(r"img/[^/]+\.png", f)}


def site_folder(out):
    """The folder a build writes to: `out` itself, or the folder a link named `out` points
    to (the link stays). Refuses what a build must not replace: a file, the folder the
    command runs in (or one holding it), a non-empty folder that is not a site of ours."""
    out = Path(out).expanduser()
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        raise CourseError(f"--out {out} is a file, not a folder")
    here = Path.cwd().resolve()
    if here == out.resolve() or here.is_relative_to(out.resolve()):
        raise CourseError(f"--out {out} is the folder you are in (or holds it): a build "
                          "replaces its folder whole; give a new one, e.g. --out site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise CourseError(f"--out {out} is a non-empty folder that is not a course site built "
                          f"by numpygpt (it has no {MARKER} file); choose another folder")
    return out


def _make_tmp(out):
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise CourseError(f"cannot write the site to {out}: {e.strerror or e}") from None


def _swap_in(tmp, out):
    """Put the finished build `tmp` at `out`, replacing the previous build's own files there;
    files a user added to the old site are carried over into the new one."""
    site_folder(out)  # again: the folder may have changed while the course ran
    old = None
    if out.exists():
        new_files = _site_files(tmp)
        kept = sorted(_site_files(out) - _owned(out))
        clash = [f for f in kept if f in new_files]
        if clash:
            raise CourseError(f"{out / clash[0]} was not written by the last build, and this "
                              "build writes a file of that name; move it away and build again")
        for f in kept:  # the user's files, into the new site
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / f, tmp / f)
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
    out = site_folder(out)  # before anything runs: a folder we may not replace is refused
    if out.resolve() == folder.resolve() or folder.resolve().is_relative_to(out.resolve()):
        raise CourseError(f"--out {out} would hold the notebooks themselves; choose another "
                          "folder")

    typeset = MathTypesetter(converter)
    md = Markdown(mistune, typeset)
    pages = [_load_page(p, nbformat, md, stubs) for p in notebook_paths(folder)]
    build = SiteBuild(out=out, pages=pages, fast=fast, stubs=stubs)
    today = datetime.date.today().isoformat()
    note = (f"Built on {today} "
            + ("in fast mode (NUMPYGPT_FAST=1): training runs were shrunk to seconds, so losses "
               "and plots are rougher than a full run's. " if fast else "in full mode. ")
            + ("Exercises ran as stubs (their checks say \u201cnot implemented yet\u201d)."
               if stubs else "Exercises ran with their solutions put in."))

    # one build at a time into a folder; the lock is beside it, as the folder is swapped whole
    lock = RunLock(out, "numpygpt course build", path=out.parent / f".{out.name}{LOCK_NAME}",
                   hint="")
    with lock:
        _build(out, folder, pages, md, note, fast, stubs, timeout, log, warn)
    build.math_fallbacks = typeset.fallbacks
    for f in build.math_fallbacks:
        warn(f"warning: {f.where}: formula shown as TeX ({f.problem}): {f.tex}")
    build.seconds = time.perf_counter() - t_start
    n_img = sum(len(p.images) for p in pages)
    log(f"wrote {out / 'index.html'} and {len(pages)} pages ({n_img} plots) in "
        f"{build.seconds:.0f} s; open {out / 'index.html'} in a browser")
    return build


def _build(out, folder, pages, md, note, fast, stubs, timeout, log, warn):
    """Build the pages aside, in a temporary folder beside `out`, then swap them in."""
    tmp = _make_tmp(out)
    try:
        with _StopRequest() as stop:
            _build_pages(tmp, folder, pages, md, note, fast, stubs, timeout, log, warn, stop)
            (tmp / "index.html").write_text(_index_html(pages, note), encoding="utf-8")
            (tmp / "style.css").write_text(style_css(), encoding="utf-8")
            marker = {"format": "numpygpt-course-site", "files": sorted(_site_files(tmp)),
                      "note": "A course site built by `python -m numpygpt course build`; the "
                              "next build replaces these files (and keeps any other)."}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
            stop.check()
            _swap_in(tmp, out)
    except OSError as e:  # a full disk, a folder that changed hands while the course ran
        raise CourseError(f"could not build the site in {out}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _build_pages(tmp, folder, pages, md, note, fast, stubs, timeout, log, warn, stop):
    """Run every notebook and write its page (and plots) into `tmp`."""
    (tmp / "img").mkdir()
    for k, page in enumerate(pages):
        stop.check()
        solutions = read_solutions(solutions_path(page.path))
        nb = (copy.deepcopy(page.source) if stubs
              else with_solutions(page.source, solutions, page.path.name))
        before = _snapshot(folder)
        page.seconds = run_notebook(nb, page.path, fast=fast, timeout=timeout, stop=stop)
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
