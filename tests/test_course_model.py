"""The course model cache (numpygpt.course.notebooks.course_model): trained once, then loaded.

Every test trains a one-layer model for a few steps on a small text file, with
NUMPYGPT_CACHE pointing into tmp_path (never the user's cache).
"""

import json

import numpy as np
import pytest

import numpygpt.training.train
from numpygpt.course.notebooks import course_model, course_model_dir, course_recipe
from numpygpt.training.train import TrainConfig


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYGPT_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "corpus.txt"
    # the samples continue "Parameters\n----------\n": the corpus has its characters
    text.write_text("Parameters\n----------\nx : the quick brown fox jumps over the lazy dog.\n"
                    * 40, encoding="utf-8")
    return TrainConfig.preset_config("tiny", data=str(text), out="", max_iters=4, n_layer=1,
                                     n_head=1, n_embd=8, block_size=8, batch_size=2,
                                     eval_interval=2, eval_iters=1, log_interval=1)


def _no_training(*args, **kwargs):
    raise AssertionError("course_model trained although a valid cache exists")


def _same_params(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_cache_folder_is_under_numpygpt_cache(recipe, tmp_path):
    assert course_model_dir(fast=True) == tmp_path / "cache" / "course" / "fast"
    assert course_model_dir(fast=False) == tmp_path / "cache" / "course" / "full"


def test_the_recipes(monkeypatch):
    full, fast = course_recipe(fast=False), course_recipe(fast=True)
    assert (full.preset, full.max_iters, full.data) == ("baby", 2000, "numpy-docs")
    assert (fast.preset, fast.data) == ("tiny", "numpy-docs") and fast.max_iters < 500
    monkeypatch.setenv("NUMPYGPT_FAST", "1")
    assert course_recipe() == fast


def test_trains_once_then_loads_the_same_params(recipe, monkeypatch, capsys):
    model, tok, info = course_model(fast=True, recipe=recipe, sample_steps=(0, 2, 4))
    assert info["trained"] and "training it" in capsys.readouterr().out
    folder = course_model_dir(fast=True)
    assert info["folder"] == folder and (folder / "ckpt.npz").is_file()
    assert [s["step"] for s in info["samples"]] == [0, 2, 4]
    assert all(s["text"].startswith(info["prompt"]) for s in info["samples"])
    assert [r["step"] for r in info["history"] if "val_loss" in r] == [0, 2, 4]
    assert info["metrics"]["step"] == 4 and not model.training

    monkeypatch.setattr(numpygpt.training.train, "train", _no_training)
    model2, tok2, info2 = course_model(fast=True, recipe=recipe, sample_steps=(0, 2, 4))
    assert not info2["trained"] and "loaded from" in capsys.readouterr().out
    assert _same_params(model.params, model2.params) and tok2 == tok
    assert info2["samples"] == info["samples"] and info2["history"] == info["history"]
    # nothing but the cache folder is left in course/ (no temporary training folders)
    assert [p.name for p in folder.parent.iterdir()] == ["fast"]


def test_the_staged_run_equals_one_run(recipe, tmp_path):
    model, _, _ = course_model(fast=True, recipe=recipe, sample_steps=(0, 2, 4), verbose=False)
    cfg = TrainConfig(**{**recipe.__dict__, "out": str(tmp_path / "one_run")})
    one = numpygpt.training.train.train(cfg, progress=False)
    assert _same_params(model.params, one.model.params)


@pytest.mark.parametrize("damage", ["truncated checkpoint", "garbage checkpoint",
                                    "no course.json", "bad course.json", "other recipe"])
def test_a_damaged_cache_is_trained_again(recipe, capsys, damage):
    model, _, _ = course_model(fast=True, recipe=recipe)
    folder = course_model_dir(fast=True)
    ckpt = folder / "ckpt.npz"
    if damage == "truncated checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "garbage checkpoint":
        ckpt.write_bytes(b"not a checkpoint")
    elif damage == "no course.json":  # what an interrupted training leaves
        (folder / "course.json").unlink()
    elif damage == "bad course.json":
        (folder / "course.json").write_text("{", encoding="utf-8")
    else:
        info = json.loads((folder / "course.json").read_text(encoding="utf-8"))
        info["recipe"]["lr"] = 1.0
        (folder / "course.json").write_text(json.dumps(info), encoding="utf-8")
    capsys.readouterr()
    model2, _, info2 = course_model(fast=True, recipe=recipe)
    out = capsys.readouterr().out
    assert info2["trained"] and "cannot be used" in out and str(folder) in out
    assert _same_params(model.params, model2.params)  # training is deterministic
    _, _, info3 = course_model(fast=True, recipe=recipe, verbose=False)
    assert not info3["trained"]  # and the new cache is valid


def test_retrain_trains_again(recipe, capsys):
    course_model(fast=True, recipe=recipe)
    _, _, info = course_model(fast=True, recipe=recipe, retrain=True)
    assert info["trained"] and "training it again" in capsys.readouterr().out


def test_a_failed_training_leaves_the_old_cache_and_no_debris(recipe, monkeypatch):
    model, _, _ = course_model(fast=True, recipe=recipe, verbose=False)
    calls = []

    def failing_train(cfg, *args, **kwargs):
        calls.append(cfg.max_iters)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(cfg, *args, **kwargs)

    real_train = numpygpt.training.train.train
    monkeypatch.setattr(numpygpt.training.train, "train", failing_train)
    with pytest.raises(KeyboardInterrupt):
        course_model(fast=True, recipe=recipe, retrain=True, verbose=False)
    folder = course_model_dir(fast=True)
    assert [p.name for p in folder.parent.iterdir()] == ["fast"]
    monkeypatch.setattr(numpygpt.training.train, "train", _no_training)
    model2, _, info = course_model(fast=True, recipe=recipe, verbose=False)
    assert not info["trained"] and _same_params(model.params, model2.params)


def test_a_cache_made_before_a_setting_existed_still_loads(recipe, monkeypatch):
    """A course.json written before TrainConfig had arch, n_kv_head, ... lacks those keys; at
    their defaults it is the same recipe, so the cache loads instead of training again. A
    missing key whose default differs from the recipe's value still means another recipe."""
    model, _, _ = course_model(fast=True, recipe=recipe)
    path = course_model_dir(fast=True) / "course.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    for key in ("arch", "n_kv_head", "intermediate_size", "rope_theta"):
        del info["recipe"][key]
    path.write_text(json.dumps(info), encoding="utf-8")
    monkeypatch.setattr(numpygpt.training.train, "train", _no_training)
    model2, _, info2 = course_model(fast=True, recipe=recipe, verbose=False)
    assert not info2["trained"] and _same_params(model.params, model2.params)
    del info["recipe"]["n_layer"]  # the recipe's 1, not the default 4
    path.write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(AssertionError, match="trained although"):
        course_model(fast=True, recipe=recipe, verbose=False)
