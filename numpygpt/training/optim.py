"""Optimizers, hand-coded: AdamW (what GPTs train with), SGD with momentum (to compare),
gradient-norm clipping and nanoGPT's warmup + cosine learning-rate schedule.

Each optimizer updates `params` (a dict name -> array) in place from `grads` (same keys).

AdamW's update of one tensor is maths on arrays like a layer's: read it in layers/adamw.py
(the textbook form, plain). The optimizer here keeps the state (m, v, the step count t) and
applies the update the kernel table holds (numpygpt.kernels: by default the fast twin, the
same numbers in place without temporaries) to every parameter.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, check_int, check_real
from ..kernels import ops
from ..layers.adamw import decays


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


def _check_betas(betas):
    """A pair (b1, b2) of finite numbers in [0, 1)."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ConfigError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(check_real(f"beta{i + 1}", b, 0.0, 1.0, high_open=True)
                 for i, b in enumerate(betas))


def _check_hyper(hyper, name, keys):
    """The hyperparameters of a saved optimizer state: a dict naming `name`, with `keys`."""
    if not isinstance(hyper, dict):
        raise ValueError(f"optimizer state must hold a dict of hyperparameters, "
                         f"got {type(hyper).__name__}")
    if hyper.get("name") != name:
        raise ValueError(f"optimizer state is for {hyper.get('name')!r}, not {name}")
    missing = [k for k in keys if k not in hyper]
    if missing:
        raise ValueError(f"optimizer state lacks {', '.join(missing)}")


class AdamW:
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter), as PyTorch's
    torch.optim.AdamW computes it (layers/adamw.py, one tensor at a time):

        t += 1
        p *= 1 - lr * weight_decay                     (2-D params only)
        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        # Every hyperparameter is a finite number (nan would turn every weight into nan at
        # the first step, silently); a ConfigError (a ValueError) says which one is wrong.
        self.params = params
        self.lr = check_real("lr", lr, low=0.0)
        self.betas = _check_betas(betas)
        self.eps = check_real("eps", eps, low=0.0)
        if self.eps == 0:
            raise ConfigError("eps must be > 0 (it keeps the update finite where v is 0)")
        self.weight_decay = check_real("weight_decay", weight_decay, low=0.0)
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self._tmp = {}  # scratch buffers for step(), made on first use

    def step(self, grads):
        """One update of every parameter, in place (ops.adamw_update, tensor by tensor)."""
        _check_grads(self.params, grads)
        self.t += 1  # before the bias correction uses it: at t = 1 it divides by (1 - b)
        for k, p in self.params.items():
            ops.adamw_update(p, grads[k], self.m[k], self.v[k], self.t, self.lr, self.betas,
                             self.eps, self.weight_decay, self._scratch(k, p))

    def _scratch(self, k, p):
        """One reusable buffer per parameter, for the fast update to compute in."""
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
        _check_hyper(hyper, "AdamW", ("lr", "betas", "eps", "weight_decay", "t"))
        _check_state_slots(self.params, slots, ("m", "v"))
        # The same rules as the constructor, so a saved state cannot smuggle in a nan
        checked = AdamW({}, hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"])
        self.lr, self.betas, self.eps = checked.lr, checked.betas, checked.eps
        self.weight_decay, self.t = checked.weight_decay, check_int("t", hyper["t"], 0)
        dt = {k: p.dtype for k, p in self.params.items()}
        self.m = {k: np.array(a, dtype=dt[k]) for k, a in slots["m"].items()}
        self.v = {k: np.array(a, dtype=dt[k]) for k, a in slots["v"].items()}


class SGD:
    """Stochastic gradient descent with optional momentum (PyTorch's form) and weight decay:

        g = g + weight_decay * p   (2-D params only)
        buf = momentum * buf + g;   p -= lr * buf
    """

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        self.params = params  # hyperparameters: finite numbers, as for AdamW
        self.lr = check_real("lr", lr, low=0.0)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0, high_open=True)
        self.weight_decay = check_real("weight_decay", weight_decay, low=0.0)
        self.t = 0
        self.buf = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        """One update of every parameter, in place."""
        _check_grads(self.params, grads)
        self.t += 1
        for k, p in self.params.items():
            cast = p.dtype.type
            g = grads[k]
            if self.weight_decay and decays(p):
                g = g + cast(self.weight_decay) * p
            if self.momentum:
                buf = self.buf[k]
                buf *= cast(self.momentum)
                buf += g
                g = buf
            p -= cast(self.lr) * g

    def state_dict(self):
        hyper = {"name": "SGD", "lr": self.lr, "momentum": self.momentum,
                 "weight_decay": self.weight_decay, "t": self.t}
        return {"hyper": hyper, "slots": {"momentum": self.buf}}

    def load_state_dict(self, state):
        hyper, slots = state["hyper"], state["slots"]
        _check_hyper(hyper, "SGD", ("lr", "momentum", "weight_decay", "t"))
        _check_state_slots(self.params, slots, ("momentum",))
        checked = SGD({}, hyper["lr"], hyper["momentum"], hyper["weight_decay"])
        self.lr, self.momentum = checked.lr, checked.momentum
        self.weight_decay, self.t = checked.weight_decay, check_int("t", hyper["t"], 0)
        self.buf = {k: np.array(a, dtype=self.params[k].dtype)
                    for k, a in slots["momentum"].items()}


def grad_norm(grads):
    """The global L2 norm of all gradients together, computed in float64."""
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm (as PyTorch's
    clip_grad_norm_, which divides by norm + 1e-6). Returns the norm before clipping.

    A non-finite norm (an inf or nan gradient somewhere) is returned as it is and the
    gradients are left untouched: scaling by max_norm / inf would zero the finite entries and
    turn the inf ones into nan, hiding where the problem was. The caller decides (train()
    stops with a TrainingError). Integer gradients are refused (TypeError naming the key):
    scaling them in place would round them to zero.
    """
    max_norm = check_real("max_norm", max_norm, low=0.0)
    if max_norm == 0:
        raise ConfigError("max_norm must be positive, got 0")
    for k, g in grads.items():
        if not isinstance(g, np.ndarray) or not np.issubdtype(g.dtype, np.floating):
            got = g.dtype if isinstance(g, np.ndarray) else type(g).__name__
            raise TypeError(f"gradient {k!r} must be a floating-point array, got {got}")
    total = grad_norm(grads)
    if not math.isfinite(total):
        return total
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
