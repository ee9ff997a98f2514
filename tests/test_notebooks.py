"""Execute every course notebook top to bottom in a fresh kernel, in fast (CI) mode.

The notebooks are committed without outputs (reviewable diffs); this test runs them, so a
notebook that breaks fails the suite. NUMPYGPT_FAST=1 shrinks their training runs.
"""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def test_the_course_has_its_notebooks():
    assert len(NOTEBOOKS) >= 13, [p.name for p in NOTEBOOKS]


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, \
                    f"{path.name}: strip outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYGPT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "cache"))  # never the user's cache
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {elapsed:.1f} s")
    # leave no files behind in the repository
    assert not any(p.name.startswith("out") for p in path.parent.iterdir() if p.is_dir()), \
        "notebooks must write their runs to a temporary folder"
