"""The checker of notebook 19's exercise, my_data_parallel_grads: a stub, the solution, and
wrong answers written as a learner would write them, each named for its mistake."""

import numpy as np
import pytest

from numpygpt.course.exercises import check_data_parallel_grads


def solution(worker, x, y, N):
    b = len(x) // N
    losses, grads = [], []
    for r in range(N):
        loss_r, g = worker(x[r * b:(r + 1) * b], y[r * b:(r + 1) * b])
        losses.append(loss_r)
        grads.append(g)
    return sum(losses) / N, {k: sum(g[k] for g in grads) / N for k in grads[0]}


def stub(worker, x, y, N):
    raise NotImplementedError


def summed_everything(worker, x, y, N):
    loss, g = solution(worker, x, y, N)
    return loss * N, {k: v * N for k, v in g.items()}


def summed_grads(worker, x, y, N):
    b = len(x) // N
    loss, total = 0.0, {}
    for r in range(N):
        loss_r, g = worker(x[r * b:(r + 1) * b], y[r * b:(r + 1) * b])
        loss += loss_r / N
        for k, v in g.items():
            total[k] = total.get(k, 0) + v
    return loss, total


def first_rows_everywhere(worker, x, y, N):
    b = len(x) // N
    outs = [worker(x[:b], y[:b]) for _ in range(N)]
    return (sum(o[0] for o in outs) / N,
            {k: sum(o[1][k] for o in outs) / N for k in outs[0][1]})


def one_worker_short(worker, x, y, N):
    b = len(x) // N
    outs = [worker(x[r * b:(r + 1) * b], y[r * b:(r + 1) * b]) for r in range(N - 1)]
    return (sum(o[0] for o in outs) / N,
            {k: sum(o[1][k] for o in outs) / N for k in outs[0][1]})


def divided_by_rows(worker, x, y, N):
    loss, g = solution(worker, x, y, N)
    B = len(x)
    return loss * N / B, {k: v * N / B for k, v in g.items()}


def whole_batch(worker, x, y, N):
    return worker(x, y)


def test_stub_is_not_implemented_yet():
    report = check_data_parallel_grads(stub, show=False)
    assert not report.ok and report.not_implemented
    assert report.verdict == "not implemented yet"
    assert "nan" not in str(report)


def test_the_solution_passes():
    report = check_data_parallel_grads(solution, show=False)
    assert report.ok, str(report)
    assert str(report).endswith("all correct, well done!")


@pytest.mark.parametrize("fn, wrong, says", [
    (summed_everything, ["loss", "grads"], "no 1/N anywhere"),
    (summed_grads, ["grads"], "the losses averaged but the gradients summed"),
    (first_rows_everywhere, ["loss", "grads"], "every worker took the first B/N rows"),
    # with N = 1 (one worker) range(N - 1) calls no worker at all: the code itself fails
    (one_worker_short, ["loss", "grads", "call"], "one worker missing"),
    (divided_by_rows, ["loss", "grads"], "divided by B (the rows) instead of N"),
])
def test_wrong_answers_are_named(fn, wrong, says):
    report = check_data_parallel_grads(fn, show=False)
    text = str(report)
    assert report.wrong == wrong, text
    assert f"this looks like: {says}" in text
    # one diagnosis per wrong output: "no 1/N anywhere" is not also called a loss-only mistake
    crosses = [ln for ln in text.splitlines() if ln.startswith(("✗ loss", "✗ grads"))]
    assert text.count("this looks like:") == len(crosses) > 0, text
    if "grads" in wrong:
        assert "worst at grads['" in text  # the tensor and the index in it


def test_summed_everything_also_shows_the_factor():
    text = str(check_data_parallel_grads(summed_everything, show=False))
    assert "yours = 2 x expected" in text and "yours = 3 x expected" in text


def test_the_whole_batch_in_one_call_is_caught():
    report = check_data_parallel_grads(whole_batch, show=False)
    assert report.wrong == ["calls"]
    assert "called on [6] rows" in str(report)


def test_not_a_function_and_a_wrong_return():
    assert "expects your function itself" in str(check_data_parallel_grads(
        solution(lambda a, b: (0.0, {}), np.zeros((2, 6)), np.zeros((2, 6)), 1), show=False))
    report = check_data_parallel_grads(lambda w, x, y, N: w(x, y)[0], show=False)
    assert not report.ok and "expected 2: loss, grads" in str(report)
