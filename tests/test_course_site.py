"""The course site (`python -m numpygpt course build`) and the course run with its solutions.

The real course is built once per session, in fast mode (the module fixture `site`); the
tests read that one build: every page and plot is there, every formula typeset, every
solution and answer folded, and (the course with solutions put in) every checker passes.
Small synthetic courses test the builder's own behaviour (errors, refusals, the page layout)
without running the real one again. A headless Chromium, where installed, proves that the
formulas render with no network.
"""

import html as htmllib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("latex2mathml")
mistune = pytest.importorskip("mistune")

from latex2mathml import converter as l2m  # noqa: E402
from notebook_outputs import output_text  # noqa: E402

from numpygpt.cli import main  # noqa: E402
from numpygpt.course import render  # noqa: E402
from numpygpt.course import site as coursesite  # noqa: E402
from numpygpt.course.notebooks import (  # noqa: E402
    CourseError,
    answer_markdown,
    exercises,
    notebook_paths,
    questions,
    read_solutions,
    solutions_path,
)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CHROMIUM = os.environ.get("NUMPYGPT_CHROMIUM", "/usr/bin/chromium")
PLOTS = re.compile(r"\bplt\.(show|subplots?|figure|plot|imshow)\(")


def image_outputs(nb):
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type in ("display_data", "execute_result")
               and any(k.startswith("image/") for k in o.get("data", {})))


def text(html):
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


def section(page_html, element_id):
    """The HTML of the <section id=...> of a page."""
    m = re.search(rf'<section [^>]*id="{re.escape(element_id)}">(.*?)</section>', page_html,
                  re.S)
    assert m, f"no section {element_id}"
    return m.group(1)


# --------------------------------------------------------------------------------------------
# Formulas and Markdown (no notebook runs)


def test_split_math_hides_formulas_from_markdown():
    text, maths = render.split_math(
        "a $x_1 * y_2$ and $$\\sum_i a_i$$, `$not math$`, \\$5, "
        "\\begin{pmatrix} a \\\\ b \\end{pmatrix}\n\n```\n$code$\n```\n$a\n\nb$")
    assert maths == [("x_1 * y_2", False), ("\\sum_i a_i", True),
                     ("\\begin{pmatrix} a \\\\ b \\end{pmatrix}", True)]
    assert "`$not math$`" in text and "\\$5" in text and "$code$" in text
    assert "$a\n\nb$" in text  # an inline formula never spans a blank line


def test_markdown_keeps_tex_intact_and_links_pages():
    md = render.Markdown(mistune, render.MathTypesetter(l2m))
    out = md("## A *title*\n\n$a_1 * b_1 = c_1 * d_1$ see [05](05_attention.ipynb#x).\n\n"
             "$$\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}$$", "test")
    assert "<em>" in out and out.count("<math") == 2 and "<mtable" in out
    assert 'href="05_attention.html#x"' in out and "tex-fallback" not in out
    assert 'id="a-title"' in out
    assert not md.typeset.fallbacks


def test_a_formula_that_cannot_be_typeset_is_shown_as_tex_and_counted():
    typeset = render.MathTypesetter(l2m)
    out = typeset("\\nosuchcommand{x}", False, "here")
    assert 'class="tex-fallback"' in out and "$\\nosuchcommand{x}$" in out
    assert [f.where for f in typeset.fallbacks] == ["here"]


def test_every_formula_of_the_course_typesets():
    """Every $...$ of every notebook and every answer converts to MathML (no TeX fallback)."""
    typeset = render.MathTypesetter(l2m)
    n = 0
    for path in notebook_paths(NOTEBOOK_DIR):
        nb = nbformat.read(path, as_version=4)
        texts = [(f"{path.stem} cell {i}", c.source) for i, c in enumerate(nb.cells)
                 if c.cell_type == "markdown"]
        solutions = read_solutions(solutions_path(path))
        texts += [(f"{path.stem} answer {q}", answer_markdown(solutions[q]))
                  for _, q in questions(nb) if q in solutions]
        for where, text in texts:
            for tex, display in render.split_math(text)[1]:
                typeset(tex, display, where)
                n += 1
    assert n > 500
    assert not typeset.fallbacks, "\n".join(f"{f.where}: {f.tex!r}: {f.problem}"
                                            for f in typeset.fallbacks)


