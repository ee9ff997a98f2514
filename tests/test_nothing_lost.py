"""Nothing the user saved is lost, and nothing the user gave crashes: the families of a hostile
battery, each with real processes, real signals and real memory limits where that is the
question.

1. Two processes on one run folder: the second refuses in one line naming the first; a lock
   left by a killed process is taken over; sampling from a run being trained works.
2. SIGTERM and SIGHUP stop train and finetune as Ctrl-C does: a checkpoint of the step,
   "interrupted" in metrics.json, exit 128 + the signal.
3. --overwrite keeps the old run's record until the new run's first checkpoint is written.
4. Sizes a file or a flag declares are checked before they are allocated: a 100 MB corpus
   trains within 1.5 GB of address space, a safetensors file declaring 51 GB is refused, a
   Llama with a billion positions loads, thousands of labels make no K x K matrix, and the
   flags that would run on without an answer have a ceiling.
5. MPI ranks started with different settings stop together, in one line, without a hang.
6. What used to be a traceback, or silently accepted, is now one clear line (or a warning).
(The course build's own cases are in tests/test_course_site.py.)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numpygpt import GPT, GPTConfig, Llama, LlamaConfig, TrainConfig
from numpygpt.cli import main
from numpygpt.finetune.run import MAX_CONFUSION_CLASSES, confusion_summary
from numpygpt.io.checkpoint import load_checkpoint
from numpygpt.io.lock import LOCK_NAME, RunLock
from numpygpt.models.sampling import sample_next
from numpygpt.training import run as run_mod
from numpygpt.training.train import TrainingError, train

PY = sys.executable
TINY = ["--preset", "tiny", "--no-progress", "--sample-tokens", "0"]
GiB = 1 << 30


def numpygpt(*args, cwd, env=None, **kwargs):
    """Start `python -m numpygpt args...` as a real process."""
    return subprocess.Popen([PY, "-m", "numpygpt", *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, **kwargs)


def wait_for(predicate, seconds=60, what="it"):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s for {what}")


def long_run(folder, *extra):
    """A tiny run that trains until stopped, its first checkpoint written."""
    p = numpygpt("train", *TINY, "--out", folder / "run", "--max-iters", 10**6,
                 "--eval-interval", 100, *extra, cwd=folder)
    wait_for(lambda: (folder / "run" / "ckpt.npz").exists() or p.poll() is not None,
             what="the first checkpoint")
    assert p.poll() is None, p.communicate()
    return p


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err


def run(argv, capsys=None):
    """main(argv) in this process: its exit code and what it printed (capfd: the fd level,
    so that it works from a module-scoped fixture too)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


