"""Data-parallel training (numpygpt.training.parallel, and train() under `mpiexec -n 2`).

The first part needs no MPI: one flat buffer, the rank slices of a batch, and the maths of the
all-reduce (two simulated workers in one process give the gradient of the whole batch). The
second part launches real MPI jobs (tiny preset, 20 steps) and is skipped, with the reason,
where mpi4py or mpiexec is missing (`pip install -e .[mpi]` brings both).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import numpygpt.training.parallel as par
from numpygpt.errors import ConfigError, UserError
from numpygpt.io.checkpoint import load_checkpoint
from numpygpt.models.gpt import GPT, GPTConfig
from numpygpt.training.run import RUN_FILES
from numpygpt.training.train import TrainConfig, train

TEXT = ("the quick brown fox jumps over the lazy dog.\n"
        "pack my box with five dozen liquor jugs.\n"
        "sphinx of black quartz, judge my vow!\n") * 40


# --- without MPI --------------------------------------------------------------------------------


def test_flatten_unflatten_round_trip():
    rng = np.random.default_rng(0)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 1, 3), "d": (1,)}
    grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    keys = ["c", "a", "d", "b"]  # any fixed order, the same on every rank
    buf = par.flatten(grads, keys)
    assert buf.shape == (12 + 5 + 6 + 1,) and buf.dtype == np.float32
    np.testing.assert_array_equal(buf[:6], grads["c"].ravel())  # in the order of keys
    back = par.unflatten(buf, shapes, keys)
    for k in shapes:
        np.testing.assert_array_equal(back[k], grads[k])
        assert np.shares_memory(back[k], buf)  # views: the all-reduced buffer is the gradient
    with pytest.raises(ValueError, match="shape"):
        par.flatten(grads, keys, out=np.empty(3, np.float32))
    with pytest.raises(ValueError, match="24 numbers"):
        par.unflatten(buf, {"a": (3, 4)}, ["a"])


def test_shard_rows_split_the_batch_in_order():
    for size in (1, 2, 4, 8):
        rows = np.arange(8)
        parts = [rows[par.shard_rows(8, r, size)] for r in range(size)]
        assert all(len(p) == 8 // size for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), rows)  # each row once, in order
    assert par.shard_rows(12, 1, 3) == slice(4, 8)


def test_batch_not_divisible_is_a_config_error_naming_both_numbers():
    with pytest.raises(ConfigError, match=r"batch-size 7 is not divisible by the 2 MPI"):
        par.shard_rows(7, 0, 2)


def test_two_simulated_workers_give_the_gradient_of_the_whole_batch():
    """Each worker: the mean loss over its half of the rows; the mean of the two workers'
    gradients is the gradient of the mean over all rows (float64, to rounding)."""
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 13, (6, 8)), rng.integers(0, 13, (6, 8))  # (B, T)
    _, loss = model.forward(x, y)
    full = model.backward()
    worker_grads, worker_losses = [], []
    for r in range(2):
        rows = par.shard_rows(6, r, 2)
        _, loss_r = model.forward(x[rows], y[rows])
        worker_losses.append(loss_r)
        worker_grads.append(model.backward())
    summed = {k: worker_grads[0][k] + worker_grads[1][k] for k in full}  # the all-reduce
    assert abs(np.mean(worker_losses) - loss) <= 1e-12 * abs(loss)
    for k, g in full.items():
        err = np.max(np.abs(summed[k] / 2 - g)) / max(1e-12, np.max(np.abs(g)))
        assert err <= 1e-12, (k, err)
        # forgetting the 1/N gives twice the gradient: the test would see it
        assert np.allclose(summed[k], 2 * g, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("N", [1, 2, 3, 4, 7])
def test_ring_allreduce_sums_and_sends_2_n_minus_1_over_n(N):
    rng = np.random.default_rng(N)
    size = 84  # divisible by 1, 2, 3, 4, 7: equal chunks
    bufs = [rng.standard_normal(size) for _ in range(N)]
    copies = [b.copy() for b in bufs]
    results, sent, history = par.ring_allreduce(bufs)
    total = np.sum(bufs, axis=0)
    for r in results:
        np.testing.assert_allclose(r, total, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(r, results[0])  # every worker the same numbers
    assert all(np.array_equal(a, b) for a, b in zip(bufs, copies, strict=True))  # inputs kept
    assert list(sent) == [2 * (N - 1) * size // N] * N
    assert len(history) == 2 * (N - 1) + 1
    # after reduce-scatter worker r holds the full sum of chunk r + 1; at the end, everything
    full = history[N - 1]
    assert all(full[r, (r + 1) % N] == N for r in range(N))
    assert (history[-1] == N).all()


class _SumOfCopies:
    """A stand-in world of `size` ranks that all hold the same gradients: the all-reduce sum is
    size x the buffer. GradAllReduce must return the buffer itself (the mean)."""

    rank, is_root = 0, True

    def __init__(self, size):
        self.size = size
        self.calls = 0

    def allreduce_sum_(self, buf):
        self.calls += 1
        buf *= buf.dtype.type(self.size)
        return buf


def test_grad_allreduce_is_one_call_and_divides_by_n():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    rng = np.random.default_rng(3)
    grads = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in model.params.items()}
    world = _SumOfCopies(4)
    avg = par.GradAllReduce(world, model.params)
    out = avg(grads)
    assert world.calls == 1  # one buffer for all tensors
    assert list(out) == list(model.params)
    for k, g in grads.items():
        assert out[k].dtype == np.float32 and out[k].shape == g.shape
        np.testing.assert_allclose(out[k], g, rtol=1e-6)


def test_launched_size_from_the_launchers_environment():
    assert par.launched_size({}) == 1
    assert par.launched_size({"PMI_SIZE": "4", "PMI_RANK": "1"}) == 4  # MPICH (hydra), Slurm
    assert par.launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2  # Open MPI
    assert par.launched_size({"PMIX_RANK": "0"}) is None  # ask MPI itself


def test_plain_python_never_imports_mpi():
    env = {k: v for k, v in os.environ.items()
           if k not in par._SIZE_VARS + par._RANK_ONLY_VARS}
    code = ("import sys; from numpygpt.training.parallel import get_world; w = get_world(); "
            "print(type(w).__name__, w.size, 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["SingleProcess", "1", "False"]


def test_launched_by_mpi_without_mpi4py_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(par, "_WORLD", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` fails
    with pytest.raises(UserError, match=r"2 processes, but mpi4py is not installed: pip "
                                        r"install -e \.\[mpi\]"):
        par.get_world()


def test_one_process_helpers_change_nothing():
    world = par.SingleProcess()
    with pytest.raises(ValueError, match="mine"), par.together(world):
        raise ValueError("mine")
    with pytest.raises(KeyError), par.abort_on_error(world):  # no abort with one process
        raise KeyError("x")
    err = ValueError("nan")
    assert par.agreed(world, err) is err
    buf = np.ones(3, np.float32)
    assert world.allreduce_sum_(buf) is buf


# --- real MPI jobs ------------------------------------------------------------------------------


def _mpiexec():
    """The mpiexec beside this Python (the one `pip install mpich` brings), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e .[mpi])"
    if _mpiexec() is None:
        return "no mpiexec beside this Python or on PATH (pip install -e .[mpi])"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def _env(**extra):
    # One BLAS thread per rank (conftest sets it for the suite; the ranks inherit it), and none
    # of an outer MPI job's variables.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
    return {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **extra}


