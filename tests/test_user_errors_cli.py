"""Issue 10 through the command line: nothing lost, nothing hidden.

Every case is a careless or hostile input to `python -m numpygpt`. Each ends in one line on
stderr and a non-zero exit (or a correct result), leaves the user's files byte for byte as
they were, and is refused before it costs memory or time. A bug in code (here, a learner's
broken layer) is the exception: it shows its full traceback.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from clirun import run

import numpygpt.kernels
from numpygpt.cli import main
from numpygpt.data import DataError
from numpygpt.io.checkpoint import load_checkpoint, save_checkpoint

TEXT = ("the quick brown fox jumps over the lazy dog.\n"
        "pack my box with five dozen liquor jugs.\n") * 40
FAST = ["--preset", "tiny", "--eval-iters", "2", "--no-progress", "--sample-tokens", "0"]
REPO = Path(__file__).resolve().parents[1]


def one_line_error(code, err, *needles):
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and "numpygpt" in lines[0], err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    """name -> bytes of every file under `folder`: 'nothing the user had is lost'."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 4-step tiny run made through the CLI: (folder, data path). Tests copy it."""
    root = tmp_path_factory.mktemp("g_cli")
    data = root / "data.txt"
    data.write_text(TEXT, encoding="utf-8")
    with redirect_stdout(StringIO()):
        code = main(["train", *FAST, "--data", str(data), "--out", str(root / "run"),
                     "--max-iters", "4", "--eval-interval", "2"])
    assert code == 0
    return root / "run", data


@pytest.fixture
def fresh(run_dir, tmp_path):
    """A copy of the run, and the data file: (folder, data)."""
    folder = tmp_path / "run"
    shutil.copytree(run_dir[0], folder)
    return folder, run_dir[1]


def resave(folder, config=None, train_state=None, optimizer="keep"):
    """Rewrite a run's checkpoint with its config or train_state edited (as a hostile or
    hand-edited file would be); returns the snapshot of the folder afterwards."""
    ckpt = load_checkpoint(folder)
    save_checkpoint(folder, config=ckpt.config if config is None else config,
                    tokenizer=ckpt.tokenizer, params=ckpt.params,
                    optimizer=ckpt.optimizer if optimizer == "keep" else optimizer,
                    train_state=ckpt.train_state if train_state is None else train_state)
    return snapshot(folder)


# --- 1. the error rule ------------------------------------------------------------------------


def broken_layernorm_backward(dout, cache):
    """A learner's edit of the layer-norm backward with a shape bug (the mean flattened)."""
    x, w, mean, rstd = cache
    dx = (dout - mean.ravel()) * rstd  # (B, T, C) - (B*T,): cannot broadcast
    return dx, (dout * x).sum(axis=(0, 1)), dout.sum(axis=(0, 1))


def test_a_learners_broken_backward_shows_its_traceback(fresh, tmp_path, monkeypatch, capsys):
    """The bug is in code, not in the user's input: main() lets it through with its traceback
    (Python prints it, exit code 1), instead of 'error: operands could not be broadcast'."""
    # the models call the layers through numpygpt.kernels' table
    monkeypatch.setattr(numpygpt.kernels.ops, "layernorm_backward", broken_layernorm_backward)
    _, data = fresh
    with pytest.raises(ValueError) as info:
        main(["train", *FAST, "--data", str(data), "--out", str(tmp_path / "new"),
              "--max-iters", "2"])
    frames = [f.name for f in info.traceback]
    assert "broken_layernorm_backward" in frames and "backward" in frames
    assert "error:" not in capsys.readouterr().err  # nothing was turned into a one-liner


@pytest.mark.parametrize("where", ["encode", "from_dict"])
def test_sample_lets_a_bug_in_a_tokenizer_through(where, fresh, monkeypatch, capsys):
    """sample turns only the user's mistakes into one line (a prompt character the vocabulary
    lacks, a checkpoint whose tokenizer does not fit); a ValueError from broken tokenizer
    code is a bug and keeps its traceback."""
    from numpygpt.data import CharTokenizer

    def broken(*args, **kwargs):
        raise ValueError("a bug in the tokenizer")

    monkeypatch.setattr(CharTokenizer, where, broken)
    folder, _ = fresh
    with pytest.raises(ValueError, match="a bug in the tokenizer"):
        main(["sample", "--ckpt", str(folder), "--prompt", "a", "--tokens", "2"])
    assert "error:" not in capsys.readouterr().err


