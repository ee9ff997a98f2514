"""Training loop: the loss goes down, logs and metrics, exact resume, gradient accumulation,
non-finite losses, Ctrl-C and what a checkpoint holds.

Every run uses the tiny preset on a few KB of repeated pangrams, a few dozen steps at most.
"""

import importlib
import json
import os
import re
import signal
import types
from pathlib import Path

import numpy as np
import pytest

from numpygpt.data import CharTokenizer, get_batch
from numpygpt.io.checkpoint import load_checkpoint
from numpygpt.models.gpt import GPT, GPTConfig, param_shapes
from numpygpt.training.threads import ThreadTeam
from numpygpt.training.train import TrainConfig, TrainingError, train

train_mod = importlib.import_module("numpygpt.training.train")
loop_mod = importlib.import_module("numpygpt.training.loop")

TEXT = ("the quick brown fox jumps over the lazy dog.\n"
        "pack my box with five dozen liquor jugs.\n"
        "sphinx of black quartz, judge my vow!\n") * 40  # 4.9 KB, 31 distinct characters

METRIC_KEYS = {"step", "train_loss", "val_loss", "tokens_per_sec", "wall_seconds", "n_params"}


def write_data(folder):
    path = folder / "pangrams.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def tiny(data, out, **overrides):
    kw = {"max_iters": 20, "eval_interval": 10, "eval_iters": 2, **overrides}
    return TrainConfig.preset_config("tiny", data=data, out=str(out), **kw)


