"""The test suite's own setup (tests/conftest.py): how many worker processes `-n auto` starts."""

import os

import conftest


def workers(monkeypatch, cores, env=None):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if env is None:
        monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", env)
    return conftest.pytest_xdist_auto_num_workers(config=None)


def test_one_worker_per_core_up_to_the_cap(monkeypatch):
    assert workers(monkeypatch, 1) == 0  # one core: every test in this process
    assert workers(monkeypatch, 2) == 2
    assert workers(monkeypatch, 3) == 3
    assert workers(monkeypatch, 64) == conftest.MAX_WORKERS == 4


def test_the_environment_variable_decides_when_set(monkeypatch):
    assert workers(monkeypatch, 64, env="7") == 7
    assert workers(monkeypatch, 2, env="1") == 1