def one_line(stderr):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def run_limited(code, cwd, timeout=120, limit=1.5 * GiB):
    """Run Python code in a process under an address-space limit (the hostile battery's)."""
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({int(limit)}, {int(limit)}))\n" + code)
    return subprocess.run([PY, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# --- 1. one process at a time in a run folder -------------------------------------------------


def test_a_second_process_on_a_run_folder_refuses_and_names_the_first(tmp_path):
    first = long_run(tmp_path)
    try:
        lock = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert lock["pid"] == first.pid and lock["command"] == "numpygpt train"
        for args in (["train", *TINY, "--out", "run", "--overwrite"],
                     ["train", "--no-progress", "--out", "run", "--resume"],
                     ["finetune", "--ckpt", "run", "--out", "run", "--overwrite",
                      "--no-progress"]):
            second = subprocess.run([PY, "-m", "numpygpt", *args], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, (args, second.stderr)
            line = one_line(second.stderr)
            assert f"in use by numpygpt train (pid {first.pid}" in line, line
        sample = subprocess.run([PY, "-m", "numpygpt", "sample", "--ckpt", "run", "--tokens",
                                 "20"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert sample.returncode == 0 and sample.stdout.strip()  # reading needs no lock
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released at the end


def test_the_lock_of_a_killed_run_is_taken_over_with_a_message(tmp_path):
    first = long_run(tmp_path)
    first.kill()  # SIGKILL: no handler runs, the lock file stays
    first.communicate(timeout=60)
    assert (tmp_path / "run" / LOCK_NAME).exists()
    again = subprocess.run([PY, "-m", "numpygpt", "train", "--no-progress", "--out", "run",
                            "--resume", "--max-iters", "1", "--sample-tokens", "0"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    # a resumed run beyond max-iters is refused, but only after the lock was taken over
    assert "took over 'run'" in again.stderr and f"(pid {first.pid})" in again.stderr
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_two_runs_starting_together_in_a_new_folder_one_refused(tmp_path):
    procs = [numpygpt("train", *TINY, "--out", "run", "--max-iters", 200,
                      "--eval-interval", 100, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    err = next(e for (_, e), p in zip(outs, procs, strict=True) if p.returncode == 1)
    assert "in use by numpygpt train" in err or "already holds a run" in err, err


def test_a_lock_in_python_is_one_process_at_a_time(tmp_path):
    with RunLock(tmp_path / "r", "first"):
        with pytest.raises(Exception, match="in use by first"):
            # the same process taking it twice: flock locks are per open file
            RunLock(tmp_path / "r", "second").acquire()
    assert not (tmp_path / "r").exists()  # made for the lock alone, removed with it


# --- 2. SIGTERM and SIGHUP, like Ctrl-C ---------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                       (signal.SIGINT, 130)])
def test_a_signal_saves_the_step_and_exits_with_its_code(tmp_path, sig, code):
    # A stop that lands on a periodic checkpoint's step (a multiple of 100) cannot tell the
    # step it stopped at from the last periodic save: that run proves nothing, so it runs
    # again (at most three times; a run that saved only periodically fails `saved == step`).
    for attempt in range(3):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        p = long_run(folder)
        time.sleep(1.0)  # some steps past the first checkpoint
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        assert p.returncode == code, err
        name = signal.Signals(sig).name
        metrics = json.loads((folder / "run" / "metrics.json").read_text())
        assert metrics["interrupted"] is True and metrics["signal"] == name
        saved = load_checkpoint(folder / "run").train_state["step"]
        assert saved == metrics["step"]
        assert "interrupted" in err and "Traceback" not in err
        assert not (folder / "run" / LOCK_NAME).exists()
        if saved % 100 != 0:
            break
    assert saved % 100 != 0  # the step it stopped at, not a periodic checkpoint's


def test_finetune_saves_on_sigterm(tmp_path):
    assert run(["train", *TINY, "--out", str(tmp_path / "base"), "--max-iters", "5"]).code == 0
    p = numpygpt("finetune", "--ckpt", "base", "--out", "ft", "--max-iters", 10**6,
                 "--eval-interval", 50, "--no-progress", cwd=tmp_path)
    wait_for(lambda: (tmp_path / "ft" / "ckpt.npz").exists() or p.poll() is not None,
             what="finetune's first checkpoint")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["signal"] == "SIGTERM"


def test_a_signal_during_a_long_evaluation_stops_it_and_saves(tmp_path):
    p = numpygpt("train", *TINY, "--out", "run", "--eval-iters", 10**9, "--eval-interval", 1,
                 cwd=tmp_path)
    wait_for(lambda: (tmp_path / "run" / LOCK_NAME).exists(), what="the run to start")
    time.sleep(1.5)  # inside the evaluation of step 0, which would take days
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "stopped before its first evaluation finished" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["val_loss"] is None
    assert metrics["last_batch_loss"] is None  # JSON null, not NaN
    assert load_checkpoint(tmp_path / "run").train_state["step"] == 0


def test_sigterm_during_a_command_without_a_checkpoint_is_one_line(tmp_path):
    p = numpygpt("gradcheck", cwd=tmp_path)
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and one_line(err).endswith("interrupted (SIGTERM)")


# --- 3. --overwrite keeps the old record until the new run's first checkpoint ----------------


def test_overwrite_keeps_the_old_record_when_the_new_run_fails_before_saving(tmp_path,
                                                                            monkeypatch):
    cfg = TrainConfig.preset_config("tiny", out=str(tmp_path / "run"), max_iters=4,
                                    eval_interval=2, eval_iters=1)
    train(cfg, progress=False)
    before = {n: (tmp_path / "run" / n).read_bytes() for n in ("log.jsonl", "metrics.json",
                                                               "ckpt.npz")}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_mod, "save_checkpoint", disk_full)
    cfg.max_iters, cfg.seed = 6, 7
    with pytest.raises(TrainingError, match="No space left"):
        train(cfg, progress=False, overwrite=True)
    after = {n: (tmp_path / "run" / n).read_bytes() for n in before}
    assert after == before  # the old run's checkpoint, log and metrics, untouched
    monkeypatch.undo()
    again = train(cfg, progress=False, overwrite=True)  # and once it saves, the new record
    assert again.metrics["step"] == 6
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 6


# --- 4. sizes are checked before they are allocated -----------------------------------------


def test_a_100_mb_corpus_trains_within_1_5_gb(tmp_path):
    line = "the quick brown fox jumps over the lazy dog, np.array(x) -> y; é λ\n"
    with open(tmp_path / "big.txt", "w", encoding="utf-8") as f:
        f.write(line * (100_000_000 // len(line.encode())))
    p = run_limited("from numpygpt.cli import main\n"
                    "sys.exit(main(['train', '--preset', 'tiny', '--data', 'big.txt', '--out', "
                    "'run', '--max-iters', '10', '--eval-iters', '2', '--no-progress', "
                    "'--sample-tokens', '20']))", tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "finished step 10" in p.stdout


def test_a_safetensors_file_declaring_51_gb_is_refused_before_it_is_read(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    cfg = GPTConfig(vocab_size=200_000, block_size=64, n_layer=1, n_head=2, n_embd=64_000)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": 64, "n_embd": 64_000,
         "n_layer": 1, "n_head": 2}))
    from numpygpt.models.gpt import param_shapes

    header, offset = {}, 0
    for name, shape in param_shapes(cfg).items():
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(folder / "model.safetensors", "wb") as f:  # a sparse file: 51+ GB, no blocks
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    assert offset > 50e9
    p = run_limited("from numpygpt import GPT\nfrom numpygpt.io.checkpoint import "
                    "CheckpointError\ntry:\n    GPT.from_pretrained('m')\nexcept CheckpointError "
                    "as e:\n    print(e)\n", tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "GB" in p.stdout and "RAM" in p.stdout, p.stdout


def test_a_llama_with_a_billion_positions_loads_and_generates_within_1_5_gb(tmp_path):
    model = Llama(LlamaConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_kv_head=1,
                              n_embd=8, intermediate_size=8))
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["max_position_embeddings"] = 10**9
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    p = run_limited("import numpy as np\nfrom numpygpt import Llama\n"
                    "m = Llama.from_pretrained('m')\n"
                    "print(m.config.block_size, m.generate(np.array([[1, 2]]), 5).shape)\n",
                    tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["1000000000", "(1,", "7)"]


def test_thousands_of_labels_make_no_k_by_k_matrix():
    K = 12_000
    labels = [f"label {i}" for i in range(K)]
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 5000)
    pred = np.where(rng.random(5000) < 0.5, y, (y + 1) % K)
    summary = confusion_summary(y, pred, labels)
    assert summary["confusion"] is None and len(summary["top_confusions"]) == 20
    true, predicted, count = summary["top_confusions"][0]
    assert labels.index(predicted) == (labels.index(true) + 1) % K and count >= 1
    small = confusion_summary(np.array([0, 1, 1]), np.array([0, 0, 1]), ["a", "b"])
    assert small == {"confusion": [[1, 0], [1, 1]]}
    assert MAX_CONFUSION_CLASSES < K


@pytest.mark.parametrize("args, needle", [
    (["sample", "--ckpt", "run", "--tokens", str(10**9)], "--tokens must be between 0 and"),
    (["train", *TINY, "--out", "new", "--sample-tokens", str(10**9)],
     "--sample-tokens must be between 0 and"),
    (["bench", "--threads", "100000"], "--threads must be at most"),
    (["bench", "--rounds", str(10**9)], "--rounds must be at most"),
])
def test_flags_without_an_end_have_a_ceiling(tmp_path, args, needle):
    p = subprocess.run([PY, "-m", "numpygpt", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode in (1, 2) and needle in one_line(p.stderr)
    assert not (tmp_path / "new").exists()


def test_generate_allocates_its_tokens_once_and_refuses_what_cannot_fit():
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4))
    out = model.generate(np.array([[1, 2, 3]]), 50, seed=0)
    assert out.shape == (1, 53) and out.dtype == np.int64
    with pytest.raises(Exception, match="GB of RAM"):
        model.generate(np.array([[1]]), 10**15)


# --- 5. MPI ranks that disagree -------------------------------------------------------------


def _mpiexec():
    path = Path(sys.executable).parent / "mpiexec"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return path if path.exists() else None


@pytest.mark.skipif(_mpiexec() is None, reason="no mpi4py / mpiexec (pip install -r "
                    "requirements-mpi.txt)")
@pytest.mark.parametrize("flag, a, b", [("--max-iters", "10", "20"), ("--lr", "1e-3", "2e-3"),
                                        ("--seed", "1", "2"), ("--eval-interval", "5", "7")])
def test_ranks_with_different_settings_stop_together_in_one_line(tmp_path, flag, a, b):
    common = ["-m", "numpygpt", "train", *TINY, "--out", "run"]
    p = subprocess.run([str(_mpiexec()), "-n", "1", PY, *common, flag, a, ":", "-n", "1", PY,
                        *common, flag, b], cwd=tmp_path, capture_output=True, text=True,
                       timeout=180)
    assert p.returncode != 0
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and flag in errors[0] and "rank 0" in errors[0], p.stderr
    assert "Traceback" not in p.stderr and "truncated" not in p.stderr
    assert not (tmp_path / "run").exists()


# --- 6. one clear line instead of a traceback or a silent acceptance ------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny trained run to fine-tune from."""
    folder = tmp_path_factory.mktemp("base") / "base"
    assert run(["train", *TINY, "--out", str(folder), "--max-iters", "4"]).code == 0
    return folder


@pytest.mark.parametrize("content, needle", [
    ("text,label\nhello world,a\nbye world,b\n", "too few examples to hold any out for validation"),
    ("text,label,text\nx,a,y\n", "names the column 'text' twice"),
    ("text,label\n" + "".join(f"line {i},{'ab'[i % 2]}\n" for i in range(5))
     + "bad \u2603 char,a\n", "line 7"),
])
def test_classification_files_are_one_line(tmp_path, base, content, needle):
    (tmp_path / "d.csv").write_text(content, encoding="utf-8")
    r = run(["finetune", "--ckpt", str(base), "--data", str(tmp_path / "d.csv"), "--out",
             str(tmp_path / "ft"), "--max-iters", "1", "--no-progress"])
    assert r.code == 1 and needle in one_line(r.err), r.err


def test_an_instruction_file_of_one_example_says_so(tmp_path, base):
    (tmp_path / "qa.jsonl").write_text('{"instruction": "say hi", "output": "hi"}\n')
    r = run(["finetune", "--task", "instruct", "--ckpt", str(base), "--data",
             str(tmp_path / "qa.jsonl"), "--out", str(tmp_path / "ft"), "--no-progress"])
    assert r.code == 1 and "too few examples to hold any out for validation" in one_line(r.err)


@pytest.mark.parametrize("freeze", ["\u00b2", "\u2460", "1\u00b2"])
def test_unicode_digits_are_not_a_number_of_blocks(tmp_path, freeze):
    r = run(["finetune", "--ckpt", "x", "--freeze", freeze, "--out", str(tmp_path / "ft")])
    assert r.code == 1 and "--freeze must be none" in one_line(r.err)


def test_a_path_that_is_not_utf8_is_one_line(tmp_path):
    bad = os.fsdecode(b"run-\xff")  # a name a latin-1 system could make
    r = run(["train", *TINY, "--out", str(tmp_path / bad), "--max-iters", "1"])
    assert r.code == 1 and "is not valid UTF-8" in one_line(r.err)


def test_resuming_after_the_data_file_changed_is_refused(tmp_path, base):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    out = str(tmp_path / "ft")
    assert run(["finetune", "--ckpt", str(base), "--data", str(data), "--out", out,
                "--no-progress", "--max-iters", "2"]).code == 0
    data.write_text(data.read_text() + "text 99,a\n")
    r = run(["finetune", "--out", out, "--resume", "--max-iters", "3", "--no-progress"])
    assert r.code == 1 and "has changed since the run" in one_line(r.err)


def test_min_lr_above_lr_is_refused():
    with pytest.raises(Exception, match="min-lr 0.001 is above lr 0.0001"):
        TrainConfig.preset_config("tiny", lr=1e-4, min_lr=1e-3)
    with pytest.raises(Exception, match="below the baby preset's min-lr"):
        TrainConfig.preset_config("baby", lr=5e-5)


def test_a_tiny_temperature_is_greedy_not_nan():
    logits = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warning on the way
        for t in (1e-310, 1e-300, 1e-12):
            np.testing.assert_array_equal(sample_next(logits, t, rng=np.random.default_rng(0)),
                                          [1, 2])


def test_a_bpe_tokenizer_smaller_than_asked_is_a_warning(tmp_path, capsys):
    (tmp_path / "small.txt").write_text("hello world, hello numpy. " * 200)
    code = main(["train", "--preset", "tiny", "--tokenizer", "bpe", "--vocab-size", "100000",
                 "--data", str(tmp_path / "small.txt"), "--out", str(tmp_path / "run"),
                 "--max-iters", "1", "--no-progress", "--sample-tokens", "0"])
    err = capsys.readouterr().err
    assert code == 0
    assert "numpygpt train: warning: the BPE tokenizer learned" in err and "100,000" in err


def test_save_a_llama_in_gpt2_format_is_a_clear_error():
    from numpygpt.io import hf_gpt2

    with pytest.raises(ValueError, match="a Llama saves itself with Llama.save_pretrained"):
        hf_gpt2.hf_config(LlamaConfig())