def read_log(out):
    """log.jsonl rows; NaN or Infinity (which json.dumps writes but JSON forbids) fail here."""
    def refuse(name):
        raise ValueError(f"log.jsonl holds {name}")

    lines = (out / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def evals(rows):
    return [r for r in rows if "val_loss" in r]


def all_finite(params):
    return all(np.isfinite(p).all() for p in params.values())


@pytest.fixture(scope="module")
def run40(tmp_path_factory):
    """One 40-iteration run shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("run40")
    cfg = tiny(write_data(folder), folder / "out", max_iters=40)
    return cfg, train(cfg, progress=False)


# --- a plain run ------------------------------------------------------------------------------


def test_loss_goes_down_on_repetitive_text(run40):
    cfg, result = run40
    rows = evals(read_log(Path(cfg.out)))
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    first, last = rows[0], rows[-1]
    # At init the loss is about ln(31) = 3.43; 40 steps on pangrams get well below 3.
    assert first["train_loss"] == pytest.approx(np.log(31), abs=0.15)
    assert last["train_loss"] < first["train_loss"] - 0.5
    assert last["val_loss"] < first["val_loss"] - 0.5
    assert result.metrics["train_loss"] == last["train_loss"]
    assert result.metrics["val_loss"] == last["val_loss"]
    # the log file and the returned history are the same rows
    assert read_log(Path(cfg.out)) == result.history


def test_log_and_metrics_files(run40):
    cfg, result = run40
    out = Path(cfg.out)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert METRIC_KEYS <= set(metrics)
    assert metrics["step"] == 40 and metrics["interrupted"] is False
    assert metrics["n_params"] == sum(int(np.prod(s)) for s in
                                      param_shapes(result.model.config).values())
    assert metrics["tokens_per_sec"] > 0 and metrics["wall_seconds"] > 0
    assert metrics == json.loads(json.dumps(result.metrics))

    rows = read_log(out)
    for r in evals(rows):
        assert set(r) == {"step", "train_loss", "val_loss"}
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40]  # log_interval 10
    for r in train_rows:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_sec"} <= set(r)
        assert np.isfinite(r["loss"]) and r["tokens_per_sec"] > 0
    assert train_rows[-1]["loss"] == result.metrics["last_batch_loss"]


def test_checkpoint_contents(run40):
    cfg, result = run40
    ckpt = load_checkpoint(cfg.out)
    mcfg = GPTConfig(vocab_size=31, block_size=32, n_layer=2, n_head=2, n_embd=32)
    assert ckpt.config["model"] == mcfg.to_dict()
    assert ckpt.config["train"]["max_iters"] == 40 and ckpt.config["train"]["preset"] == "tiny"
    assert TrainConfig(**ckpt.config["train"]) == cfg
    assert ckpt.tokenizer == CharTokenizer.from_text(TEXT).to_dict()

    # GPT-2 names and shapes, and the weights the run ended with
    assert {k: v.shape for k, v in ckpt.params.items()} == param_shapes(mcfg)
    assert "h.1.attn.c_attn.weight" in ckpt.params and "wte.weight" in ckpt.params
    for name, p in result.model.params.items():
        assert ckpt.params[name].dtype == np.float32
        np.testing.assert_array_equal(ckpt.params[name], p)

    assert ckpt.train_state["step"] == 40
    assert ckpt.optimizer["hyper"]["name"] == "AdamW"
    assert ckpt.optimizer["hyper"]["t"] == ckpt.train_state["step"]
    for slot in ("m", "v"):
        assert set(ckpt.optimizer["slots"][slot]) == set(ckpt.params)
    assert {"data_rng", "model_rng"} <= set(ckpt.train_state)


# --- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eval_interval, dropout", [(10, 0.0), (15, 0.2)],
                         ids=["eval-divides-20", "eval-15-dropout"])
def test_resume_is_exact(tmp_path, eval_interval, dropout):
    """20 steps + resume to 40 == 40 straight, to the last bit (same schedule length)."""
    data = write_data(tmp_path)
    kw = dict(eval_interval=eval_interval, dropout=dropout, lr_decay_iters=40, log_interval=5)
    first = train(tiny(data, tmp_path / "a", max_iters=20, **kw), progress=False)
    assert first.metrics["step"] == 20
    resumed = train(tiny(data, tmp_path / "a", max_iters=40, **kw), resume=True, progress=False)
    straight = train(tiny(data, tmp_path / "b", max_iters=40, **kw), progress=False)

    assert resumed.metrics["step"] == straight.metrics["step"] == 40
    assert resumed.metrics["train_loss"] == straight.metrics["train_loss"]
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]
    assert resumed.metrics["last_batch_loss"] == straight.metrics["last_batch_loss"]
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], p, err_msg=name)

    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.train_state == b.train_state  # step and both RNG states
    assert a.optimizer["hyper"] == b.optimizer["hyper"]
    for name in b.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        np.testing.assert_array_equal(a.optimizer["slots"]["m"][name],
                                      b.optimizer["slots"]["m"][name])

    # The per-step rows of both sessions match the straight run (timing aside); the resumed
    # log keeps the first session's rows.
    def steps(rows):
        return [{k: r[k] for k in ("step", "loss", "lr", "grad_norm")} for r in rows
                if "loss" in r]

    log_a = read_log(tmp_path / "a")
    assert steps(log_a) == steps(read_log(tmp_path / "b"))
    assert [r["step"] for r in steps(log_a)] == list(range(5, 41, 5))
    assert evals(log_a)[0]["step"] == 0


def test_resume_refuses_a_different_model(tmp_path):
    data = write_data(tmp_path)
    train(tiny(data, tmp_path / "a", max_iters=0), progress=False)
    with pytest.raises(ValueError, match="different model"):
        train(tiny(data, tmp_path / "a", n_layer=1), resume=True, progress=False)


# --- gradient accumulation ---------------------------------------------------------------------


def test_accumulated_grads_equal_one_big_batch():
    """grad_accum=2 x batch 4 == batch 8 when the 8 windows are the same."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, size=500)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16), seed=3)
    cfg = types.SimpleNamespace(block_size=16, batch_size=4, grad_accum=2)
    loss_acc, g_acc = train_mod._accumulated_grads(ThreadTeam(model, 1).loss_and_grads,
                                                   ids, cfg, np.random.default_rng(5))

    same = np.random.default_rng(5)  # the same draws: two batches of 4
    (x1, y1), (x2, y2) = [get_batch(ids, 16, 4, same) for _ in range(2)]
    _, loss_big = model.forward(np.concatenate([x1, x2]), np.concatenate([y1, y2]))
    g_big = model.backward()

    assert loss_acc == pytest.approx(loss_big, rel=1e-6)
    assert g_acc.keys() == g_big.keys()
    for name, g in g_big.items():
        assert g_acc[name].dtype == np.float32
        np.testing.assert_allclose(g_acc[name], g, rtol=1e-4, atol=1e-5 * np.abs(g).max(),
                                   err_msg=name)
    # the comparison has teeth: the first micro-batch alone gives a clearly different gradient
    model.forward(x1, y1)
    g_first = model.backward()["wte.weight"]
    assert np.abs(g_first - g_big["wte.weight"]).max() > 0.1 * np.abs(g_big["wte.weight"]).max()


class FixedWindows:
    """get_batch stand-in: windows from a fixed list of starts, consumed in order, so two
    batches of 4 are exactly one batch of 8. Records each call's batch size."""

    def __init__(self):
        self.starts = np.random.default_rng(7).integers(0, 4000, size=1000)
        self.pos = 0
        self.sizes = []

    def __call__(self, ids, block_size, batch_size, rng):
        starts = self.starts[self.pos:self.pos + batch_size] % (len(ids) - block_size)
        self.pos += batch_size
        self.sizes.append(batch_size)
        idx = starts[:, None] + np.arange(block_size)
        return ids[idx], ids[idx + 1]


def fake_clock():
    """A perf_counter that advances exactly 1 s per call, so every step takes 1 s."""
    ticks = iter(range(10**6))
    return types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))


