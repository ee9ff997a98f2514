"""training/memory.py: the training loop and the benchmarks keep the memory a step frees, so
that the next step does not fault its pages in again (glibc's malloc)."""

import importlib
import subprocess
import sys
import textwrap

import pytest
from test_train import tiny, write_data

from numpygpt.training import memory
from numpygpt.training.train import train

loop_mod = importlib.import_module("numpygpt.training.loop")

# A fresh process steps 5 times through 160 arrays of 1 MB (below numpy's 4 MB hugepage
# threshold, so each fault is one 4 kB page), all freed at the end of each step as a
# training step frees its activations; it prints the page faults of the last 4 steps.
CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from numpygpt.training.memory import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else None

    def step():
        arrays = [np.ones(1 << 18, dtype=np.float32) for _ in range(160)]
        return sum(float(a[0]) for a in arrays)

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        step()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _child(mode, env=None):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True, env=env, timeout=120).stdout.split()
    return out[0], int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    kept, faults_kept = _child("keep")
    if kept != "True":
        pytest.skip("not glibc's malloc: keep_freed_memory leaves it alone")
    _, faults_default = _child("default")
    # by default each step faults its 160 MB in again (40960 pages per step); kept: none
    assert faults_default > 4 * 160 * 256 // 2, faults_default
    assert faults_kept < faults_default // 20, (faults_kept, faults_default)


@pytest.mark.parametrize("name, value", [
    ("MALLOC_MMAP_THRESHOLD_", "65536"), ("MALLOC_TRIM_THRESHOLD_", "0"),
    ("GLIBC_TUNABLES", "glibc.cpu.x86_shstk=0:glibc.malloc.trim_threshold=0")])
def test_the_users_own_malloc_settings_win(name, value, monkeypatch):
    for other in (*memory.USER_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda *a: calls.append(a))
    assert memory._set_thresholds() is False and calls == []


def test_other_glibc_tunables_do_not_count_as_malloc_settings():
    assert not memory.users_malloc_settings({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=0"})
    assert not memory.users_malloc_settings({})


def test_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_state", {})
    monkeypatch.setattr(memory, "_set_thresholds", lambda: calls.append(1) or True)
    assert memory.keep_freed_memory() and memory.keep_freed_memory()
    assert calls == [1]


def test_the_training_loop_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop_mod, "keep_freed_memory", lambda: calls.append(1))
    train(tiny(write_data(tmp_path), tmp_path / "out", max_iters=2, eval_interval=2),
          progress=False)
    assert calls == [1]