def _train_cmd(out, *flags, data="data.txt"):
    return [sys.executable, "-m", "numpygpt", "train", "--data", data, "--out", str(out),
            "--no-progress", "--sample-tokens", "0", *map(str, flags)]


TINY = ("--preset", "tiny", "--max-iters", 20, "--eval-interval", 10)


def _mpirun(n, cmd, cwd, timeout=120, **env):
    return subprocess.run([_mpiexec(), "-n", str(n), *cmd], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "data.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def _one_process(folder, out, **kw):
    cfg = TrainConfig.preset_config("tiny", data=str(folder / "data.txt"), out=str(folder / out),
                                    max_iters=20, eval_interval=10, **kw)
    return train(cfg, progress=False, world=par.SingleProcess())


def _assert_same_run(a, b):
    """Two runs' folders: losses to 1e-5 relative, parameters to 1e-4 (float32)."""
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert ma["step"] == mb["step"]
    for key in ("train_loss", "val_loss", "last_batch_loss"):
        assert abs(ma[key] - mb[key]) <= 1e-5 * abs(ma[key]), (key, ma[key], mb[key])
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    assert pa.keys() == pb.keys()
    worst = max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa)
    assert worst <= 1e-4, worst
    return ma, mb


@needs_mpi
def test_two_ranks_equal_one_process_and_only_rank_0_writes(folder):
    """The acceptance test. Rank 1 runs in a folder of its own (mpiexec's MPMD form, -wdir):
    the relative --out resolves there too, so a rank 1 that wrote anything would show."""
    other = folder / "rank1"
    other.mkdir()
    shutil.copy(folder / "data.txt", other / "data.txt")
    cmd = _train_cmd("run2", *TINY)
    proc = subprocess.run([_mpiexec(), "-n", "1", "-wdir", str(folder), *cmd, ":",
                           "-n", "1", "-wdir", str(other), *cmd], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("finished step 20") == 1  # rank 0 reports, once
    assert "data-parallel on 2 MPI processes" in proc.stdout
    _one_process(folder, "run1")
    m2, m1 = _assert_same_run(folder / "run2", folder / "run1")
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert sorted(os.listdir(folder / "run2")) == sorted(RUN_FILES)
    assert os.listdir(other) == ["data.txt"]  # rank 1 wrote nothing
    # the log is rank 0's and whole: the evaluations at 0, 10, 20 and the loss rows
    rows = [json.loads(line) for line in (folder / "run2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 10, 20]


@needs_mpi
def test_a_llama_trains_data_parallel_like_one_process(folder):
    """--arch llama goes through the same loop: 2 ranks equal one process as for the GPT."""
    proc = _mpirun(2, _train_cmd("llama2", *TINY, "--arch", "llama"), folder)
    assert proc.returncode == 0, proc.stderr
    _one_process(folder, "llama1", arch="llama")
    m2, _ = _assert_same_run(folder / "llama2", folder / "llama1")
    assert m2["arch"] == "llama" and m2["world_size"] == 2

@needs_mpi
@pytest.mark.parametrize("first, second", [(1, 2), (2, 1)])
def test_resume_with_a_different_number_of_ranks(folder, first, second):
    """10 steps on `first` ranks, then 10 more on `second`: the same as 20 steps at once (the
    checkpoint holds only global state: step, data generator, optimizer)."""
    _one_process(folder, "ref", lr_decay_iters=20)
    half = ("--preset", "tiny", "--max-iters", 10, "--eval-interval", 10,
            "--lr-decay-iters", 20)
    for n, cmd in ((first, _train_cmd("run", *half)),
                   (second, _train_cmd("run", "--resume", "--max-iters", 20))):
        proc = (_mpirun(n, cmd, folder) if n > 1
                else subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True,
                                    text=True, timeout=120))
        assert proc.returncode == 0, proc.stderr
    m, _ = _assert_same_run(folder / "run", folder / "ref")
    assert m["world_size"] == second


@needs_mpi
def test_user_error_on_rank_0_is_one_line_and_no_hang(folder):
    """The out folder check runs on rank 0 only; the other rank hears of it and both exit."""
    (folder / "run").mkdir()
    (folder / "run" / "notes.txt").write_text("mine")
    proc = _mpirun(2, _train_cmd("run", *TINY), folder, timeout=60)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr  # rank 0's, once
    assert errors[0].startswith("numpygpt train (rank 0 of 2): error: --out "), errors
    assert "is not empty (notes.txt)" in errors[0]
    assert os.listdir(folder / "run") == ["notes.txt"]
    proc = _mpirun(2, _train_cmd("run2", *TINY, "--batch-size", 7), folder, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("batch-size 7 is not divisible by the 2 MPI processes") == 1
    assert not (folder / "run2").exists()


def _rank_pid(token, rank, deadline):
    """The PID of the rank of our job (found by a token in its environment: /proc)."""
    mine = f"NUMPYGPT_TEST_TOKEN={token}".encode()
    ranks = {f"{var}={rank}".encode() for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK")}
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if mine in env and ranks & env and b"numpygpt" in cmdline:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} not found")


def _start_long_run(folder):
    """Two ranks training `tiny` for (practically) ever, saving every 10 steps in folder/run;
    the ranks record their PIDs under a fresh token (_rank_pid). Returns (proc, out, token)."""
    token = uuid.uuid4().hex
    out = folder / "run"
    cmd = [_mpiexec(), "-n", "2", *_train_cmd(out, "--preset", "tiny", "--max-iters", 100000,
                                              "--eval-interval", 10, "--eval-iters", 1)]
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(NUMPYGPT_TEST_TOKEN=token),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out, token


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_rank_ends_the_job_and_the_checkpoint_loads(folder):
    proc, out, token = _start_long_run(folder)
    try:
        deadline = time.monotonic() + 60
        victim = _rank_pid(token, 1, deadline)
        # mid-run: at least one checkpoint after step 0 is saved
        while time.monotonic() < deadline and not (
                (out / "log.jsonl").exists()
                and any(json.loads(r)["step"] >= 20
                        for r in (out / "log.jsonl").read_text().splitlines() if r)):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        stdout, err = proc.communicate(timeout=60)  # a hang fails here: the job must end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    # MPICH's mpiexec reports on stdout ("BAD TERMINATION ... signal 9"); or, the other rank's
    # all-reduce failing first, MPICH prints its error ("Fatal error in ...Allreduce") and we
    # ours; which comes out depends on who is first (seen: mostly the former)
    said = stdout + err
    assert re.search(r"signal 9|[Kk]illed|Fatal error in .*Allreduce|numpygpt train \(rank 0 "
                     r"of 2\): error: the communication with the other ranks failed", said), said
    assert "Traceback" not in said
    ckpt = load_checkpoint(out)  # the last save is whole (atomic writes)
    assert ckpt.train_state["step"] % 10 == 0 and ckpt.train_state["step"] >= 20
    # and it resumes (one process here)
    resumed = subprocess.run(_train_cmd(out, "--resume", "--max-iters",
                                        ckpt.train_state["step"] + 2),
                             cwd=folder, env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr


# --- bench --ddp ---------------------------------------------------------------------------------


def test_ring_allreduce_bytes_by_hand():
    from numpygpt.bench import ring_allreduce_bytes

    assert ring_allreduce_bytes(1000, 1) == 0  # alone: nothing to send
    assert ring_allreduce_bytes(1000, 2) == 4000  # half out, the other half's sum back
    assert ring_allreduce_bytes(1000, 4) == 2 * 3 / 4 * 4000
    assert ring_allreduce_bytes(1000, 10**6) < 2 * 4000  # never more than twice the model


def test_bench_ddp_batch_not_divisible_is_one_line(capsys):
    from clirun import run

    code, _, err = run(["bench", "--ddp", "5"], capsys)
    assert code == 1
    assert err.strip() == ("numpygpt bench: error: --ddp 5: the baby benchmark's batch of 12 "
                           "is not divisible by 5 processes")


@needs_mpi
def test_bench_ddp_measures_one_and_two_processes():
    from numpygpt.bench import bench_ddp, format_ddp

    res = bench_ddp(2, "baby", rounds=1, steps=1)
    assert [(r["ranks"], r["threads"]) for r in res["runs"]] == [
        (1, os.cpu_count()), (1, 1), (2, max(1, os.cpu_count() // 2))]
    for r in res["runs"]:
        assert r["s_per_step"] > 0
        assert r["tokens_per_sec"] == pytest.approx(12 * 64 / r["s_per_step"])
    assert res["runs"][2]["comm_s"] >= 0
    assert [p["N"] for p in res["paper"]] == [2, 4, 8, 64]
    assert res["paper"][0]["seconds"][10] == pytest.approx(4 * res["n_params"] * 8 / 10e9)
    text = format_ddp(res)
    assert "2 process(es) x" in text and "Gbit/s" in text


@needs_mpi
def test_an_error_on_rank_0_mid_run_ends_the_job_with_its_message(folder):
    """Rank 0 alone writes, so only it can fail to: it prints its one line and aborts the job
    (MPI_Abort), instead of leaving rank 1 in the next all-reduce forever."""
    out = folder / "run"
    cmd = [_mpiexec(), "-n", "2", *_train_cmd(out, "--preset", "tiny", "--max-iters", 100000,
                                              "--eval-interval", 10, "--eval-iters", 1)]
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        log = out / "log.jsonl"
        while time.monotonic() < deadline:  # once training runs, a folder takes the log's place
            assert proc.poll() is None, proc.communicate()
            try:
                if log.is_file():
                    log.unlink()
                    log.mkdir()
                    break
            except OSError:  # rank 0 replaced the file just then: again
                pass
            time.sleep(0.05)
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "numpygpt train (rank 0 of 2): error: cannot write log.jsonl in" in err, \
        (proc.returncode, stdout, err)
    assert load_checkpoint(out).train_state["step"] % 10 == 0


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(folder):
    """SIGINT to rank 1 alone: its stop flag travels with the next all-reduce, so both ranks
    leave the loop after the same step, and rank 0 saves there."""
    proc, out, token = _start_long_run(folder)
    try:
        deadline = time.monotonic() + 60
        rank1 = _rank_pid(token, 1, deadline)
        while time.monotonic() < deadline and not (out / "log.jsonl").exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.kill(rank1, signal.SIGINT)
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (stdout, err)
    assert stdout.count("interrupted at step") == 1, stdout  # rank 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["world_size"] == 2
    assert load_checkpoint(out).train_state["step"] == metrics["step"] > 0