def test_grad_accum_through_train(tmp_path, monkeypatch):
    """Through train(): batch 4 x accum 2 takes the same steps as batch 8 x accum 1 on the same
    windows, and counts the tokens of every micro-batch."""
    data = write_data(tmp_path)
    # Evaluation is not under test here; skipping it keeps the window stream for training.
    monkeypatch.setattr(train_mod, "estimate_loss", lambda *a: 1.0)
    clock = fake_clock()
    monkeypatch.setattr(train_mod, "time", clock)
    monkeypatch.setattr(loop_mod, "time", clock)
    results, calls = {}, {}
    for accum, batch in [(2, 4), (1, 8)]:
        windows = FixedWindows()
        monkeypatch.setattr(train_mod, "get_batch", windows)
        cfg = tiny(data, tmp_path / f"accum{accum}", max_iters=3, grad_accum=accum,
                   batch_size=batch, log_interval=1)
        results[accum] = train(cfg, progress=False)
        calls[accum] = windows.sizes

    assert calls[2] == [4] * 6 and calls[1] == [8] * 3
    tokens_per_step = 8 * 32  # batch * block_size * grad_accum, in both runs
    for res in results.values():
        rows = [r for r in res.history if "loss" in r]
        assert [r["tokens_per_sec"] for r in rows] == [tokens_per_step] * 3  # 1 s per step
        assert res.metrics["tokens_per_sec"] == tokens_per_step
    rows2 = [r for r in results[2].history if "loss" in r]
    rows1 = [r for r in results[1].history if "loss" in r]
    for r2, r1 in zip(rows2, rows1, strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)  # before clipping
    for name, p in results[1].model.params.items():
        np.testing.assert_allclose(results[2].model.params[name], p, rtol=0, atol=1e-5,
                                   err_msg=name)


# --- non-finite losses ---------------------------------------------------------------------


def poison(monkeypatch, call, what):
    """Make the `call`-th training step (1-based) return a nan loss or nan gradients."""
    real = train_mod._accumulated_grads
    count = [0]

    def grads(model, ids, cfg, rng):
        loss, g = real(model, ids, cfg, rng)
        count[0] += 1
        if count[0] == call:
            if what == "loss":
                loss = float("nan")
            else:  # a finite loss with a broken update: the params go bad silently
                g = {k: v * np.float32(np.nan) for k, v in g.items()}
        return loss, g

    monkeypatch.setattr(train_mod, "_accumulated_grads", grads)


