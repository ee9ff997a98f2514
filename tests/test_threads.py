"""Threads that share a step's batch (training/threads.py): the one-thread gradients, exact
resume, and clear errors."""

import os

import numpy as np
import pytest
from clirun import run
from test_train import tiny, write_data

from numpygpt.errors import ConfigError
from numpygpt.models.gpt import GPT, GPTConfig
from numpygpt.models.llama import Llama, LlamaConfig
from numpygpt.training.threads import ThreadTeam, batch_shares, check_threads
from numpygpt.training.train import train

TWO = 2 if (os.cpu_count() or 1) >= 2 else pytest.skip("needs 2 cores", allow_module_level=True)


def _batch(B, T=8, V=13, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


@pytest.mark.parametrize("B", [2, 3, 7], ids=["even", "uneven", "odd"])
@pytest.mark.parametrize("make", [
    lambda: GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16),
                seed=1, dtype=np.float64),
    lambda: Llama(LlamaConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16),
                  seed=1, dtype=np.float64)], ids=["gpt", "llama"])
def test_a_team_gives_the_whole_batch_loss_and_gradients(make, B):
    """float64, no dropout: the rows-weighted mean of the threads' gradients is the gradient
    of the mean loss over the whole batch (shares of 1 and 2 rows when B = 3)."""
    model = make()
    x, y = _batch(B)
    _, want_loss = model.forward(x, y)
    want = model.backward()
    team = ThreadTeam(model, TWO)
    try:
        loss, grads = team.loss_and_grads(x, y)
    finally:
        team.close()
    assert loss == pytest.approx(want_loss, rel=1e-13)
    assert grads.keys() == want.keys()
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-13, err_msg=name)


def test_a_team_weighs_each_share_by_its_targets_when_some_are_ignored():
    """Fine-tuning's batches ignore some targets (-1): a share's part of the mean loss is its
    number of targets, not of rows. Here the first share (1 row) keeps 2 targets of 8, the
    second (2 rows) all 16; and a batch with no target at all."""
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16),
                seed=1, dtype=np.float64)
    x, y = _batch(3)
    y[0, 2:] = -1
    _, want_loss = model.forward(x, y)
    want = model.backward()
    team = ThreadTeam(model, TWO)
    loss, grads = team.loss_and_grads(x, y)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-13, err_msg=name)
    model.eval()
    assert team.loss(x, y) == pytest.approx(want_loss, rel=1e-13)
    y[:] = -1
    assert team.loss(x, y) == model.forward(x, y)[1] == 0.0
    team.close()


def test_a_team_with_dropout_is_reproducible_and_shares_one_set_of_weights():
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.3)
    x, y = _batch(4)
    runs = []
    for _ in range(2):
        model = GPT(cfg, seed=2)
        team = ThreadTeam(model, TWO)
        before = model.rng.bit_generator.state
        runs.append(team.loss_and_grads(x, y))
        assert model.rng.bit_generator.state != before  # the replicas' seeds came from it
        team.close()
    assert runs[0][0] == runs[1][0]
    for name, g in runs[0][1].items():
        np.testing.assert_array_equal(runs[1][1][name], g)
    replicas = ThreadTeam(model, TWO)._replicas([np.random.default_rng(0)])
    assert all(r.params is model.params for r in replicas)  # the optimizer updates them all
    assert replicas[1].rng is not model.rng and replicas[1]._cache is None


def test_a_team_evaluates_the_whole_batch_loss_without_touching_the_generator():
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.3)
    model = GPT(cfg, seed=1, dtype=np.float64)
    x, y = _batch(3)  # shares of 1 and 2 rows
    team = ThreadTeam(model, TWO)
    with pytest.raises(ValueError, match="eval"):
        team.loss(x, y)  # training mode: dropout would draw from the threads' generators
    model.eval()
    state = model.rng.bit_generator.state
    assert team.loss(x, y) == pytest.approx(model.forward(x, y)[1], rel=1e-13)
    assert model.rng.bit_generator.state == state  # an evaluation changes no training draw
    team.close()


