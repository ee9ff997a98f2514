"""Optimizers, hand-coded: AdamW (what GPTs train with), SGD with momentum (to compare),
gradient-norm clipping and nanoGPT's warmup + cosine learning-rate schedule.

Each optimizer updates `params` (a dict name -> array) in place from `grads` (same keys).
"""

from __future__ import annotations

import math

import numpy as np


def _check_grads(params, grads):
    if grads.keys() != params.keys():
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"grads do not match params: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for k, g in grads.items():
        if g.shape != params[k].shape:
            raise ValueError(f"grad {k} has shape {g.shape}, param has {params[k].shape}")


def _check_state_slots(params, slots, names):
    for slot in names:
        if set(slots.get(slot, {})) != set(params):
            raise ValueError(f"optimizer state slot {slot!r} does not match the parameters")
        for k, a in slots[slot].items():
            if a.shape != params[k].shape:
                raise ValueError(f"optimizer state {slot}/{k} has shape {a.shape}, "
                                 f"param has {params[k].shape}")


def decays(name, param):
    """Weight decay applies to 2-D tensors (matmul weights and embeddings) only, never to
    biases or layer-norm gains: shrinking those towards 0 is not regularisation but damage."""
    return param.ndim >= 2


class AdamW:
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter), as PyTorch's
    torch.optim.AdamW computes it:

        t += 1
        p *= 1 - lr * weight_decay                     (2-D params only)
        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        self.params = params
        self.lr = lr
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self._tmp = {}  # scratch buffers for step(), made on first use

    def step(self, grads):
        """One update of every parameter, in place."""
        _check_grads(self.params, grads)
        self.t += 1  # before the bias correction uses it: at t = 1 it divides by (1 - b)
        b1, b2 = self.betas
        bc1 = 1 - b1 ** self.t
        bc2 = 1 - b2 ** self.t
        step_size = self.lr / bc1
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            t = p.dtype.type
            tmp = self._scratch(k, p)  # every update below runs in place: no temporaries
            if self.weight_decay and decays(k, p):
                p *= t(1 - self.lr * self.weight_decay)
            m *= t(b1)  # m = b1 m + (1 - b1) g
            np.multiply(g, t(1 - b1), out=tmp)
            m += tmp
            v *= t(b2)  # v = b2 v + (1 - b2) g^2
            np.multiply(g, g, out=tmp)
            tmp *= t(1 - b2)
            v += tmp
            np.sqrt(v, out=tmp)  # denominator sqrt(v / bc2) + eps
            tmp *= t(1 / math.sqrt(bc2))
            tmp += t(self.eps)
            np.divide(m, tmp, out=tmp)  # p -= lr / bc1 * m / denominator
            tmp *= t(step_size)
            p -= tmp

    def _scratch(self, k, p):
        """One reusable buffer per parameter for the intermediate results of step()."""
        if k not in self._tmp or self._tmp[k].shape != p.shape or self._tmp[k].dtype != p.dtype:
            self._tmp[k] = np.empty_like(p)
        return self._tmp[k]

    def state_dict(self):
        """JSON-able hyperparameters and step count, plus the m and v arrays."""
        hyper = {"name": "AdamW", "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                 "weight_decay": self.weight_decay, "t": self.t}
        return {"hyper": hyper, "slots": {"m": self.m, "v": self.v}}

    def load_state_dict(self, state):
        """Restore from state_dict(), checking that it fits the parameters."""
        hyper, slots = state["hyper"], state["slots"]
        if hyper.get("name") != "AdamW":
            raise ValueError(f"optimizer state is for {hyper.get('name')!r}, not AdamW")
        _check_state_slots(self.params, slots, ("m", "v"))
        self.lr, self.betas, self.eps = hyper["lr"], tuple(hyper["betas"]), hyper["eps"]
        self.weight_decay, self.t = hyper["weight_decay"], int(hyper["t"])
        dt = {k: p.dtype for k, p in self.params.items()}
        self.m = {k: np.array(a, dtype=dt[k]) for k, a in slots["m"].items()}
        self.v = {k: np.array(a, dtype=dt[k]) for k, a in slots["v"].items()}


class SGD:
    """Stochastic gradient descent with optional momentum (PyTorch's form) and weight decay:

        g = g + weight_decay * p   (2-D params only)
        buf = momentum * buf + g;   p -= lr * buf
    """

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings: lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.t = 0
        self.buf = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        """One update of every parameter, in place."""
        _check_grads(self.params, grads)
        self.t += 1
        for k, p in self.params.items():
            t = p.dtype.type
            g = grads[k]
            if self.weight_decay and decays(k, p):
                g = g + t(self.weight_decay) * p
            if self.momentum:
                buf = self.buf[k]
                buf *= t(self.momentum)
                buf += g
                g = buf
            p -= t(self.lr) * g

    def state_dict(self):
        hyper = {"name": "SGD", "lr": self.lr, "momentum": self.momentum,
                 "weight_decay": self.weight_decay, "t": self.t}
        return {"hyper": hyper, "slots": {"momentum": self.buf}}

    def load_state_dict(self, state):
        hyper, slots = state["hyper"], state["slots"]
        if hyper.get("name") != "SGD":
            raise ValueError(f"optimizer state is for {hyper.get('name')!r}, not SGD")
        _check_state_slots(self.params, slots, ("momentum",))
        self.lr, self.momentum = hyper["lr"], hyper["momentum"]
        self.weight_decay, self.t = hyper["weight_decay"], int(hyper["t"])
        self.buf = {k: np.array(a, dtype=self.params[k].dtype)
                    for k, a in slots["momentum"].items()}


def grad_norm(grads):
    """The global L2 norm of all gradients together, computed in float64."""
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm (as PyTorch's
    clip_grad_norm_, which divides by norm + 1e-6). Returns the norm before clipping."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    total = grad_norm(grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total


def cosine_lr(it, lr, min_lr, warmup_iters, lr_decay_iters):
    """nanoGPT's schedule: linear warmup over warmup_iters, then cosine decay from lr to
    min_lr until lr_decay_iters, then min_lr.

        warmup:  lr * (it + 1) / (warmup_iters + 1)
        decay:   min_lr + 0.5 (1 + cos(pi r)) (lr - min_lr),  r = (it - warmup) / (decay - warmup)
    """
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    if lr_decay_iters <= warmup_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
