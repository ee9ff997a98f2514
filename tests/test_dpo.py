"""number-translation and preference tuning (DPO), end to end on tiny runs: the recipe's
model from scratch, the kept checkpoint, the test score, `respond`, DPO from a run (its own
pairs or a file), its resume, and one clear line for each bad input."""

import contextlib
import io
import json

import numpy as np
import pytest

from numpygpt import layers as L
from numpygpt.cli import main
from numpygpt.finetune.model import FinetuneGPT
from numpygpt.finetune.run import FinetuneConfig, finetune, load_finetuned
from numpygpt.kernels import ops
from numpygpt.models.gpt import GPTConfig


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """number-translation from scratch, 12 steps (the recipe's model, its keep=best)."""
    out = tmp_path_factory.mktemp("nt") / "run"
    cfg = FinetuneConfig.for_task(task="number-translation", out=str(out), max_iters=12,
                                  eval_interval=6, batch_size=8, n_test=300)
    result = finetune(cfg, progress=False)
    return out, result


def test_number_translation_trains_a_new_model_and_scores_the_test_numbers(sft):
    out, result = sft
    m = result.metrics
    assert m["task"] == "number-translation" and m["n_test"] == 300  # of 10,009, spread
    assert 0.0 <= m["test_exact_match"] <= 1.0 and len(m["test_wrong"]) <= 200
    assert m["kept_step"] in (0, 6, 12)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_exact_match" in r]
    assert [r["step"] for r in evals] == [0, 6, 12]
    best = max(evals, key=lambda r: r["val_exact_match"])  # the first of the best is kept
    assert m["kept_step"] == best["step"] and m["val_exact_match"] == best["val_exact_match"]
    model, tok, info = load_finetuned(out)
    assert info["task"] == "number-translation" and model.config.block_size == 72
    assert tok.vocab_size == model.config.vocab_size


def test_respond_answers_one_line_per_prompt(sft, tmp_path):
    out, _ = sft
    code, stdout, err = run(["respond", "--ckpt", out, "twelve", "three hundred five"])
    assert code == 0 and len(stdout.splitlines()) == 2, err
    (tmp_path / "p.txt").write_text("one\n\ntwo thousand\n")
    code, stdout, _ = run(["respond", "--ckpt", out, "--file", tmp_path / "p.txt"])
    assert code == 0 and len(stdout.splitlines()) == 3 and stdout.splitlines()[1] == ""
    code, _, err = run(["respond", "--ckpt", out, "TWELVE"])  # not in its vocabulary
    assert code == 1 and "cannot be encoded" in one_line(err)


def test_backward_from_given_logits_gradients_equals_the_loss_backward():
    m = FinetuneGPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                              dropout=0.0), dtype=np.float64)
    rng = np.random.default_rng(0)
    idx, t = rng.integers(0, 11, (3, 6)), rng.integers(0, 11, (3, 6))
    t[0, :2] = -1
    m.forward(idx, t)
    g1 = m.backward()
    logits, _ = m.forward(idx)
    # the loss kernel the model's own loss uses (numpygpt.kernels' table: fast or plain)
    _, cache = ops.softmax_cross_entropy_forward(logits, t)
    g2 = m.backward(ops.softmax_cross_entropy_backward(1.0, cache))
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    with pytest.raises(RuntimeError, match="shape of its logits"):
        m.backward(np.zeros((2, 6, 11)))


def test_a_quick_test_score_spreads_over_the_test_set():
    from numpygpt.finetune.tasks import spread

    assert spread(list(range(10)), 0) == list(range(10)) == spread(list(range(10)), 10)
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread(list(range(10_009)), 300)[-1] > 9_900  # the large numbers too