def test_a_batch_of_one_row_or_a_team_of_one_stays_on_one_thread():
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16), seed=1)
    x, y = _batch(1)
    _, want = model.forward(x, y)
    for threads in (TWO, 1):
        team = ThreadTeam(model, threads)
        assert team.loss_and_grads(x, y)[0] == want
        team.close()


def test_training_on_threads_follows_one_thread_and_resumes_exactly(tmp_path):
    data = write_data(tmp_path)
    kw = dict(dropout=0.0, lr_decay_iters=20, eval_interval=10)
    one = train(tiny(data, tmp_path / "one", max_iters=20, **kw), progress=False)
    two = train(tiny(data, tmp_path / "two", max_iters=20, threads=TWO, **kw), progress=False)
    assert two.metrics["threads"] == TWO and one.metrics["threads"] == 1
    # the same run up to float32 rounding (the gradients' sums are added in another order)
    assert two.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], rel=1e-3)
    # with dropout: 10 steps + resume to 20 == 20 straight, to the last bit
    kw = dict(dropout=0.2, lr_decay_iters=20, eval_interval=5, threads=TWO)
    train(tiny(data, tmp_path / "a", max_iters=10, **kw), progress=False)
    resumed = train(tiny(data, tmp_path / "a", max_iters=20, **kw), resume=True, progress=False)
    straight = train(tiny(data, tmp_path / "b", max_iters=20, **kw), progress=False)
    assert resumed.metrics["last_batch_loss"] == straight.metrics["last_batch_loss"]
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], p, err_msg=name)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_check_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ConfigError, match="threads"):
        check_threads(bad)


def test_more_threads_than_cores_is_refused():
    assert check_threads(2, cores=2) == 2
    with pytest.raises(ConfigError, match="more than this machine's 2 cores"):
        check_threads(3, cores=2)


def test_cli_threads_mistakes_are_one_line(tmp_path, capsys):
    data = write_data(tmp_path)
    for value, needle in (("0", "threads must be positive"),
                          (str((os.cpu_count() or 1) + 1), "cores")):
        code, _, err = run(["train", "--preset", "tiny", "--data", data, "--out",
                            tmp_path / "o", "--max-iters", "1", "--threads", value], capsys)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and needle in lines[0], err
        assert not (tmp_path / "o" / "checkpoint").exists()  # refused before any work


def test_the_banner_says_how_the_step_uses_the_cores(tmp_path, capsys, monkeypatch):
    """One thread on a machine with more cores: the banner points at --threads (a user
    would not find it otherwise); with --threads, it says the threads share the batch; on one
    core, one thread, it says nothing."""
    from numpygpt.cli import _threads_line

    assert _threads_line(1, 12, 1) == ""
    assert "--threads N (N <= 8, the cores)" in _threads_line(1, 12, 8)
    assert _threads_line(2, 12, 8).startswith("2 threads share each batch of 12 rows")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    data = write_data(tmp_path)
    for extra, needle in (([], "--threads N (N <= 4, the cores)"),
                          (["--threads", "2"], "2 threads share each batch of 8 rows")):
        code, out, err = run(["train", "--preset", "tiny", "--data", data, "--out",
                              tmp_path / "o", "--max-iters", "1", "--overwrite",
                              "--no-progress", *extra], capsys)
        assert code == 0, err
        assert out.splitlines()[1] == _threads_line(int(extra[1]) if extra else 1, 8, 4), out
        assert needle in out


def test_threads_and_mpiexec_are_one_or_the_other(tmp_path):
    from numpygpt.training import parallel as par

    class TwoRanks(par.SingleProcess):  # what train() sees under mpiexec -n 2, for this check
        size = 2

    with pytest.raises(ConfigError, match="with mpiexec the processes share it already"):
        train(tiny(write_data(tmp_path), tmp_path / "o", threads=TWO), progress=False,
              world=TwoRanks())
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_batch_shares_are_as_even_as_they_divide_and_never_empty():
    assert batch_shares(5, 2) == [slice(0, 2), slice(2, 5)]
    assert batch_shares(16, 2) == [slice(0, 8), slice(8, 16)]
    assert batch_shares(1, 2) == [slice(0, 1)]  # fewer shares than threads
    assert batch_shares(7, 1) == [slice(0, 7)]