def test_a_broken_backward_in_a_real_process_prints_the_traceback(fresh, tmp_path):
    _, data = fresh
    script = (
        "import sys, numpygpt.layers as L\n"
        "def layernorm_backward(dout, cache):\n"
        "    raise ZeroDivisionError('learner bug')\n"
        "L.layernorm_backward = layernorm_backward\n"
        "from numpygpt.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    # the plain kernels: the model calls numpygpt.layers' layer norm, not its fast twin
    proc = subprocess.run([sys.executable, "-c", script, "train", *FAST, "--data", str(data),
                           "--out", str(tmp_path / "new"), "--max-iters", "2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "NUMPYGPT_KERNELS": "plain"})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "in layernorm_backward" in proc.stderr
    assert proc.stderr.rstrip().endswith("ZeroDivisionError: learner bug")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(how, tmp_path, monkeypatch, capsys):
    # --out in tmp_path: an `out` folder where the tests run (the README's `train` makes one)
    # would be refused first
    argv = ["train", *FAST, "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("NUMPYGPT_DEBUG", "1")
    with pytest.raises(DataError, match="missing.txt.*does not exist"):
        main(argv)


def test_numpygpt_debug_0_keeps_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMPYGPT_DEBUG", "0")
    code, _, err = run(["train", *FAST, "--data", tmp_path / "missing.txt",
                        "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "does not exist")


def test_an_oserror_from_code_is_not_disguised(fresh, tmp_path, monkeypatch):
    """Only UserError becomes one line: an OSError raised by code is a bug and propagates."""
    import numpygpt.training.train as train_mod

    def broken(*args):
        raise FileNotFoundError("a bug, not the user's file")

    monkeypatch.setattr(train_mod, "estimate_loss", broken)
    with pytest.raises(FileNotFoundError, match="a bug"):
        main(["train", *FAST, "--data", str(fresh[1]), "--out", str(tmp_path / "new")])


# --- 2. never destroy a user's files -----------------------------------------------------------


def test_train_into_a_run_without_resume_is_refused(fresh, capsys):
    folder, data = fresh
    before = snapshot(folder)
    code, _, err = run(["train", *FAST, "--data", data, "--out", folder], capsys)
    one_line_error(code, err, f"'{folder}' already holds a run: use --resume to continue it "
                              "or --overwrite to start over")
    assert snapshot(folder) == before


def test_a_folder_of_the_users_own_files_is_refused(fresh, tmp_path, capsys):
    _, data = fresh
    mine = tmp_path / "myfolder"
    mine.mkdir()
    for name, text in [("config.json", '{"mine": 1}'), ("log.jsonl", "my log\n"),
                       ("metrics.json", "{}"), ("notes.txt", "keep me")]:
        (mine / name).write_text(text)
    before = snapshot(mine)
    for extra in ([], ["--overwrite"]):  # --overwrite only ever replaces a run's files
        code, _, err = run(["train", *FAST, "--data", data, "--out", mine, *extra], capsys)
        one_line_error(code, err, "not empty", "config.json", "holds no numpygpt run")
        assert snapshot(mine) == before


def test_overwrite_replaces_only_the_runs_files(fresh, capsys):
    folder, data = fresh
    (folder / "notes.txt").write_text("my notes on this run")
    (folder / ".ckpt.npz.abcd1234.tmp").write_bytes(b"left by a kill during a save")
    old = load_checkpoint(folder)
    code, _, err = run(["train", *FAST, "--data", data, "--out", folder, "--overwrite",
                        "--max-iters", "1", "--n-layer", "1"], capsys)
    assert code == 0, err
    assert (folder / "notes.txt").read_text() == "my notes on this run"
    assert not (folder / ".ckpt.npz.abcd1234.tmp").exists()
    new = load_checkpoint(folder)
    assert new.train_state["step"] == 1 and old.train_state["step"] == 4
    assert new.config["model"]["n_layer"] == 1
    assert json.loads((folder / "metrics.json").read_text())["step"] == 1


def test_overwrite_never_replaces_a_foreign_ckpt_npz(tmp_path, fresh, capsys):
    folder = tmp_path / "other_project"
    folder.mkdir()
    with open(folder / "ckpt.npz", "wb") as f:
        np.savez(f, weights=np.arange(5.0))
    before = snapshot(folder)
    code, _, err = run(["train", *FAST, "--data", fresh[1], "--out", folder, "--overwrite"],
                       capsys)
    one_line_error(code, err, "not a numpygpt checkpoint", "--out")
    assert snapshot(folder) == before


def test_out_that_is_a_file_is_refused(tmp_path, fresh, capsys):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    code, _, err = run(["train", *FAST, "--data", fresh[1], "--out", target], capsys)
    one_line_error(code, err, "is a file, not a folder")
    assert target.read_text() == "precious"


def test_resume_and_overwrite_together_are_refused(fresh, capsys):
    folder, _ = fresh
    before = snapshot(folder)
    code, _, err = run(["train", "--resume", "--overwrite", "--out", folder], capsys)
    one_line_error(code, err, "--overwrite", "--resume")
    assert snapshot(folder) == before


def test_stale_temporary_files_are_removed_by_the_next_save(fresh, capsys):
    """A kill during a save leaves `.ckpt.npz.XXXXXXXX.tmp`; the next save removes it, and only
    files of exactly that pattern."""
    folder, _ = fresh
    stale = [folder / ".ckpt.npz.abcd1234.tmp", folder / ".metrics.json.x_9y8z7w.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    keep = [folder / ".ckpt.npz.notes", folder / "ckpt.npz.tmp", folder / "mine.tmp"]
    for p in keep:
        p.write_text("the user's")
    code, _, err = run(["train", "--resume", "--out", folder, "--max-iters", "5",
                        "--no-progress", "--sample-tokens", "0"], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "the user's" for p in keep)


def test_a_folder_holding_only_stale_temporary_files_counts_as_empty(tmp_path, fresh, capsys):
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / ".ckpt.npz.k1ll3d00.tmp").write_bytes(b"half a checkpoint")
    code, _, err = run(["train", *FAST, "--data", fresh[1], "--out", folder, "--max-iters", "1"],
                       capsys)
    assert code == 0, err
    assert sorted(os.listdir(folder)) == ["ckpt.npz", "config.json", "log.jsonl",
                                          "metrics.json", "tokenizer.json"]


# --- 3. a resumed checkpoint's state is checked before it is used ------------------------------


def _state(ckpt, **changes):
    state = dict(ckpt.train_state)
    for key, value in changes.items():
        if value is KeyError:
            state.pop(key)
        else:
            state[key] = value
    return state


BAD_STATES = {
    # name: (train_state changes, words in the message)
    "negative step": ({"step": -100}, ["step", "-100"]),
    "step 1e30": ({"step": 1e30}, ["step", "1e+30"]),
    "step 5.5": ({"step": 5.5}, ["step", "5.5"]),
    "step inf": ({"step": float("inf")}, ["checkpoint"]),  # JSON's Infinity
    "step true": ({"step": True}, ["step", "True"]),
    "step a string": ({"step": "4"}, ["step", "'4'"]),
    "step beyond the run": ({"step": 10**30}, ["step", str(10**30), "max_iters=4"]),
    "no step": ({"step": KeyError}, ["step", "cannot be resumed"]),
    "no data_rng": ({"data_rng": KeyError}, ["data_rng", "cannot be resumed"]),
    "data_rng of another generator": ({"data_rng": {"bit_generator": "MT19937", "state": {}}},
                                      ["data_rng", "PCG64"]),
    "negative rng state": ({"model_rng": {"bit_generator": "PCG64",
                                          "state": {"state": -1, "inc": 1},
                                          "has_uint32": 0, "uinteger": 0}},
                           ["model_rng", "PCG64"]),
    "rng state a list": ({"data_rng": [1, 2, 3]}, ["data_rng"]),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_resume_refuses_a_bad_training_state(case, fresh, capsys):
    folder, _ = fresh
    changes, needles = BAD_STATES[case]
    before = resave(folder, train_state=_state(load_checkpoint(folder), **changes))
    code, out, err = run(["train", "--resume", "--out", folder, "--no-progress",
                          "--sample-tokens", "0"], capsys)
    one_line_error(code, err, *needles)
    assert "finished" not in out and "interrupted" not in out  # refused before training
    assert snapshot(folder) == before


@pytest.mark.parametrize("missing", ["model", "train"])
def test_resume_refuses_a_checkpoint_without_its_config(missing, fresh, capsys):
    folder, _ = fresh
    config = dict(load_checkpoint(folder).config)
    del config[missing]
    before = resave(folder, config=config)
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress"], capsys)
    one_line_error(code, err)
    assert "KeyError" not in err
    assert snapshot(folder) == before


def test_resume_refuses_a_checkpoint_without_an_optimizer(fresh, capsys):
    folder, _ = fresh
    before = resave(folder, optimizer=None)
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress"], capsys)
    one_line_error(code, err, "no optimizer state")
    assert snapshot(folder) == before


@pytest.mark.parametrize("flags, needles", [
    (["--tokenizer", "bpe"], ["'char' tokenizer", "--tokenizer bpe refused"]),
    (["--vocab-size", "300"], ["--vocab-size 300 refused"]),
    (["--max-iters", "2"], ["step 4", "--max-iters 4"]),
    (["--n-layer", "3"], ["different model"]),
    (["--dropout", "0.1x"], ["--dropout", "0.1x"]),
    (["--seed", "-1"], ["seed", "-1"]),
    (["--n-layer", "100000"], ["would need about", "GB of RAM"]),
], ids=["tokenizer", "vocab-size", "max-iters-below-step", "other-model", "bad-float",
        "negative-seed", "huge-n-layer"])
def test_resume_refuses_flags_that_contradict_the_run(flags, needles, fresh, capsys):
    folder, _ = fresh
    before = snapshot(folder)
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress", *flags], capsys)
    one_line_error(code, err, *needles)
    assert snapshot(folder) == before


def test_resume_refuses_a_huge_saved_model_before_building_it(fresh, capsys):
    """config.model and config.train claim 10^6 layers: refused in well under a second,
    without allocating one layer (by the memory estimate, or by the checkpoint's reader,
    which sees that the file holds 2 layers)."""
    folder, _ = fresh
    config = json.loads(json.dumps(load_checkpoint(folder).config))
    config["model"]["n_layer"] = config["train"]["n_layer"] = 10**6
    before = resave(folder, config=config)
    t0 = time.perf_counter()
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress"], capsys)
    assert time.perf_counter() - t0 < 1.0
    line = one_line_error(code, err)
    assert "GB of RAM" in line or "n_layer=1,000,000" in line
    assert snapshot(folder) == before


def test_resume_refuses_saved_settings_of_the_wrong_type(fresh, capsys):
    folder, _ = fresh
    config = json.loads(json.dumps(load_checkpoint(folder).config))
    config["train"]["dropout"] = "0.1"
    config["train"]["my_setting"] = 1
    before = resave(folder, config=config)
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress"], capsys)
    one_line_error(code, err, "settings that are not valid", "my_setting")
    assert snapshot(folder) == before


def test_resume_refuses_a_damaged_log(fresh, capsys):
    folder, _ = fresh
    with open(folder / "log.jsonl", "a") as f:
        f.write('{"step": 2, "loss": 3.1\n')  # cut short
    before = snapshot(folder)
    code, _, err = run(["train", "--resume", "--out", folder, "--no-progress",
                        "--max-iters", "6"], capsys)
    one_line_error(code, err, "log.jsonl", "line")
    assert snapshot(folder) == before


# --- 4. resource limits before allocation ------------------------------------------------------


@pytest.mark.parametrize("flags", [
    ["--n-embd", "1000000"],
    ["--batch-size", "100000000"],
    ["--n-layer", "100000"],
    ["--block-size", "1000000"],
    ["--tokenizer", "bpe", "--vocab-size", "100000000000"],
], ids=["n-embd", "batch-size", "n-layer", "block-size", "vocab-size"])
def test_sizes_that_cannot_fit_are_refused_at_once(flags, tmp_path, fresh, capsys):
    t0 = time.perf_counter()
    code, _, err = run(["train", *FAST, "--data", fresh[1], "--out", tmp_path / "o", *flags],
                       capsys)
    assert time.perf_counter() - t0 < 1.0
    line = one_line_error(code, err, "would need about", "GB", "this machine has")
    assert "RAM" in line
    assert not (tmp_path / "o").exists()


def _data_error(data, capsys, tmp_path):
    code, _, err = run(["train", *FAST, "--data", data, "--out", tmp_path / "o"], capsys)
    assert not (tmp_path / "o").exists()
    return one_line_error(code, err, "data file")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_data_from_a_device_is_refused(device, tmp_path, capsys):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    t0 = time.perf_counter()
    assert "device" in _data_error(device, capsys, tmp_path)
    assert time.perf_counter() - t0 < 1.0


def test_data_from_a_folder_is_refused(tmp_path, capsys):
    assert "folder" in _data_error(tmp_path, capsys, tmp_path)


def test_data_from_a_fifo_is_refused_without_blocking(tmp_path):
    """In a child process with a timeout: if the FIFO were opened, nothing would ever write."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "numpygpt", "train", *FAST, "--data", fifo,
                           "--out", tmp_path / "o"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    one_line_error(proc.returncode, proc.stderr, "FIFO")


def test_data_beyond_the_size_limit_is_refused_before_reading(tmp_path, capsys):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: 3 GiB on paper, nothing on disk
    t0 = time.perf_counter()
    line = _data_error(big, capsys, tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert "GB" in line and "more than" in line


# --- 6. exits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, needles", [
    (["--threads", "0"], ["--threads", "0"]),
    (["--threads", "-2"], ["--threads", "-2"]),
    (["--rounds", "0"], ["--rounds"]),
    (["--steps", "0"], ["--steps"]),
    (["--json", "/nonexistent-folder/bench.json"], ["--json", "does not exist"]),
    (["--json", "."], ["--json", "is a folder"]),
], ids=["threads-0", "threads-negative", "rounds-0", "steps-0", "json-no-folder",
        "json-folder"])
def test_bench_flags_are_refused_before_the_benchmark(flags, needles, monkeypatch, capsys):
    import numpygpt.bench as bench

    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran before the flags were checked")

    for name in ("matmul_peak", "bench_training", "bench_attention", "bench_kv_cache"):
        monkeypatch.setattr(bench, name, never)
    code, _, err = run(["bench", *flags], capsys)
    one_line_error(code, err, *needles)


def test_bench_json_into_a_read_only_folder_is_refused(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(["bench", "--json", folder / "b.json"], capsys)
    finally:
        folder.chmod(0o700)
    one_line_error(code, err, "not writable")


@pytest.mark.parametrize("argv, needles", [
    (["sample", "--seed", "-1"], ["--seed", "-1"]),
    (["sample", "--temperature", "nan"], ["temperature"]),
    (["sample", "--top-p", "nan"], ["top_p"]),
    (["gradcheck", "--seed", "-5"], ["--seed", "-5"]),
], ids=["sample-seed", "sample-temperature-nan", "sample-top-p-nan", "gradcheck-seed"])
def test_sample_and_gradcheck_flags(argv, needles, fresh, capsys):
    extra = ["--ckpt", fresh[0]] if argv[0] == "sample" else []
    code, out, err = run([*argv, *extra], capsys)
    one_line_error(code, err, *needles)
    assert out == ""


def _sigint_as_in_a_terminal():
    """A Ctrl-C test's child starts with SIGINT's default action, as under a terminal: a test
    run started in the background by a shell (`pytest &`, nohup) has SIGINT ignored, which its
    children would inherit, and then an early Ctrl-C could never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(argv, cwd, env=None):
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=_sigint_as_in_a_terminal)


def test_ctrl_c_during_training_saves_and_exits_130(tmp_path, fresh):
    _, data = fresh
    out = tmp_path / "o"
    proc = _popen(["-m", "numpygpt", "train", *FAST, "--data", str(data), "--out", str(out),
                   "--max-iters", "100000", "--eval-interval", "100000"], tmp_path)
    deadline = time.monotonic() + 60
    while not (out / "ckpt.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the step-0 checkpoint: the loop is running
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    line = one_line_error(proc.returncode, stderr, "interrupted at step", "--resume")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert load_checkpoint(out).train_state["step"] == metrics["step"]
    assert f"step {metrics['step']};" in line
    assert "--- sample" not in stdout


def test_ctrl_c_while_numpy_is_importing_is_one_line(tmp_path):
    """Deterministic: a Ctrl-C arrives exactly when `import numpy` starts, which is well inside
    the first few hundred milliseconds of `python -m numpygpt`."""
    script = (
        "import os, signal, sys, runpy\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['numpygpt', 'train', '--preset', 'tiny']\n"
        "runpy.run_module('numpygpt', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, preexec_fn=_sigint_as_in_a_terminal)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "numpygpt: interrupted\n"


def _wait_until_numpy_loads(proc, timeout=60):
    """Block until the process has loaded NumPy's core extension: by then `python -m numpygpt`
    runs our code (and our Ctrl-C handling), whatever the load on the machine."""
    deadline = time.monotonic() + timeout
    maps = Path(f"/proc/{proc.pid}/maps")
    while time.monotonic() < deadline and proc.poll() is None:
        if "_multiarray_umath" in maps.read_text():
            return
        time.sleep(0.005)
    raise AssertionError("numpygpt never imported NumPy")


@pytest.mark.parametrize("delay", [0.02, 0.3, 0.8])
def test_ctrl_c_early_in_a_real_process(delay, tmp_path, fresh):
    """At a few moments while the command starts (NumPy importing, the data being read, the
    first steps). Python's own start-up, before any numpygpt code runs (~50 ms here), is not
    ours to handle: the moments are counted from NumPy's import (a point inside our code)."""
    proc = _popen(["-m", "numpygpt", "train", *FAST, "--data", str(fresh[1]),
                   "--out", str(tmp_path / "o"), "--max-iters", "100000"], tmp_path)
    _wait_until_numpy_loads(proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    one_line_error(proc.returncode, stderr, "interrupted")


# --- beyond the issue's list ----------------------------------------------------------------------


def test_a_moved_run_resumes_where_it_is_not_where_it_was_saved(fresh, tmp_path, capsys):
    """The checkpoint's config names the folder it was saved in; a resumed run must write
    into the folder it was loaded from, never into the old one (which may hold another run)."""
    folder, _ = fresh
    config = json.loads(json.dumps(load_checkpoint(folder).config))
    elsewhere = tmp_path / "another_run"
    elsewhere.mkdir()
    (elsewhere / "ckpt.npz").write_bytes(b"someone else's run")
    config["train"]["out"] = str(elsewhere)
    resave(folder, config=config)
    code, _, err = run(["train", "--resume", "--out", folder, "--max-iters", "5",
                        "--no-progress", "--sample-tokens", "0"], capsys)
    assert code == 0, err
    assert load_checkpoint(folder).train_state["step"] == 5
    assert os.listdir(elsewhere) == ["ckpt.npz"]
    assert (elsewhere / "ckpt.npz").read_bytes() == b"someone else's run"


def test_an_exploding_run_is_one_line_without_numpy_warnings(fresh, tmp_path, capsys):
    _, data = fresh
    out = tmp_path / "o"
    code, _, err = run(["train", *FAST, "--data", data, "--out", out, "--lr", "1e308",
                        "--grad-clip", "0", "--max-iters", "3"], capsys)
    one_line_error(code, err, "became nan", "last good checkpoint")
    assert load_checkpoint(out).train_state["step"] == 0


@pytest.mark.parametrize("name", ["log.jsonl", "ckpt.npz"])
def test_run_files_that_are_fifos_never_block(name, fresh, tmp_path):
    """A FIFO where the run's log (resume) or checkpoint (--overwrite) should be."""
    folder, _ = fresh
    (folder / name).unlink()
    os.mkfifo(folder / name)
    flags = ["--resume"] if name == "log.jsonl" else ["--overwrite", *FAST, "--data",
                                                       str(fresh[1])]
    proc = subprocess.run([sys.executable, "-m", "numpygpt", "train", "--out", str(folder),
                           "--no-progress", *flags], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    one_line_error(proc.returncode, proc.stderr, name)