@pytest.mark.parametrize("what, call, clip, fail_step, good_step", [
    ("loss", 8, 1.0, 7, 5),   # the loss of step 7 is nan
    # Without clipping nothing looks at the gradients: the update of step 9 makes the params
    # nan and the evaluation at step 10 finds it
    ("grads", 10, 0.0, 10, 5),
    ("grads", 20, 0.0, 20, 15),  # the very last update is bad; only the final evaluation sees it
    # With clipping the gradient norm is nan: step 9 stops before its update
    ("grads", 10, 1.0, 9, 5),
], ids=["nan-loss", "nan-update-before-eval", "nan-last-update", "nan-grad-norm"])
def test_nonfinite_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, what, call, clip,
                                                        fail_step, good_step):
    poison(monkeypatch, call, what)
    cfg = tiny(write_data(tmp_path), tmp_path / "out", max_iters=20, eval_interval=5,
               grad_clip=clip)
    with pytest.raises(TrainingError) as err:
        train(cfg, progress=False)
    message = str(err.value)
    assert "nan" in message and f"at step {fail_step};" in message
    check_last_good(tmp_path / "out", good_step)


def test_exploding_lr_stops_and_keeps_last_good_checkpoint(tmp_path):
    """A real blow-up: lr 1e9 without clipping overflows within a few steps."""
    cfg = tiny(write_data(tmp_path), tmp_path / "out", lr=1e9, grad_clip=0.0, eval_interval=1)
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as err:
        train(cfg, progress=False)
    message = str(err.value)
    assert re.search(r"\b(nan|inf)\b", message), message
    fail_step = int(re.search(r"at step (\d+)", message).group(1))
    assert fail_step >= 1
    check_last_good(tmp_path / "out", fail_step - 1)


def check_last_good(out, step):
    ckpt = load_checkpoint(out)
    assert ckpt.train_state["step"] == step
    assert ckpt.optimizer["hyper"]["t"] == step
    assert all_finite(ckpt.params) and all_finite(ckpt.optimizer["slots"]["m"])
    model = GPT(GPTConfig.from_dict(ckpt.config["model"]))
    model.load_params(ckpt.params)
    x = np.zeros((1, 4), dtype=np.int64)
    with np.errstate(over="ignore"):  # the lr=1e9 run's last good weights are huge, not broken
        assert np.isfinite(model.forward(x, x)[1])
    rows = read_log(out)  # strict JSON: no NaN row was written
    assert max(r["step"] for r in rows) <= step


# --- Ctrl-C ----------------------------------------------------------------------------------


def ctrl_c_at(step, times=1):
    def callback(row):
        if "loss" in row and row["step"] == step:  # a training row, after that step's update
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
    return callback


class Escaped(Exception):
    pass


@pytest.fixture
def sigint_guard():
    """While the test runs, a Ctrl-C that train() lets through fails the test instead of
    interrupting the whole pytest session."""
    def escaped(signum, frame):
        raise Escaped("SIGINT reached the handler outside train()")

    old = signal.signal(signal.SIGINT, escaped)
    yield escaped
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_saves_and_resume_continues(tmp_path, sigint_guard):
    data = write_data(tmp_path)
    cfg = tiny(data, tmp_path / "a", eval_interval=5, log_interval=1)
    result = train(cfg, progress=False, callback=ctrl_c_at(7))
    assert signal.getsignal(signal.SIGINT) is sigint_guard  # train's own handler is gone

    assert result.metrics["interrupted"] is True and result.metrics["step"] == 7
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["interrupted"] is True and metrics["step"] == 7
    ckpt = load_checkpoint(tmp_path / "a")
    assert ckpt.train_state["step"] == 7 and ckpt.optimizer["hyper"]["t"] == 7
    assert evals(read_log(tmp_path / "a"))[-1]["step"] == 7  # evaluated where it stopped

    resumed = train(cfg, resume=True, progress=False)
    assert resumed.metrics["step"] == 20 and resumed.metrics["interrupted"] is False
    straight = train(tiny(data, tmp_path / "b", eval_interval=5, log_interval=1),
                     progress=False)
    assert resumed.metrics["train_loss"] == straight.metrics["train_loss"]
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], p, err_msg=name)


def test_second_ctrl_c_stops_at_once(tmp_path, sigint_guard):
    cfg = tiny(write_data(tmp_path), tmp_path / "out", eval_interval=5, log_interval=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, callback=ctrl_c_at(7, times=2))
    assert load_checkpoint(tmp_path / "out").train_state["step"] == 5  # nothing half-saved
