"""Issue 10 through the API: the same validation at the public entry points as on the command
line (configs, optimizers, clipping, the model's inputs, train(), checkpoints' round trip)."""

import json
import math
import time

import numpy as np
import pytest

from numpygpt import GPT, SGD, AdamW, GPTConfig, TrainConfig, clip_grad_norm
from numpygpt.course.notebooks import CourseError
from numpygpt.data import DataError
from numpygpt.data.corpora import read_text_file
from numpygpt.errors import ConfigError, UserError
from numpygpt.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpygpt.models.gpt import param_count
from numpygpt.models.sampling import check_sampling
from numpygpt.training.train import TrainingError, estimate_memory, train

NAN, INF = float("nan"), float("inf")


def tiny_model(**kw):
    return GPTConfig(**{"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2,
                        "n_embd": 8, **kw})


def params():
    return {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}


# --- the error types --------------------------------------------------------------------------


@pytest.mark.parametrize("exc, other_base", [
    (ConfigError, ValueError), (CheckpointError, ValueError), (DataError, ValueError),
    (TrainingError, RuntimeError), (CourseError, Exception),
])
def test_every_user_error_is_a_UserError_and_keeps_its_old_base(exc, other_base):
    assert issubclass(exc, UserError) and issubclass(exc, other_base)


# --- optimizers -------------------------------------------------------------------------------


@pytest.mark.parametrize("make, needle", [
    (lambda p: AdamW(p, lr=NAN), "lr"),
    (lambda p: AdamW(p, lr=INF), "lr"),
    (lambda p: AdamW(p, lr=-1e-3), "lr"),
    (lambda p: AdamW(p, lr="1e-3"), "lr"),
    (lambda p: AdamW(p, lr=True), "lr"),
    (lambda p: AdamW(p, betas=(NAN, 0.99)), "beta1"),
    (lambda p: AdamW(p, betas=(0.9, 1.0)), "beta2"),
    (lambda p: AdamW(p, betas=(0.9,)), "betas"),
    (lambda p: AdamW(p, betas="ab"), "betas"),
    (lambda p: AdamW(p, eps=NAN), "eps"),
    (lambda p: AdamW(p, eps=0.0), "eps"),
    (lambda p: AdamW(p, weight_decay=NAN), "weight_decay"),
    (lambda p: SGD(p, lr=NAN), "lr"),
    (lambda p: SGD(p, momentum=NAN), "momentum"),
    (lambda p: SGD(p, momentum=1.0), "momentum"),
    (lambda p: SGD(p, weight_decay=-INF), "weight_decay"),
])
def test_optimizer_hyperparameters_must_be_finite_numbers(make, needle):
    with pytest.raises(ConfigError, match=needle):
        make(params())


@pytest.mark.parametrize("opt_cls, change", [
    (AdamW, {"lr": NAN}), (AdamW, {"t": -1}), (AdamW, {"t": 1.5}), (AdamW, {"betas": [2, 0]}),
    (SGD, {"momentum": INF}), (SGD, {"t": True}),
])
def test_load_state_dict_checks_the_saved_hyperparameters(opt_cls, change):
    opt = opt_cls(params())
    state = opt.state_dict()
    state["hyper"] = {**state["hyper"], **change}
    fresh = opt_cls(params())
    with pytest.raises(ValueError):
        fresh.load_state_dict(state)
    assert fresh.t == 0 and fresh.lr == opt.lr  # nothing half-applied


def test_an_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    """What save_checkpoint writes, load_checkpoint and load_state_dict take back."""
    for opt_cls in (AdamW, SGD):
        p = params()
        opt = opt_cls(p, lr=0.1)
        opt.step({k: np.full_like(v, 0.5) for k, v in p.items()})
        save_checkpoint(tmp_path / opt_cls.__name__, config={}, tokenizer={}, params=p,
                        optimizer=opt.state_dict())
        ckpt = load_checkpoint(tmp_path / opt_cls.__name__)
        again = opt_cls(ckpt.params)
        again.load_state_dict(ckpt.optimizer)
        assert again.state_dict()["hyper"] == opt.state_dict()["hyper"]