def write_pairs(path, n=40, bad=None):
    from numpygpt.finetune import numbers as N

    rows = []
    for k in range(1, n + 1):
        right = N.chinese(k)
        rows.append({"instruction": N.english(k), "chosen": right,
                     "rejected": right[:-1] + ("一" if right[-1] != "一" else "二")})
    if bad:
        rows[3] = bad(rows[3])
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dpo_run(sft, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    pairs = write_pairs(folder / "pairs.jsonl")
    out = folder / "run"
    code, stdout, err = run(["finetune", "--method", "dpo", "--init", sft[0], "--pairs", pairs,
                             "--out", out, "--max-iters", "4", "--eval-interval", "2",
                             "--batch-size", "8", "--n-test", "200", "--no-progress"])
    assert code == 0, err
    return out, stdout


def test_dpo_from_a_pairs_file_logs_margins_and_keeps_a_checkpoint(dpo_run):
    out, stdout = dpo_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "dpo" and m["n_pairs"] + m["n_eval_pairs"] == 40
    assert m["initial"]["val_margin"] == 0.0  # the policy starts as the reference
    assert m["initial"]["val_pref_accuracy"] == 0.5  # every margin 0: a tie, counted half
    assert 0 <= m["val_pref_accuracy"] <= 1 and m["n_test"] == 200
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_margin" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(np.isfinite(r["train_chosen_logp"]) for r in evals)
    assert "held-out preference accuracy" in stdout
    model, _, info = load_finetuned(out)  # a DPO run is an instruction run too
    assert info["task"] == "number-translation"


def test_dpo_resumes_from_its_own_checkpoint(dpo_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(dpo_run[0], out)
    code, _, err = run(["finetune", "--method", "dpo", "--resume", "--out", out,
                        "--max-iters", "6", "--no-progress"])
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["step"] == 6
    code, _, err = run(["finetune", "--method", "dpo", "--resume", "--out", out,
                        "--beta", "0.5", "--no-progress"])
    assert code == 1 and "--beta" in one_line(err)


def test_the_dpo_loss_of_a_batch_matches_its_parts():
    """batch_grads' composition: DPO on the two halves of one (2B, T) batch, plus alpha
    times the chosen half's NLL, has the gradient finite differences give."""
    from numpygpt.gradcheck import numerical_gradient

    rng = np.random.default_rng(0)
    B, T, V, beta, alpha = 3, 5, 7, 0.5, 0.7
    logits = rng.standard_normal((2 * B, T, V))
    targets = rng.integers(0, V, (2 * B, T))
    targets[:, :2] = -1
    ref = rng.standard_normal((B, 2))

    def loss_of(z):
        s, s_cache = L.sequence_logprob_forward(z, targets)
        loss, d_cache = L.dpo_loss_forward(s[:B], s[B:], ref[:, 0], ref[:, 1], beta)
        nll, n_cache = L.softmax_cross_entropy_forward(z[:B], targets[:B])
        return loss + alpha * nll, (s_cache, d_cache, n_cache)

    _, (s_cache, d_cache, n_cache) = loss_of(logits)
    ds_c, ds_r, _, _ = L.dpo_loss_backward(1.0, d_cache)
    d = L.sequence_logprob_backward(np.concatenate([ds_c, ds_r]), s_cache)
    d[:B] += alpha * L.softmax_cross_entropy_backward(1.0, n_cache)
    numeric = numerical_gradient(lambda: loss_of(logits)[0], logits, 1.0, h=1e-4, order=4)
    assert np.abs(d - numeric).max() / np.abs(numeric).max() < 1e-8


@pytest.mark.parametrize("bad, needle", [
    (lambda r: {k: v for k, v in r.items() if k != "rejected"}, "has no 'rejected'"),
    (lambda r: {**r, "chosen": "  "}, "has an empty 'chosen'"),
    (lambda r: {**r, "instruction": "one " * 40}, "longer than the model's context"),
    (lambda r: {**r, "rejected": r["chosen"]}, "are the same response"),
    (lambda r: {**r, "chosen": "\u263a"}, "line 4"),
])
def test_bad_pairs_files_are_one_line(sft, tmp_path, bad, needle):
    pairs = write_pairs(tmp_path / "p.jsonl", bad=bad)
    code, _, err = run(["finetune", "--method", "dpo", "--init", sft[0], "--pairs", pairs,
                        "--out", tmp_path / "d", "--max-iters", "1", "--no-progress"])
    assert code == 1 and needle in one_line(err), err
    assert not (tmp_path / "d").exists()


def test_dpo_from_a_run_that_is_not_instruction_tuned_is_one_line(tmp_path):
    assert run(["train", "--preset", "tiny", "--out", tmp_path / "base", "--max-iters", "2",
                "--no-progress", "--sample-tokens", "0"])[0] == 0
    code, _, err = run(["finetune", "--method", "dpo", "--init", tmp_path / "base",
                        "--out", tmp_path / "d", "--no-progress"])
    assert code == 1 and "not an instruction-tuned run" in one_line(err)
    code, _, err = run(["finetune", "--method", "dpo", "--task", "classify", "--out",
                        tmp_path / "d"])
    assert code == 1 and "--task is not a setting of --method dpo" in one_line(err)
    code, _, err = run(["finetune", "--beta", "0.2", "--out", tmp_path / "d"])
    assert code == 1 and "--beta is not a setting of --method sft" in one_line(err)
