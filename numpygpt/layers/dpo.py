"""Preference tuning (DPO): the log-probability of a whole response, and the DPO loss.

Direct preference optimisation (Rafailov et al., 2023) learns from pairs: for one prompt x, a
response y_c that is preferred ("chosen") over another, y_r ("rejected"). Two layers:

1. sequence_logprob: the log-probability the model gives a response, summed over its tokens,

       s = sum_t log softmax(z_t)[y_t]          (t over the response: targets != -1)

   with ds/dz_t = onehot(y_t) - softmax(z_t) at those positions, 0 elsewhere.

2. dpo_loss: with the same sums s_ref from the frozen starting model (the reference),

       h_b  = beta * ((s_c - s_ref_c) - (s_r - s_ref_r))     the implicit reward margin
       loss = mean_b -log sigmoid(h_b) = mean_b softplus(-h_b)

   dloss/dh_b = -sigmoid(-h_b) / B, so dloss/ds_c = beta * dloss/dh and dloss/ds_r =
   -beta * dloss/dh (and the reference sums get the opposite signs). The gradient is large
   for a pair the model still ranks wrongly (h < 0: sigmoid(-h) near 1) and fades for one it
   ranks well by a margin: DPO stops pushing once the chosen answer is ahead.

The loss only sees the *difference* s_c - s_r: lowering both log-probabilities, the chosen one
less, lowers it too. With near-miss rejected answers (one character off), that is what often
happens ("likelihood displacement"); the fine-tuning code adds alpha times the chosen
answers' token-mean NLL to hold s_c up (as RPO does), composed from softmax_cross_entropy.

Shapes: B pairs, T positions, V vocabulary.
"""

from typing import NamedTuple

import numpy as np


class SequenceLogprobCache(NamedTuple):
    probs: np.ndarray  # (B, T, V) softmax of the logits
    yv: np.ndarray  # (B, T) targets, ignored ones replaced by 0
    valid: np.ndarray  # (B, T) bool: the response positions


def sequence_logprob_forward(logits, targets, ignore_index=-1):
    """Inputs:
    - logits: (B, T, V) scores
    - targets: (B, T) integer ids; ignore_index (-1) where a position is not part of the
      response (the prompt, the padding)

    Returns (logp, cache):
    - logp: (B,) the sum over each row's response tokens of log softmax(logits)[target]
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (B, T, V): exp cannot overflow
    probs = np.exp(shifted)
    sumexp = probs.sum(axis=-1, keepdims=True)  # (B, T, 1)
    probs /= sumexp
    valid = targets != ignore_index  # (B, T)
    yv = np.where(valid, targets, 0)
    picked = np.take_along_axis(shifted, yv[..., None], axis=-1)[..., 0]  # (B, T)
    logp = ((picked - np.log(sumexp[..., 0])) * valid).sum(axis=-1)  # (B,)
    return logp.astype(logits.dtype), SequenceLogprobCache(probs, yv, valid)


def sequence_logprob_backward(dlogp, cache):
    """Inputs: dlogp (B,), the gradient of each row's log-probability.

    Returns dlogits (B, T, V): dlogp_b * (onehot(y_t) - probs_t) on response positions, 0
    elsewhere."""
    probs, yv, valid = cache
    dz = -probs  # (B, T, V), a new array
    np.put_along_axis(dz, yv[..., None], np.take_along_axis(dz, yv[..., None], -1) + 1, -1)
    dz *= (valid * np.asarray(dlogp)[:, None]).astype(dz.dtype)[..., None]
    return dz


class DPOCache(NamedTuple):
    sig_neg: np.ndarray  # (B,) sigmoid(-h): how much each pair still pulls
    beta: float


def _sigmoid(x):
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def dpo_loss_forward(logp_c, logp_r, ref_c, ref_r, beta):
    """Inputs:
    - logp_c, logp_r: (B,) the policy's sequence log-probabilities of the chosen and the
      rejected responses (sequence_logprob_forward)
    - ref_c, ref_r: (B,) the same from the frozen reference model
    - beta: > 0, how far from the reference the policy may move (larger: a sharper loss)

    Returns (loss, cache): loss = mean_b softplus(-h_b), a scalar of logp_c's dtype, with
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r)).
    """
    h = beta * ((logp_c - ref_c) - (logp_r - ref_r))  # (B,)
    loss = np.logaddexp(0.0, -h).mean()  # softplus(-h) = -log sigmoid(h), stable
    return np.asarray(loss, dtype=logp_c.dtype)[()], DPOCache(_sigmoid(-h), beta)


def dpo_loss_backward(dloss, cache):
    """Returns (dlogp_c, dlogp_r, dref_c, dref_r), each (B,): d softplus(-h)/dh = -sigmoid(-h),
    times beta and the sign each term has in h, over the batch mean's B."""
    sig_neg, beta = cache
    dh = -sig_neg * (dloss / len(sig_neg))  # (B,)
    return beta * dh, -beta * dh, -beta * dh, beta * dh


def dpo_margins(logp_c, logp_r, ref_c, ref_r, beta):
    """The implicit reward margins h (B,): positive where the policy prefers the chosen
    response more than the reference did. Their mean and the share above 0 (the preference
    accuracy) are what DPO reports."""
    return beta * ((logp_c - ref_c) - (logp_r - ref_r))


__all__ = ["sequence_logprob_forward", "sequence_logprob_backward", "dpo_loss_forward",
           "dpo_loss_backward", "dpo_margins", "SequenceLogprobCache", "DPOCache"]
