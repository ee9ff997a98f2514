"""The command line: success paths of train, sample and gradcheck, and for every user error one
line on stderr naming the problem, a non-zero exit code and no traceback."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
from clirun import run

from numpygpt.cli import main
from numpygpt.io.checkpoint import load_checkpoint

TEXT = ("the quick brown fox jumps over the lazy dog.\n"
        "pack my box with five dozen liquor jugs.\n"
        "sphinx of black quartz, judge my vow!\n") * 40  # lower case only: no 'Z'

FAST = ["--eval-iters", "2", "--no-progress"]


def assert_one_line_error(code, err, *needles):
    assert code not in (0, None)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-step run through the CLI: (folder, data path, stdout). Tests must not change it."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "pangrams.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = root / "run"
    buf = StringIO()
    with redirect_stdout(buf):
        code = main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out),
                     "--max-iters", "10", "--eval-interval", "5", *FAST,
                     "--sample-tokens", "20"])
    assert code == 0
    return out, data, buf.getvalue()


def copy_run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained[0], dst)
    return dst


# --- success paths ---------------------------------------------------------------------------


def test_train_prints_where_it_saved_and_a_sample(trained):
    out, data, stdout = trained
    assert f"saved checkpoint, log.jsonl and metrics.json in '{out}'" in stdout
    assert "finished step 10" in stdout
    sample = stdout.split("--- sample ", 1)[1].split("\n", 1)[1].rsplit("\n" + "-" * 71, 1)[0]
    assert len(sample) == 1 + 20  # the newline it starts from, then 20 characters
    assert set(sample) <= set(TEXT)
    assert json.loads((out / "metrics.json").read_text())["step"] == 10
    assert load_checkpoint(out).train_state["step"] == 10


def test_sample_starts_with_prompt_and_is_deterministic(trained, capsys):
    argv = ["sample", "--ckpt", trained[0], "--prompt", "th", "--tokens", "20"]
    code, out, err = run(argv + ["--seed", "1"], capsys)
    assert code == 0 and err == ""
    text = out.removesuffix("\n")  # print's newline; the sample itself may contain others
    assert text.startswith("th") and len(text) == 2 + 20
    assert run(argv + ["--seed", "1"], capsys)[1] == out
    assert run(argv + ["--seed", "2"], capsys)[1] != out


def test_train_resume_continues(trained, tmp_path, capsys):
    out = copy_run(trained, tmp_path)
    before = (out / "log.jsonl").read_text().splitlines()
    code, stdout, err = run(["train", "--resume", "--out", out, "--max-iters", "15",
                             "--no-progress", "--sample-tokens", "0"], capsys)
    assert code == 0, err
    assert "finished step 15" in stdout and "--- sample" not in stdout
    assert json.loads((out / "metrics.json").read_text())["step"] == 15
    ckpt = load_checkpoint(out)
    assert ckpt.train_state["step"] == 15 and ckpt.optimizer["hyper"]["t"] == 15
    assert ckpt.config["train"]["max_iters"] == 15
    assert ckpt.config["train"]["eval_interval"] == 5  # the saved settings, not the preset's
    assert ckpt.config["train"]["lr_decay_iters"] == 10  # the first run's schedule, kept
    after = (out / "log.jsonl").read_text().splitlines()
    # A resume keeps the first 10 steps' rows as they were (a fresh start would rewrite them
    # with the 15-step schedule's learning rates) and adds steps 11 to 15.
    assert after[:len(before)] == before
    assert [json.loads(r)["step"] for r in after[len(before):]] == [15, 15]  # log row, eval


def test_gradcheck_layers_only(capsys):
    code, out, err = run(["gradcheck", "--layers-only"], capsys)
    assert code == 0 and err == ""
    assert "attention" in out and "layernorm" in out
    assert "all within their thresholds" in out and "FAIL" not in out
    assert "GPT" not in out  # no whole-model rows


def test_flags_override_the_preset(tmp_path, capsys):
    data = tmp_path / "pangrams.txt"
    data.write_text(TEXT, encoding="utf-8")
    code, out, err = run(["train", "--preset", "tiny", "--n-layer", "1", "--data", data,
                          "--out", tmp_path / "out", "--max-iters", "0", *FAST,
                          "--sample-tokens", "0"], capsys)
    assert code == 0, err
    assert "n_layer=1" in out
    ckpt = load_checkpoint(tmp_path / "out")
    assert ckpt.config["model"]["n_layer"] == 1 and ckpt.config["train"]["n_layer"] == 1
    assert ckpt.config["model"]["n_embd"] == 32  # the rest is still the tiny preset
    assert ckpt.config["train"]["preset"] == "tiny"
    assert not any(k.startswith("h.1.") for k in ckpt.params)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model"]["n_layer"] == 1


def test_train_samples_from_a_corpus_without_newlines(tmp_path, capsys):
    """The end-of-training sample starts from a newline only if the vocabulary has one."""
    data = tmp_path / "one_line.txt"
    data.write_text("abcab cabca bcabc " * 20, encoding="utf-8")
    code, out, err = run(["train", "--preset", "tiny", "--data", data, "--out", tmp_path / "o",
                          "--max-iters", "0", *FAST, "--sample-tokens", "5"], capsys)
    assert code == 0, err
    assert "--- sample" in out


# --- user errors -----------------------------------------------------------------------------


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


TRAIN_ERRORS = {
    # name: (data file content or None for a missing file, extra flags, words in the message)
    "missing data file": (None, [], ["data.txt", "does not exist"]),
    "empty data file": ("", [], ["data.txt", "empty"]),
    "data shorter than block_size": ("the quick brown fox\n", [], ["too short", "block_size"]),
    "non-UTF-8 data file": ("caf\u00e9 ".encode("latin-1") * 100, [], ["data.txt", "UTF-8"]),
    "unknown preset": (TEXT, ["--preset", "huge"], ["--preset", "huge"]),
    "negative --max-iters": (TEXT, ["--max-iters", "-5"], ["max-iters", "-5"]),
    "non-integer --max-iters": (TEXT, ["--max-iters", "ten"], ["--max-iters", "ten"]),
    "n_embd not divisible by n_head": (TEXT, ["--n-head", "3"], ["n_head=3"]),
    "negative --sample-tokens": (TEXT, ["--sample-tokens", "-1"], ["sample-tokens"]),
    "unknown flag": (TEXT, ["--bogus", "1"], ["unrecognized", "--bogus"]),
    "nan --grad-clip": (TEXT, ["--grad-clip", "nan"], ["grad-clip", "finite"]),
    "beta2 of 1": (TEXT, ["--beta2", "1.0"], ["beta2"]),
}


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
def test_train_user_errors(case, tmp_path, capsys):
    content, flags, needles = TRAIN_ERRORS[case]
    data = tmp_path / "data.txt"
    if content is not None:
        write(data, content)
    out = tmp_path / "out"
    code, _, err = run(["train", "--preset", "tiny", "--data", data, "--out", out,
                        "--max-iters", "3", *FAST, *flags], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (out / "ckpt.npz").exists()  # refused before training, nothing saved


def test_resume_refuses_a_preset(trained, tmp_path, capsys):
    folder = copy_run(trained, tmp_path)
    code, _, err = run(["train", "--resume", "--out", folder, "--preset", "small"], capsys)
    assert_one_line_error(code, err, "--preset", "--resume")


def test_resume_without_a_checkpoint(tmp_path, capsys):
    code, _, err = run(["train", "--resume", "--out", tmp_path / "nothing"], capsys)
    assert_one_line_error(code, err, "no checkpoint", "nothing")


class Mkdir:
    """Unpickling this object would create a folder: proof that pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def damaged(trained, tmp_path):
    """A copy of the trained run whose ckpt.npz lost its second half."""
    folder = copy_run(trained, tmp_path)
    ckpt = folder / "ckpt.npz"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return folder


