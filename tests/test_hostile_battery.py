"""A handful of the hostile battery's cases (tests/hostile_battery.py runs them all, for minutes):
one of each kind of check it makes, and its checker fed cases it must fail."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile_battery as hb  # noqa: E402

QUICK = [
    "two processes: train \\+ train on one --out$",
    "signals: train, SIGTERM$",
    "overwrite: --overwrite whose first save fails",
    "overwrite: --out a folder of user files$",
    "sizes: a ckpt.npz declaring a 40 GB array",
    "sizes: a GPT-2 safetensors declaring 51 GB",
    "tracebacks: --freeze \u00b2$",
    "tracebacks: train --out, a name that is not UTF-8",
    "messages: a bad character on line 7 of a CSV",
    "silent: sample --temperature 1e-310",
    "earlier: a full disk at the first save of a new run",
]


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "_cache"))
    hb.SHARED.clear()  # the shared things (a trained run, ...) are made per test
    yield tmp_path
    hb.SHARED.clear()


def test_a_case_of_each_kind_is_handled(root):
    cases = [c for pattern in QUICK for c in hb.select(pattern, mpi=False)]
    assert len(cases) == len(QUICK)
    rows = hb.run_cases(cases, root, log=lambda s: None)
    failed = [f"{r['family']}: {r['case']}: {r['why']}" for r in rows if not r["handled"]]
    assert not failed, failed
    assert all(r["peak_rss_mb"] < 1536 for r in rows)


def test_the_checker_fails_what_is_not_handled(root):
    """A 'refusal' that succeeds, one that prints a traceback, one that changes a file, one
    that says two lines: each is reported, with why."""
    hb.refusal("self-test", "runs instead", "print('fine')", "", api=True)
    hb.refusal("self-test", "a traceback", "raise RuntimeError('a bug')", "", api=True)
    hb.refusal("self-test", "writes a file", "open('made.txt', 'w').write('x')\n"
               "raise ValueError('refused, but wrote a file first')", "", api=True)
    hb.refusal("self-test", "two lines", "print('one', file=sys.stderr)\n"
               "raise ValueError('two')", "", api=True)
    hb.refusal("self-test", "the wrong message", ["train", "--preset", "huge"], "not this")
    try:
        bad = hb.CASES[-5:]
        rows = hb.run_cases(bad, root, log=lambda s: None)
    finally:
        del hb.CASES[-5:]
    whys = [r["why"] for r in rows]
    assert not any(r["handled"] for r in rows), whys
    assert whys[0].startswith("exit code 0")
    assert whys[1] == "traceback"
    assert whys[2].startswith("files changed: made.txt created")
    assert whys[3] == "2 lines on stderr, expected 1"
    assert whys[4] == "message lacks 'not this'"
