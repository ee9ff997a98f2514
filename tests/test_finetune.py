"""Fine-tuning runs (numpygpt.finetune.run and `python -m numpygpt finetune`): classify and
instruct, full / frozen / LoRA, the metrics, an exact --resume, sample on an instruct run,
and one-line errors for bad input. Everything starts from a tiny model trained in a second."""

import json

import numpy as np
import pytest
from clirun import run

from numpygpt.errors import UserError
from numpygpt.finetune.answers import respond
from numpygpt.finetune.run import FinetuneConfig, finetune, load_finetuned, predict
from numpygpt.io.checkpoint import load_checkpoint
from numpygpt.training.train import TrainConfig, train

WORDS = ["array", "shape", "dtype", "axis", "index", "slice", "stack", "split", "copy", "view",
         "sort", "sum", "mean", "norm", "dot", "fft", "roll", "flip", "tile", "pad", "clip",
         "where", "take", "put", "diff", "cumsum", "unique", "ravel", "squeeze", "concat"]


def one_line_error(code, err, *needles):
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny character model with 64 characters of context, trained on numpy-docs."""
    out = tmp_path_factory.mktemp("base")
    cfg = TrainConfig.preset_config("tiny", block_size=64, max_iters=20, eval_iters=2,
                                    out=str(out))
    train(cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    """A short instruction task: repeat a word backwards (held-out words are new words)."""
    path = tmp_path_factory.mktemp("data") / "reverse.jsonl"
    rows = [{"instruction": f"reverse {w}", "output": w[::-1]} for w in WORDS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def quick(base, out, **kw):
    return FinetuneConfig(**{"ckpt": str(base), "out": str(out), "batch_size": 8,
                             "eval_interval": 10, "max_iters": 12, **kw})


def test_classify_full_reports_accuracy_baseline_and_confusion(base, tmp_path):
    result = finetune(quick(base, tmp_path / "cls"), progress=False)
    m = result.metrics
    assert m["task"] == "classify" and m["data"] == "numpy-topics"
    K = len(m["labels"])
    assert K == 7 and np.array(m["confusion"]).shape == (K, K)
    assert np.array(m["confusion"]).sum() == m["n_val"]
    assert np.trace(m["confusion"]) / m["n_val"] == pytest.approx(m["val_accuracy"])
    assert m["baseline_accuracy"] == pytest.approx(1 / K, abs=0.02)  # balanced classes
    assert m["trainable_params"] == m["total_params"]  # full fine-tuning
    rows = [json.loads(line) for line in (tmp_path / "cls" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [0, 10, 12]
    saved = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert saved["val_accuracy"] == m["val_accuracy"]
    # the run loads back and predicts labels
    model, tok, info = load_finetuned(tmp_path / "cls")
    assert info["task"] == "classify" and info["labels"] == m["labels"]
    preds = predict(model, tok, info["labels"], ["Compute the one-dimensional discrete",
                                                  "Return a masked array"])
    assert len(preds) == 2 and set(preds) <= set(m["labels"])


@pytest.mark.parametrize("how", ["lora", "body"])
def test_lora_and_a_frozen_body_leave_the_base_weights_untouched(base, tmp_path, how):
    kw = {"lora_rank": 4} if how == "lora" else {"freeze": "body"}
    result = finetune(quick(base, tmp_path / how, **kw), progress=False)
    before = load_checkpoint(base).params
    after = load_checkpoint(tmp_path / how).params
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    trained = {k for k in after if k not in before}
    assert {"score.weight", "score.bias"} <= trained
    assert any(".lora_B" in k for k in trained) == (how == "lora")
    assert not np.all(after["score.bias"] == 0)  # the head did learn
    assert result.metrics["trainable_params"] < result.metrics["total_params"] / 2


def test_freeze_k_blocks(base, tmp_path):
    result = finetune(quick(base, tmp_path / "f1", freeze="1"), progress=False)
    before, after = load_checkpoint(base).params, load_checkpoint(tmp_path / "f1").params
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same == (k.startswith(("wte.", "wpe.", "h.0."))), k
    assert result.metrics["freeze"] == "1"


def test_resume_is_exact(base, tmp_path):
    straight = finetune(quick(base, tmp_path / "a", max_iters=8, lr_decay_iters=8,
                              lora_rank=2), progress=False)
    finetune(quick(base, tmp_path / "b", max_iters=5, lr_decay_iters=8, lora_rank=2),
             progress=False)
    resumed = finetune(quick(base, tmp_path / "b", max_iters=8, lr_decay_iters=8, lora_rank=2),
                       resume=True, progress=False)
    for k, v in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v, err_msg=k)
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]


def test_instruct_learns_a_task_from_a_file_and_answers(base, tmp_path, qa_file, capsys):
    out = tmp_path / "ins"
    result = finetune(quick(base, out, task="instruct", data=str(qa_file), max_iters=60,
                            eval_interval=30, eval_generate=3, max_new_tokens=12, lr=3e-3),
                      progress=False)
    m = result.metrics
    assert m["template"] == "compact" and m["skipped_examples"] == 0
    assert m["val_loss"] < m["initial_val_loss"]  # held-out responses: lower loss than untuned
    assert len(m["answers"]) == 3 and 0 <= m["char_overlap"] <= 1
    assert {"instruction", "reference", "answer", "exact", "overlap"} <= set(m["answers"][0])
    # the answer generator wraps the prompt in the template and stops at the end marker
    model, tok, info = load_finetuned(out)
    answer = respond(model, tok, info["template_obj"], "reverse axis", max_new_tokens=12)
    assert "\n\n" not in answer and "Q:" not in answer
    code, stdout, err = run(["sample", "--ckpt", out, "--prompt", "reverse axis",
                             "--tokens", "12", "--temperature", "0"], capsys)
    assert code == 0, err
    assert stdout.strip() == answer


def test_cli_finetune_and_its_summary(base, tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, err = run(["finetune", "--ckpt", base, "--task", "classify", "--out", out,
                             "--max-iters", "4", "--eval-interval", "2", "--lora-rank", "2",
                             "--no-progress"], capsys)
    assert code == 0, err
    assert "val accuracy" in stdout and "majority-class baseline" in stdout
    assert "LoRA r=2" in stdout
    # the classifier cannot be sampled from: one line
    code, _, err = run(["sample", "--ckpt", out, "--prompt", "x"], capsys)
    one_line_error(code, err, "is a classifier")
    # resuming with another task is refused, naming both
    code, _, err = run(["finetune", "--out", out, "--resume", "--task", "instruct"], capsys)
    one_line_error(code, err, "--task 'classify'", "refused")
    # the same folder again without --resume: refused, nothing lost
    code, _, err = run(["finetune", "--ckpt", base, "--out", out], capsys)
    one_line_error(code, err, "already holds a run")
    assert load_checkpoint(out).train_state["step"] == 4


@pytest.mark.parametrize("argv,needles", [
    (["--lora-rank", "99"], ["--lora-rank 99", "larger than the layer"]),
    (["--lora-rank", "-1"], ["--lora-rank must be >= 0"]),
    (["--lora-rank", "2", "--lora-targets", "attn.q"], ["--lora-targets", "unknown attn.q"]),
    (["--lora-rank", "2", "--freeze", "body"], ["cannot be combined"]),
    (["--task", "instruct", "--freeze", "body"], ["leaves nothing to train"]),
    (["--freeze", "9"], ["--freeze 9", "only 2 blocks"]),
    (["--freeze", "most"], ["--freeze must be"]),
    (["--task", "classify", "--data", "numpy-qa"], ["numpy-qa"]),
    (["--template", "alpaca"], ["--template is for --task instruct"]),
    (["--ckpt", "/nonexistent/run"], ["no checkpoint"]),
])
def test_bad_flags_are_one_line(base, tmp_path, capsys, argv, needles):
    argv = ["finetune", "--ckpt", base, "--out", tmp_path / "x", "--no-progress", *argv]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, *needles)
    assert not (tmp_path / "x" / "ckpt.npz").exists()


def test_bad_task_files_are_one_line(base, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run(["finetune", "--ckpt", base, "--task", "instruct", "--data", empty,
                        "--out", tmp_path / "o1"], capsys)
    one_line_error(code, err, "empty.jsonl")
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("text,topic\nhello,a\nworld,b\n")
    code, _, err = run(["finetune", "--ckpt", base, "--data", nolabel, "--out", tmp_path / "o2"],
                       capsys)
    one_line_error(code, err, "label")


def test_resuming_on_data_with_unseen_labels_is_refused(base, tmp_path, capsys):
    first = tmp_path / "ab.csv"
    first.write_text("text,label\n" + "".join(f"word {w},{'a' if i % 2 else 'b'}\n"
                                              for i, w in enumerate(WORDS)))
    out = tmp_path / "run"
    finetune(quick(base, out, data=str(first), max_iters=4), progress=False)
    first.write_text(first.read_text() + "the new one,c\n")  # the file changed under the run
    with pytest.raises(UserError, match="label 'c'.*not one of the 2 classes"):
        finetune(quick(base, out, data=str(first), max_iters=6), resume=True, progress=False)


def test_a_gpt2_folder_with_a_bpe_tokenizer_fine_tunes_and_answers(tmp_path, qa_file, capsys):
    """The `--ckpt gpt2` path, offline: a GPT-2-format folder (safetensors, config.json,
    vocab.json, merges.txt) with a byte-level BPE tokenizer, the Alpaca template."""
    from numpygpt import GPT, GPTConfig
    from numpygpt.data.bpe import BPETokenizer

    tok = BPETokenizer.train(" ".join(f"reverse {w} {w[::-1]}" for w in WORDS) * 3,
                             vocab_size=300)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2,
                          n_embd=16), seed=0)
    model.save_pretrained(tmp_path / "gpt2-like", tokenizer=tok)
    out = tmp_path / "run"
    code, stdout, err = run(["finetune", "--ckpt", tmp_path / "gpt2-like", "--task", "instruct",
                             "--data", qa_file, "--template", "alpaca", "--out", out,
                             "--max-iters", "6", "--eval-interval", "3", "--eval-generate", "2",
                             "--max-new-tokens", "8", "--no-progress"], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["template"] == "alpaca" and m["base"].startswith("GPT-2") and len(m["answers"]) == 2
    code, stdout, err = run(["sample", "--ckpt", out, "--prompt", "reverse axis", "--tokens", "8",
                             "--temperature", "0"], capsys)
    assert code == 0 and "### Response" not in stdout, err


def test_ctrl_c_saves_where_it_stopped_and_resume_continues(base, tmp_path):
    import os
    import signal

    def interrupt(row):
        if row.get("step") == 4 and "loss" in row:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C during step 4's log

    out = tmp_path / "stopped"
    cfg = quick(base, out, max_iters=10, log_interval=2)
    result = finetune(cfg, progress=False, callback=interrupt)
    assert result.metrics["interrupted"] and result.metrics["step"] == 4
    assert load_checkpoint(out).train_state["step"] == 4
    assert json.loads((out / "metrics.json").read_text())["interrupted"] is True
    resumed = finetune(cfg, resume=True, progress=False)
    assert resumed.metrics["step"] == 10 and not resumed.metrics["interrupted"]


def test_a_damaged_fine_tuning_checkpoint_is_one_line(base, tmp_path, capsys):
    from numpygpt.io.checkpoint import save_checkpoint

    out = tmp_path / "run"
    finetune(quick(base, out, max_iters=2), progress=False)
    saved = load_checkpoint(out)
    for bad, needle in [({"bogus": 1}, "unexpected keyword argument 'bogus'"),
                        ({"lora_rank": -3}, "--lora-rank must be >= 0")]:
        save_checkpoint(tmp_path / "bad", config={**saved.config, "finetune": {
            **saved.config["finetune"], **bad}}, tokenizer=saved.tokenizer, params=saved.params)
        code, _, err = run(["sample", "--ckpt", tmp_path / "bad", "--prompt", "x"], capsys)
        one_line_error(code, err, "settings that are not valid", needle)
