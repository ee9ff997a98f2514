"""`train --arch llama`: the same loop, checkpoints, resume and sampling as for GPT, with a
Llama (numpygpt.models.llama) built from the preset's sizes."""

import json

import numpy as np
import pytest
from clirun import run

from numpygpt.errors import ConfigError
from numpygpt.io.checkpoint import load_checkpoint
from numpygpt.models.llama import Llama, LlamaConfig
from numpygpt.models.registry import param_count
from numpygpt.training.train import TrainConfig, estimate_memory, train

TEXT = ("the quick brown fox jumps over the lazy dog.\n"
        "pack my box with five dozen liquor jugs.\n") * 60


def write_data(folder):
    path = folder / "pangrams.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def tiny(data, out, **overrides):
    kw = {"max_iters": 20, "eval_interval": 10, "eval_iters": 2, "arch": "llama", **overrides}
    return TrainConfig.preset_config("tiny", data=data, out=str(out), **kw)


@pytest.mark.parametrize("preset,kv,width", [("tiny", 1, 128), ("baby", 2, 384),
                                             ("small", 3, 1024)])
def test_presets_keep_their_sizes_and_drop_dropout(preset, kv, width):
    cfg = TrainConfig.preset_config(preset, arch="llama")
    assert cfg.dropout == 0.0  # small's 0.2 is GPT's
    mcfg = cfg.model_config(65)
    assert isinstance(mcfg, LlamaConfig)
    assert (mcfg.n_layer, mcfg.n_head, mcfg.n_embd) == (cfg.n_layer, cfg.n_head, cfg.n_embd)
    assert (mcfg.n_kv_head, mcfg.intermediate_size) == (kv, width)
    assert param_count(mcfg) == Llama(mcfg).num_params()
    assert estimate_memory(cfg, 65) > 4 * 5 * param_count(mcfg)


@pytest.mark.parametrize("kwargs,needle", [
    ({"arch": "llama", "dropout": 0.1}, "Llama architecture has no dropout"),
    ({"n_kv_head": 2}, "n-kv-head is a Llama setting"),
    ({"intermediate_size": 64}, "intermediate-size is a Llama setting"),
    ({"rope_theta": 500.0}, "rope-theta is a Llama setting"),
    ({"arch": "llama", "pos_encoding": "sinusoidal"}, "pos-encoding is a GPT setting"),
    ({"arch": "mamba"}, "arch must be one of gpt, llama"),
])
def test_settings_of_the_other_architecture_are_refused(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.preset_config("tiny", **kwargs)


def test_llama_trains_saves_hf_names_and_resumes_exactly(tmp_path):
    data = write_data(tmp_path)
    kw = dict(lr_decay_iters=30)
    first = train(tiny(data, tmp_path / "a", max_iters=15, **kw), progress=False)
    assert isinstance(first.model, Llama)
    assert first.metrics["arch"] == "llama"
    resumed = train(tiny(data, tmp_path / "a", max_iters=30, **kw), resume=True, progress=False)
    straight = train(tiny(data, tmp_path / "b", max_iters=30, **kw), progress=False)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in log if "val_loss" in r]
    assert evals[-1] < evals[0] - 0.3  # it learns
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], p, err_msg=name)
    ckpt = load_checkpoint(tmp_path / "a")
    assert ckpt.config["train"]["arch"] == "llama"
    assert "model.layers.1.self_attn.k_proj.weight" in ckpt.params
    assert ckpt.params["model.layers.1.self_attn.k_proj.weight"].shape == (32, 16)  # 1 kv head
    assert ckpt.params["model.layers.0.mlp.gate_proj.weight"].dtype == np.float32


def test_cli_trains_samples_and_refuses_another_arch_on_resume(tmp_path, capsys):
    data, out = write_data(tmp_path), tmp_path / "run"
    code, stdout, err = run(["train", "--arch", "llama", "--preset", "tiny", "--data", data,
                             "--out", out, "--max-iters", "10", "--eval-iters", "2",
                             "--no-progress", "--sample-tokens", "20"], capsys)
    assert code == 0, err
    assert "(llama)" in stdout and "--- sample" in stdout
    code, stdout, err = run(["sample", "--ckpt", out, "--tokens", "30", "--seed", "3"], capsys)
    assert code == 0, err
    assert len(stdout.strip()) > 0
    code, _, err = run(["train", "--out", out, "--resume", "--arch", "gpt", "--data", data,
                        "--no-progress"], capsys)
    assert code != 0
    assert err.count("\n") == 1 and "trains a llama model" in err
    code, _, err = run(["finetune", "--ckpt", out, "--task", "classify",
                        "--out", tmp_path / "ft"], capsys)
    assert code != 0
    assert err.count("\n") == 1 and "holds a Llama model" in err
