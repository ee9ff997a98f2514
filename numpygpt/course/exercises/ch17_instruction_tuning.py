"""Notebook 17 (instruction tuning): the per-sequence mean cross-entropy and its backward."""

import numpy as np

from .checking import grad_case, randn, run, variant


def sequence_mean_ce_forward(logits, targets, ignore_index=-1):
    """The instruction-tuning loss that weighs every example alike: the mean over the B
    sequences of (the mean cross-entropy over that sequence's counted targets).

        loss = (1/B) sum_b (1/n_b) sum_{t: y[b,t] != -1} -log softmax(z[b, t])[y[b, t]]

    with n_b the number of counted targets of sequence b (each sequence must have one at
    least). The usual token mean, (1/N) sum over all N counted targets, lets a long answer
    weigh n_b times as much as a one-word one.

    Inputs: logits (B, T, V); targets int (B, T), ignore_index for the prompt and padding.
    Returns (loss, cache): loss a scalar of logits' dtype; cache = (probs (B, T, V), targets).
    """
    z = logits - logits.max(axis=-1, keepdims=True)  # (B, T, V)
    probs = np.exp(z)
    sumexp = probs.sum(axis=-1, keepdims=True)  # (B, T, 1)
    probs /= sumexp
    valid = targets != ignore_index  # (B, T)
    yv = np.where(valid, targets, 0)
    logp = np.take_along_axis(z, yv[..., None], axis=-1)[..., 0] - np.log(sumexp[..., 0])
    n = valid.sum(axis=1)  # (B,) counted targets per sequence
    per_seq = -(logp * valid).sum(axis=1) / n  # (B,)
    return logits.dtype.type(per_seq.mean()), (probs, targets)


def sequence_mean_ce_backward(dloss, cache, ignore_index=-1):
    """Backward of sequence_mean_ce_forward: dlogits (B, T, V), which is
    dloss * (probs - onehot(y)) / (B n_b) on the counted rows of sequence b, 0 elsewhere."""
    probs, targets = cache
    B = targets.shape[0]
    valid = targets != ignore_index  # (B, T)
    n = valid.sum(axis=1, keepdims=True)  # (B, 1)
    dz = probs.copy()  # (B, T, V)
    b_idx, t_idx = np.nonzero(valid)
    dz[b_idx, t_idx, targets[b_idx, t_idx]] -= 1  # p - onehot(y) on the counted rows
    weight = valid * (dloss / (B * n))  # (B, T): 1 / (B n_b) there, 0 elsewhere
    return dz * weight[..., None].astype(dz.dtype)


def _sce(dloss, cache, per="seq", zero=True):
    probs, targets = cache
    B = targets.shape[0]
    valid = targets != -1
    n = valid.sum(axis=1, keepdims=True)
    dz = probs.copy()
    b_idx, t_idx = np.nonzero(valid)
    dz[b_idx, t_idx, targets[b_idx, t_idx]] -= 1
    scale = {"seq": 1.0 / (B * n), "token": np.full_like(n, 1.0 / valid.sum(), dtype=float),
             "n_b": 1.0 / n, "B": np.full_like(n, 1.0 / B, dtype=float),
             "T": np.full_like(n, 1.0 / (B * targets.shape[1]), dtype=float)}[per]
    weight = (valid if zero else np.ones_like(valid)) * scale * dloss
    return dz * weight[..., None]


SEQUENCE_MEAN_CE_MISTAKES = [
    ("the token mean's gradient, (p - onehot) / N with N all the counted targets of the "
     "batch: here each sequence is averaged first, so a row of sequence b gets 1 / (B n_b)",
     variant(_sce, per="token")),
    ("ignored rows not zeroed: a prompt or padding position (target -1) is not in the loss, "
     "so its logits get no gradient at all", variant(_sce, zero=False)),
    ("divided by n_b only: the outer mean over the B sequences adds a factor 1/B",
     variant(_sce, per="n_b")),
    ("divided by B only: each sequence's loss is itself a mean over its n_b targets",
     variant(_sce, per="B")),
    ("divided by B T (every position, padding and prompt included): n_b counts only the "
     "targets that are not -1", variant(_sce, per="T")),
    ("forgot to multiply by dloss (the upstream gradient; here it is not 1)",
     lambda d, c: _sce(1.0, c)),
]


def check_sequence_mean_ce_backward(fn, show=True):
    """fn(dloss, cache) -> dlogits (B, T, V), the gradient of sequence_mean_ce_forward's
    loss, with cache = (probs (B, T, V), targets (B, T)), targets -1 where ignored. Tried
    with sequences whose numbers of counted targets differ, with one sequence only, then in
    float32."""
    rng = np.random.default_rng(17)
    uneven = np.array([[-1, -1, 2, 4, 0], [-1, 5, 1, -1, -1], [-1, -1, -1, -1, 3]])

    def case(targets, seed, label, dtype=np.float64):
        return grad_case(sequence_mean_ce_forward,
                         {"logits": randn(rng, *targets.shape, 6, scale=2.0),
                          "targets": targets},
                         ["logits"], seed=seed, arg_names=("dloss", "cache"), label=label,
                         dtype=dtype)

    cases = [case(uneven, 17, "3 sequences: 3, 2 and 1 targets"),
             case(np.array([[-1, 1, 1, -1]]), 18, "one sequence"),
             case(uneven, 19, "3 sequences, float32", np.float32)]
    return run("per-sequence mean cross-entropy backward", fn, cases,
               SEQUENCE_MEAN_CE_MISTAKES, {
                    "call": "shapes: dloss a number; cache = (probs (B, T, V), targets (B, T)); "
                            "count each sequence's targets with targets != -1",
                    "dlogits": "write the loss as a weighted sum of per-row cross-entropies: "
                               "what weight does a counted row of sequence b carry?"}, show)