def pickled(trained, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    arrays = dict(np.load(trained[0] / "ckpt.npz", allow_pickle=False))
    arrays["param/wte.weight"] = np.array([Mkdir(tmp_path / "pwned")], dtype=object)
    with open(folder / "ckpt.npz", "wb") as f:
        np.savez(f, allow_pickle=True, **arrays)
    return folder


SAMPLE_ERRORS = {
    # name: (folder maker, extra flags, words in the message)
    "missing folder": (lambda trained, tmp: tmp / "nowhere", [], ["no checkpoint", "nowhere"]),
    "truncated ckpt.npz": (damaged, [], ["ckpt.npz", "damaged or truncated"]),
    "ckpt.npz with a pickle": (pickled, [], ["ckpt.npz", "pickle"]),
    "prompt outside the vocabulary": (None, ["--prompt", "thZ"], ["'Z'", "vocabulary"]),
    "negative --tokens": (None, ["--tokens", "-3"], ["--tokens", "-3"]),
    "top-p above 1": (None, ["--top-p", "1.5"], ["top_p", "1.5"]),
    "top-k of 0": (None, ["--top-k", "0"], ["top_k", "0"]),
    "negative temperature": (None, ["--temperature", "-1"], ["temperature"]),
    "unknown flag": (None, ["--bogus"], ["unrecognized", "--bogus"]),
}


@pytest.mark.parametrize("case", list(SAMPLE_ERRORS))
def test_sample_user_errors(case, trained, tmp_path, capsys):
    make, flags, needles = SAMPLE_ERRORS[case]
    folder = trained[0] if make is None else make(trained, tmp_path)
    code, out, err = run(["sample", "--ckpt", folder, "--tokens", "5", *flags], capsys)
    assert_one_line_error(code, err, *needles)
    assert out == ""
    assert not (tmp_path / "pwned").exists()  # the pickle was never loaded


@pytest.mark.parametrize("argv, needles", [
    (["train", "--preset", "tiny", "--data", "missing.txt", "--no-progress"],
     ["missing.txt", "does not exist"]),
    (["sample", "--ckpt", "damaged"], ["ckpt.npz", "damaged or truncated"]),
    (["train", "--bogus"], ["unrecognized", "--bogus"]),
], ids=["missing-data", "damaged-ckpt", "unknown-flag"])
def test_python_m_numpygpt_errors_are_one_line(argv, needles, trained, tmp_path):
    """The real entry point, in a fresh interpreter: the exit status reaches the shell."""
    damaged(trained, tmp_path).rename(tmp_path / "damaged")
    proc = subprocess.run([sys.executable, "-m", "numpygpt", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert_one_line_error(proc.returncode, proc.stderr, *needles)