@pytest.mark.parametrize("hyper", [[1, 2], "AdamW", 3])
def test_save_checkpoint_refuses_an_optimizer_state_load_would_refuse(hyper, tmp_path):
    """The case found: 'hyper' that is not a dict was written, then refused on load."""
    with pytest.raises(TypeError, match="hyper"):
        save_checkpoint(tmp_path, config={}, tokenizer={}, params=params(),
                        optimizer={"hyper": hyper, "slots": {}})
    assert not (tmp_path / "ckpt.npz").exists()


# --- gradient clipping ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex64])
def test_clip_grad_norm_refuses_non_float_grads(dtype):
    grads = {"a": np.ones(3, np.float32), "b.weight": np.full(3, 5).astype(dtype)}
    before = grads["b.weight"].copy()
    with pytest.raises(TypeError, match="'b.weight'"):
        clip_grad_norm(grads, 1.0)
    np.testing.assert_array_equal(grads["b.weight"], before)  # not silently zeroed


@pytest.mark.parametrize("bad", [INF, NAN])
def test_clip_grad_norm_reports_a_non_finite_norm_and_leaves_the_grads(bad):
    """Decided: the norm is returned as it is (inf or nan) and nothing is scaled, instead of a
    mix of zeros and nan that hides where the problem was."""
    grads = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([bad, 1.0], np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert not math.isfinite(norm) and (math.isnan(norm) == math.isnan(bad))
    np.testing.assert_array_equal(grads["a"], [3.0, 4.0])
    np.testing.assert_array_equal(grads["b"], [bad, 1.0])


@pytest.mark.parametrize("max_norm", [NAN, 0.0, -1.0, "1"])
def test_clip_grad_norm_refuses_a_bad_max_norm(max_norm):
    with pytest.raises(ConfigError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, max_norm)


def test_clip_grad_norm_still_clips():
    grads = {"a": np.array([3.0, 4.0]), "b": np.zeros(2)}
    assert clip_grad_norm(grads, 1.0) == 5.0
    assert np.linalg.norm(grads["a"]) == pytest.approx(1.0, rel=1e-5)


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, needle", [
    ({"dropout": "0.1"}, "dropout must be a number"),
    ({"dropout": NAN}, "dropout"),
    ({"n_layer": True}, "n_layer must be an integer"),
    ({"n_embd": 8.0}, "n_embd must be an integer"),
    ({"vocab_size": "11"}, "vocab_size must be an integer"),
    ({"pos_encoding": None}, "pos_encoding"),
    ({"pos_encoding": ["learned"]}, "pos_encoding"),
])
def test_gptconfig_checks_field_types(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_model(**kwargs)


def test_gptconfig_from_dict_refuses_what_is_not_a_config():
    with pytest.raises(ConfigError, match="must be a dict"):
        GPTConfig.from_dict([("n_layer", 1)])
    with pytest.raises(ConfigError, match="unknown config keys"):
        GPTConfig.from_dict({"n_layer": 1, "n_layers": 2})


def test_gptconfig_keeps_plain_python_types():
    cfg = tiny_model(n_layer=np.int64(2), dropout=0)
    assert type(cfg.n_layer) is int and type(cfg.dropout) is float
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


@pytest.mark.parametrize("kwargs, needle", [
    ({"dropout": "0.1"}, "dropout must be a number"),
    ({"max_iters": 1e3}, "max-iters must be an integer"),
    ({"n_layer": True}, "n-layer must be an integer"),
    ({"lr": NAN}, "lr must be a finite number"),
    ({"lr": 0}, "lr must be > 0"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"lr_decay_iters": 10.5}, "lr-decay-iters"),
    ({"tokenizer": "word"}, "tokenizer must be one of"),
    ({"pos_encoding": "rotary"}, "pos-encoding must be one of"),
    ({"n_head": 3}, "not divisible by n_head=3"),
    ({"out": 42}, "out must be a string"),
])
def test_trainconfig_checks_types_and_values(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.preset_config("tiny", **kwargs)


def test_trainconfig_takes_a_path_for_out(tmp_path):
    cfg = TrainConfig.preset_config("tiny", out=tmp_path / "run", data=tmp_path / "d.txt")
    assert cfg.out == str(tmp_path / "run") and cfg.data == str(tmp_path / "d.txt")


def test_an_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.preset_config("huge")


@pytest.mark.parametrize("args", [("0.8", None, None), (True, None, None), (1.0, None, "0.9"),
                                  (1.0, 2.5, None), (1.0, None, NAN)])
def test_sampling_settings_are_checked(args):
    with pytest.raises(ConfigError):
        check_sampling(*args)


# --- memory, before anything is allocated ------------------------------------------------------


def test_param_count_matches_a_built_model():
    for kw in ({}, {"pos_encoding": "sinusoidal", "n_layer": 3}):
        cfg = tiny_model(**kw)
        assert param_count(cfg) == GPT(cfg).num_params()


def test_a_model_too_big_for_this_machine_is_refused_before_allocating():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"would need about [\d,.]+ GB .* GB of RAM"):
        GPT(GPTConfig(vocab_size=50257, n_embd=10**6, n_head=1, n_layer=4))
    assert time.perf_counter() - t0 < 0.5