def test_terminal_text_keeps_what_a_terminal_shows():
    assert render.terminal_text("\x1b[31mred\x1b[0m\n10%\r50%\r100%\ndone") == \
        "red\n100%\ndone"


# --------------------------------------------------------------------------------------------
# The builder on small synthetic courses


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    for kind, source, meta in cells:
        new = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(new(source, metadata=meta))
    return nb


def _write_course(folder, notebooks, solutions=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / name)
    for name, text in (solutions or {}).items():
        (folder / "solutions").mkdir(exist_ok=True)
        (folder / "solutions" / name).write_text(text)
    return folder


TOY_STUB = '''def my_double(x):
    """Inputs: x, a number. Returns: 2 x."""
    # your code here
    raise NotImplementedError'''

TOY_SOLUTIONS = '''# %% my_double
def my_double(x):
    """Inputs: x, a number. Returns: 2 x."""
    return 2 * x

# %% why_double
# Because $2x = x + x$, *obviously*.
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    """A two-notebook course with a formula, a plot, an exercise and a question, built."""
    root = tmp_path_factory.mktemp("toy")
    folder = _write_course(root / "nb", {
        "00_first.ipynb": _notebook([
            ("md", "# 00 · First steps\n\nWe compute $x^2$ here. More text.\n\n"
                   "**Learning goals**\n\n- square a number\n", {}),
            ("code", "import matplotlib.pyplot as plt\nprint('hello', 3 ** 2)", {}),
            ("code", "plt.plot([1, 2, 4]); plt.title('a line'); plt.show()", {}),
            ("md", "## Exercise\n\nWrite it; see [the next one](01_second.ipynb).", {}),
            ("code", TOY_STUB, {"exercise": "my_double"}),
            ("code", "try:\n    print('all correct' if my_double(2) == 4 else 'wrong')\n"
                     "except NotImplementedError:\n    print('not implemented yet')", {}),
            ("md", "Why is $2x$ right?", {"question": "why_double"}),
        ]),
        "01_second.ipynb": _notebook([("md", "# 01 · Second\n\nThe end.", {}),
                                      ("code", "1 + 1", {})]),
    }, {"00_first.py": TOY_SOLUTIONS})
    out = root / "site"
    lines = []
    build = coursesite.build_site(out, folder, fast=True, log=lines.append)
    return build, out, lines


def test_toy_site_has_its_pages_plots_and_marker(toy_site):
    build, out, lines = toy_site
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [coursesite.MARKER, "00_first.html", "01_second.html", "img", "index.html", "style.css"])
    assert [p.name for p in (out / "img").iterdir()] == ["00_first-1.png"]
    assert (out / "img" / "00_first-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(lines) == 3 and lines[0].startswith("[ 1/2] 00_first.ipynb")
    assert not build.math_fallbacks
    assert not list(out.parent.glob("site.tmp-*")) and not list(out.parent.glob("site.old-*"))


def test_toy_page_shows_stub_folded_solution_answer_outputs_and_links(toy_site):
    _, out, _ = toy_site
    page = (out / "00_first.html").read_text()
    ex = section(page, "exercise-my_double")
    stub_at, details_at = ex.index("NotImplementedError"), ex.index("<details")
    assert stub_at < details_at and "<summary>show a solution</summary>" in ex
    assert "return 2 * x" in text(ex[details_at:])
    assert "return" not in text(ex[:details_at])  # the stub has no answer
    q = section(page, "question-why_double")
    assert "<summary>show an answer</summary>" in q and "<em>obviously</em>" in q
    assert q.count("<math") == 2  # the question's formula and the answer's
    assert '<pre class="output stdout">hello 9</pre>' in page
    assert '<pre class="output stdout">all correct</pre>' in page  # ran with the solution
    assert page.count("<img ") == 1 and 'alt="Figure 1 of notebook 00_first' in page
    assert 'href="01_second.html"' in page and 'href="index.html"' in page
    index = (out / "index.html").read_text()
    assert 'href="00_first.html"' in index and 'href="01_second.html"' in index
    assert "First steps" in index and "We compute <math" in index
    assert 'href="00_first.html#exercise-my_double"' in index
    assert "square a number" in index  # the learning goals


def test_build_refuses_a_folder_that_is_not_a_site(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("precious")
    assert main(["course", "build", "--out", str(theirs)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("numpygpt course: error:") and "not a course site" in err
    assert "\n" not in err
    assert (theirs / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]


@pytest.mark.parametrize("case", ["missing notebooks", "empty notebooks", "broken notebook",
                                  "out under a file"])
def test_build_errors_are_one_line(case, tmp_path, capsys):
    args = ["course", "build", "--out", str(tmp_path / "site")]
    if case == "missing notebooks":
        args += ["--notebooks", str(tmp_path / "nowhere")]
    elif case == "empty notebooks":
        (tmp_path / "empty").mkdir()
        args += ["--notebooks", str(tmp_path / "empty")]
    elif case == "broken notebook":
        (tmp_path / "nb").mkdir()
        (tmp_path / "nb" / "00_half.ipynb").write_text('{"cells": [')  # a truncated file
        args += ["--notebooks", str(tmp_path / "nb")]
    else:
        (tmp_path / "afile").write_text("x")
        folder = _write_course(tmp_path / "nb", {"00_x.ipynb": _notebook([("md", "# 00", {})])})
        args = ["course", "build", "--out", str(tmp_path / "afile" / "site"),
                "--notebooks", str(folder)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("numpygpt course: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "site").exists()


def test_a_failing_notebook_names_notebook_and_cell_and_keeps_the_old_site(tmp_path, capsys,
                                                                           toy_site):
    _, good_site, _ = toy_site
    out = tmp_path / "site"
    shutil.copytree(good_site, out)  # a previous build is there
    folder = _write_course(tmp_path / "nb", {"00_bad.ipynb": _notebook([
        ("md", "# 00 · Bad", {}), ("code", "x = 1", {}), ("code", "1 / 0", {})])})
    assert main(["course", "build", "--fast", "--notebooks", str(folder), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "00_bad.ipynb, cell 2 (1 / 0): ZeroDivisionError" in err, err
    assert (out / "00_first.html").exists()  # untouched: the new build never replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb", "site"]  # no temporary left


def test_a_missing_solution_stops_the_build_before_anything_runs(tmp_path):
    folder = _write_course(tmp_path / "nb", {"00_x.ipynb": _notebook([
        ("md", "# 00 · X", {}), ("code", TOY_STUB, {"exercise": "my_double"})])})
    with pytest.raises(CourseError, match="my_double"):
        coursesite.build_site(tmp_path / "site", folder, fast=True, log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb"]


def test_a_new_build_replaces_a_previous_one(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / coursesite.MARKER).write_text("")
    (out / "stale.html").write_text("old")
    new = tmp_path / "site.tmp-1"
    new.mkdir()
    (new / coursesite.MARKER).write_text("")
    (new / "index.html").write_text("new")
    coursesite._swap_in(new, out)
    assert sorted(p.name for p in out.iterdir()) == [coursesite.MARKER, "index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def _tiny_course(folder, code="1 + 1"):
    return _write_course(folder, {"00_x.ipynb": _notebook([("md", "# 00 · X\n\nText.", {}),
                                                           ("code", code, {})])})


def test_a_rebuild_keeps_the_users_own_files_and_replaces_only_its_own(tmp_path):
    course = _tiny_course(tmp_path / "nb")
    out = tmp_path / "site"
    coursesite.build_site(out, course, fast=True, log=lambda s: None)
    listed = set(json.loads((out / coursesite.MARKER).read_text())["files"])
    assert listed == {"00_x.html", "index.html", "style.css"}
    (out / "notes.txt").write_text("mine")  # the user's own files in the site
    (out / "img" / "mine.png").write_bytes(b"\x89PNG")
    (out / "index.html").write_text("stale")  # the build's own file: replaced
    coursesite.build_site(out, course, fast=True, log=lambda s: None)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "img" / "mine.png").read_bytes() == b"\x89PNG"
    assert "stale" not in (out / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb", "site"]  # nothing left beside


def test_a_site_built_through_a_link_keeps_the_link(tmp_path):
    course = _tiny_course(tmp_path / "nb")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    coursesite.build_site(tmp_path / "link", course, fast=True, log=lambda s: None)
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real" / "index.html").is_file()
    coursesite.build_site(tmp_path / "link", course, fast=True, log=lambda s: None)  # again
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "index.html").is_file()


def test_the_folder_you_are_in_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    course = _tiny_course(tmp_path / "nb", "import time; time.sleep(60)")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    t0 = time.perf_counter()
    assert main(["course", "build", "--notebooks", str(course), "--out", "."]) == 1
    assert time.perf_counter() - t0 < 30  # refused before the notebook's minute of sleep
    err = capsys.readouterr().err
    assert "is the folder you are in" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "here").iterdir())


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_build_ends_in_one_line_and_leaves_the_old_site(tmp_path, sig, code):
    course = _tiny_course(tmp_path / "nb", "import time; time.sleep(120)")
    out = tmp_path / "site"
    out.mkdir()
    (out / coursesite.MARKER).write_text("")
    (out / "index.html").write_text("the old site")
    p = subprocess.Popen([sys.executable, "-m", "numpygpt", "course", "build", "--fast",
                          "--notebooks", str(course), "--out", str(out)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith("site.tmp-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.2)
    time.sleep(3)  # the notebook's kernel is up and in its long cell
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("numpygpt course: interrupted"), err
    assert (out / "index.html").read_text() == "the old site"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["nb", "site"]  # no temporary left


# --------------------------------------------------------------------------------------------
# The real course, built once in fast mode with the solutions put in


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # shared with the stub runs when they run in this process (with -n, each worker has its own
    # base folder, so a worker trains the course model for itself)
    cache = tmp_path_factory.getbasetemp() / "numpygpt-course-cache"
    cache.mkdir(exist_ok=True)
    out = tmp_path_factory.mktemp("course") / "site"
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMPYGPT_CACHE", str(cache))  # never the user's cache
        build = coursesite.build_site(out, NOTEBOOK_DIR, fast=True, log=lines.append)
    print("\n".join(lines))
    return build


@pytest.mark.slow
def test_site_has_every_page_with_its_plots(site):
    out = site.out
    index = (out / "index.html").read_text()
    assert [p.path for p in site.pages] == notebook_paths(NOTEBOOK_DIR)
    for page in site.pages:
        html = (out / page.html_name).read_text()
        assert f'href="{page.html_name}"' in index
        expected = image_outputs(page.executed)
        imgs = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', html)
        assert len(imgs) == expected, f"{page.html_name}: {len(imgs)} <img>, {expected} plots"
        for src, alt in imgs:
            assert (out / src).stat().st_size > 1000 and alt.strip(), src
        plots = any(PLOTS.search(c.source) for c in page.source.cells if c.cell_type == "code")
        assert expected > 0 or not plots, f"{page.path.name} plots, but no image came out"


@pytest.mark.slow
def test_site_has_no_raw_tex_and_needs_no_network(site):
    assert not site.math_fallbacks, site.math_fallbacks
    for path in site.out.glob("*.html"):
        html = path.read_text()
        assert "tex-fallback" not in html, path.name
        assert "<script" not in html, path.name
        assert not re.search(r'<(img|link|iframe|audio|video|source)[^>]+(src|href)="(https?:)?//',
                             html), f"{path.name} loads something from the network"
    assert "@import" not in (site.out / "style.css").read_text()


@pytest.mark.slow
def test_site_renders_every_markdown_table(site):
    """A table row that the Markdown parser could not read (say, an unescaped | inside a code
    span) would show up as raw pipes and dashes in a paragraph."""
    for path in site.out.glob("*.html"):
        text = re.sub(r"<pre.*?</pre>", "", path.read_text(), flags=re.S)  # code and outputs
        assert not re.search(r"\|\s*:?-{3,}:?\s*\|", text), f"{path.name}: a table did not render"


@pytest.mark.slow
def test_site_folds_every_solution_and_answer(site):
    for page in site.pages:
        html = (site.out / page.html_name).read_text()
        for _, name in page.exercises:
            ex = section(html, f"exercise-{name}")
            assert ex.count("<details") == 1 and \
                '<details class="solution"><summary>show a solution</summary>' in ex, name
            assert ex.index("NotImplementedError") < ex.index("<details")  # the stub, first
        for _, name in page.questions:
            q = section(html, f"question-{name}")
            assert '<details class="answer"><summary>show an answer</summary>' in q, name


@pytest.mark.slow
def test_with_solutions_every_checker_passes(site):
    for page in site.pages:
        nb = page.executed
        errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  and any(o.output_type == "error" for o in c.outputs)]
        assert not errors, f"{page.path.name}: error output in cells {errors}"
        # a cell may show a checker rejecting a wrong answer on purpose (01's `dwte[idx] +=
        # dout`), and then says so: `assert not buggy_report.ok`
        crosses = [ln for c in nb.cells if c.cell_type == "code"
                   and not re.search(r"assert not \w+\.ok", c.source)
                   for ln in output_text(c).splitlines() if ln.lstrip().startswith("✗")]
        assert not crosses, f"{page.path.name}: a check failed with the solutions: {crosses}"
        for i, name in exercises(nb):
            checker = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
            said = output_text(checker)
            assert "all correct" in said.lower(), \
                f"{page.path.name}: with its solution, the check of {name} said {said!r}"
        assert not page.left_files, f"{page.path.name} left {page.left_files}"


# --------------------------------------------------------------------------------------------
# A real browser, offline

PROBE = """<script>
addEventListener("load", () => {
  const maths = [...document.querySelectorAll("math")];
  const shown = maths.filter(m => {
    const r = m.getBoundingClientRect();
    return getComputedStyle(m).display.includes("math") && r.width > 0 && r.height > 0;
  });
  const fracs = [...document.querySelectorAll("mfrac")];
  const stacked = fracs.filter(f => f.children.length == 2 &&
    f.children[0].getBoundingClientRect().bottom <= f.children[1].getBoundingClientRect().top + 1);
  const b = document.body;
  b.dataset.mathTotal = maths.length; b.dataset.mathRendered = shown.length;
  b.dataset.fracTotal = fracs.length; b.dataset.fracStacked = stacked.length;
});
</script>"""


def _chromium(args, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")
def test_formulas_render_offline_in_chromium(site, tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    # the page with the most fractions: the hardest layout to fake
    page = max(site.pages, key=lambda p: (site.out / p.html_name).read_text().count("<mfrac"))
    probe = site.out / f"_probe_{page.html_name}"
    probe.write_text((site.out / page.html_name).read_text().replace("</body>",
                                                                     PROBE + "</body>"))
    try:
        dom = _chromium(["--virtual-time-budget=10000", "--window-size=1100,1600",
                         "--dump-dom", probe.as_uri()], tmp_path).stdout
    finally:
        probe.unlink()
    counts = {k: int(v) for k, v in re.findall(r'data-(math-total|math-rendered|frac-total|'
                                              r'frac-stacked)="(\d+)"', dom)}
    assert len(counts) == 4, f"the probe did not run: {dom[:300]!r}"
    assert counts["math-total"] >= 20 and counts["math-rendered"] == counts["math-total"], counts
    assert counts["frac-total"] >= 1 and counts["frac-stacked"] == counts["frac-total"], counts

    shot = tmp_path / "page.png"
    _chromium([f"--screenshot={shot}", "--window-size=1100,1600",
               (site.out / page.html_name).as_uri()], tmp_path)
    image = PIL.open(shot).convert("L")
    histogram = image.histogram()  # 256 grey levels
    dark = sum(histogram[:110]) / sum(histogram)
    inked = sum(histogram[:250]) / sum(histogram)
    assert image.size == (1100, 1600) and 0.005 < dark < 0.5 and inked > 0.02, (dark, inked)


def test_a_second_build_into_the_same_folder_is_refused_naming_the_first(tmp_path):
    from numpygpt.errors import UserError
    from numpygpt.io.lock import RunLock

    course = _tiny_course(tmp_path / "nb")
    out = tmp_path / "site"
    with RunLock(out, "numpygpt course build", path=tmp_path / ".site.numpygpt.lock"):
        with pytest.raises(UserError, match=r"in use by numpygpt course build \(pid \d+"):
            coursesite.build_site(out, course, fast=True, log=lambda s: None)
    assert not out.exists()  # the refused build wrote nothing
    coursesite.build_site(out, course, fast=True, log=lambda s: None)  # once it is free
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb", "site"]  # no lock left


def test_a_solutions_file_without_blocks_is_read_as_none(tmp_path):
    for text in ("", "# just a comment\nx = 1\n"):
        (tmp_path / "00_x.py").write_text(text)
        assert read_solutions(tmp_path / "00_x.py") == {}
