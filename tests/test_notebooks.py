"""The course notebooks as a learner gets them.

- Committed clean: no outputs (reviewable diffs), every exercise cell a stub that holds none
  of its solution, every notebook from 01 on with at least one exercise, every exercise with a
  solution block and every open question with an answer in notebooks/solutions/.
- They run: each notebook, stubs in place, top to bottom in a fresh kernel in fast mode
  (NUMPYGPT_FAST=1 shrinks the training runs), with no error output; the checker cell after
  each stub says "not implemented yet" instead of stopping the run; and no run leaves a file
  in the notebooks folder.

The course with the solutions put in runs once, in tests/test_course_site.py (the site build).
"""

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from notebook_outputs import output_text  # noqa: E402

from numpygpt.course.notebooks import (  # noqa: E402
    answer_markdown,
    exercises,
    notebook_paths,
    questions,
    read_solutions,
    solutions_path,
)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = notebook_paths(NOTEBOOK_DIR)
IDS = [p.stem for p in NOTEBOOKS]


def read(path):
    return nbformat.read(path, as_version=4)


def next_code_cell(nb, index):
    return next(c for c in nb.cells[index + 1:] if c.cell_type == "code")


def function_body(source, name):
    """The statements of function `name` in `source`, without its docstring and without the
    unpacking of its arguments (`x, w = cache`: a stub may give those)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            params = {a.arg for a in node.args.args}
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            return [s for s in body if not is_unpacking(s, params)]
    return None


def is_unpacking(stmt, params):
    """`a, b = cache`, `B, T, C = x.shape`, `C, V = cfg.n_embd, cfg.vocab_size`: names for
    what the arguments hold, no computation."""
    def access(e):
        if isinstance(e, ast.Name):
            return e.id in params
        if isinstance(e, ast.Attribute):
            return access(e.value)
        if isinstance(e, ast.Subscript):
            return isinstance(e.slice, ast.Constant) and access(e.value)
        return isinstance(e, ast.Tuple) and all(access(x) for x in e.elts)

    def names(t):
        return isinstance(t, ast.Name) or (isinstance(t, ast.Tuple)
                                           and all(isinstance(x, ast.Name) for x in t.elts))

    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and names(stmt.targets[0])
            and access(stmt.value))


def test_the_course_has_its_notebooks():
    assert len(NOTEBOOKS) >= 15, IDS
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


def test_no_exercise_is_asked_twice():
    where = {}
    for path in NOTEBOOKS:
        for _, name in exercises(read(path)):
            where.setdefault(name, []).append(path.stem)
    assert {n: w for n, w in where.items() if len(w) > 1} == {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=IDS[1:])
def test_every_notebook_from_01_has_an_exercise(path):
    assert exercises(read(path)), f"{path.name} has no exercise cell (metadata 'exercise')"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exercise_cells_are_stubs_without_their_solution(path):
    nb = read(path)
    solutions = read_solutions(solutions_path(path))
    for i, name in exercises(nb):
        source = nb.cells[i].source
        stub = function_body(source, name)
        assert stub is not None, f"{path.name} cell {i}: no function '{name}' in the exercise"
        # only `raise NotImplementedError` after the docstring (and the unpacking of the cache;
        # comments are not statements)
        assert len(stub) == 1 and isinstance(stub[0], ast.Raise), \
            f"{path.name} cell {i}: the stub of {name} holds code besides raise " \
            f"NotImplementedError"
        assert "# your code here" in source, f"{path.name} cell {i}: no '# your code here'"
        assert name in solutions, f"{path.name}: no '# %% {name}' block in the solutions"
        solved = function_body(solutions[name], name)
        assert solved, f"{path.name}: the '# %% {name}' block does not define {name}"
        given = {ast.dump(s) for s in stub}
        leaked = [ast.unparse(s) for s in solved if ast.dump(s) in given
                  and not isinstance(s, ast.Raise)]
        assert not leaked, f"{path.name} cell {i}: the stub holds its solution: {leaked}"
        # a solution line copied into the stub as a "hint" gives the answer away too
        hints = {ln.strip().lstrip("#").strip() for ln in source.splitlines()}
        lines = [ln.strip() for s in solved for ln in ast.unparse(s).splitlines()
                 if len(ln.strip()) > 12]
        copied = [ln for ln in lines if ln in hints]
        assert not copied, f"{path.name} cell {i}: the stub shows solution lines {copied}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_exercise_has_a_solution_and_every_question_an_answer(path):
    nb = read(path)
    solutions = read_solutions(solutions_path(path))
    names = [n for _, n in exercises(nb)] + [n for _, n in questions(nb)]
    assert len(names) == len(set(names)), f"{path.name}: an exercise or question name repeats"
    missing = [n for n in names if n not in solutions]
    assert not missing, f"{path.name}: no block in solutions/{path.stem}.py for {missing}"
    for _, name in questions(nb):
        assert len(answer_markdown(solutions[name]).split()) >= 10, \
            f"{path.name}: the answer to '{name}' is (almost) empty"
    unused = set(solutions) - set(names)
    assert not unused, f"solutions/{path.stem}.py has blocks no cell asks for: {sorted(unused)}"


@pytest.fixture(scope="module")
def course_cache(tmp_path_factory):
    """One model cache for every course run of this process (09 trains, 10, 11, 14 reuse; the
    site build's too when it runs in the same worker)."""
    path = tmp_path_factory.getbasetemp() / "numpygpt-course-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_learner_notebook_runs_with_its_stubs(path, course_cache, monkeypatch):
    from numpygpt.course.site import run_notebook

    monkeypatch.setenv("NUMPYGPT_CACHE", str(course_cache))  # never the user's cache
    before = set(NOTEBOOK_DIR.rglob("*"))
    nb = read(path)
    seconds = run_notebook(nb, path, fast=True, timeout=600)
    print(f"{path.name}: {seconds:.1f} s")
    errors = [(i, output_text(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.outputs)]
    assert not errors, f"{path.name}: error output in cells {errors}"
    for i, name in exercises(nb):
        said = output_text(next_code_cell(nb, i))
        assert "not implemented yet" in said, \
            f"{path.name}: the checker after the stub of {name} (cell {i}) printed {said!r}"
    left = {p for p in set(NOTEBOOK_DIR.rglob("*")) - before
            if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}
    assert not left, f"{path.name} left files in the notebooks folder: {sorted(left)}"