def test_estimate_memory_grows_with_the_batch_and_matches_the_measurement():
    small = TrainConfig.preset_config("small", batch_size=16)
    est = estimate_memory(small, vocab_size=65)
    weights = 5 * 4 * param_count(small.model_config(65))
    # bench measured 1.11 GB of activations for this config (peak RSS above the weights)
    assert 1.0e9 < est - weights < 1.4e9
    assert estimate_memory(TrainConfig.preset_config("small", batch_size=32), 65) > est


def test_train_refuses_an_oversized_run_before_reading_the_data(tmp_path):
    cfg = TrainConfig.preset_config("tiny", data=str(tmp_path / "missing.txt"),
                                    out=str(tmp_path / "o"), batch_size=10**8)
    with pytest.raises(ConfigError, match="GB"):  # not the DataError of the missing file
        train(cfg, progress=False)
    assert not (tmp_path / "o").exists()


def test_read_text_file_has_a_size_limit(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("x" * 100)
    assert read_text_file(path, max_bytes=100) == "x" * 100
    with pytest.raises(DataError, match="more than"):
        read_text_file(path, max_bytes=99)


# --- the model's inputs ------------------------------------------------------------------------


def test_forward_and_generate_on_an_empty_batch_say_so():
    model = GPT(tiny_model())
    empty = np.zeros((0, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="no sequences"):
        model.forward(empty)
    with pytest.raises(ValueError, match="no sequences"):
        model.forward(empty, empty)
    with pytest.raises(ValueError, match="no sequences"):
        model.generate(empty, 3)


# --- train() never destroys a run -----------------------------------------------------------------


TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60


@pytest.fixture
def cfg(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text(TEXT)
    return TrainConfig.preset_config("tiny", data=str(data), out=str(tmp_path / "run"),
                                     max_iters=2, eval_interval=2, eval_iters=1)


def test_train_twice_into_one_folder_needs_resume_or_overwrite(cfg, tmp_path):
    train(cfg, progress=False)
    before = (tmp_path / "run" / "ckpt.npz").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, progress=False)
    assert (tmp_path / "run" / "ckpt.npz").read_bytes() == before
    again = train(cfg, progress=False, overwrite=True)
    assert again.metrics["step"] == 2 and not again.metrics["interrupted"]


def test_train_never_saves_an_inf_optimizer_state(cfg, monkeypatch):
    """A finite loss does not prove a finite state: AdamW's v can overflow to inf (gradients
    above ~1e19) while every update stays finite. train() stops instead of saving it."""
    import numpygpt.training.train as train_mod

    real = train_mod.AdamW.step

    def step(self, grads):
        real(self, grads)
        self.v["h.0.mlp.c_fc.weight"][0, 0] = np.inf

    monkeypatch.setattr(train_mod.AdamW, "step", step)
    with pytest.raises(TrainingError, match="AdamW's v of h.0.mlp.c_fc.weight"):
        train(cfg, progress=False)
    assert load_checkpoint(cfg.out).train_state["step"] == 0  # the last good one


def test_train_reports_a_full_disk_in_one_line(cfg, monkeypatch):
    import numpygpt.training.run as run_mod

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_mod, "save_checkpoint", full)
    with pytest.raises(TrainingError, match="No space left on device"):
        train(cfg, progress=False)


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": -2}, {"rounds": 0},
                                    {"steps": 1.5}])
def test_bench_training_checks_its_arguments_first(kwargs, monkeypatch):
    import numpygpt.bench.step as bench

    monkeypatch.setattr(bench, "numpy_step_fn", lambda *a: pytest.fail("the benchmark ran"))
    with pytest.raises(ConfigError):
        bench.bench_training("baby", **kwargs)
