"""The GPT for fine-tuning: the core model (models/gpt.py), extended by composition with what
fine-tuning needs, and not a line of it inside the core.

- what trains: `model.trainable` names the parameters backward computes gradients for; the
  rest is frozen. Frozen work is skipped: no dw product for a frozen linear map, no dwte
  product of the LM head when wte is frozen, and the backward pass stops below the lowest
  block with something to train.
- LoRA adapters (layers/lora.py): `add_lora` gives chosen linear maps a trainable low-rank
  update x A B and freezes everything else; `merge_lora` folds the updates into the weights.
- a classification head (layers/classifier.py): `add_classifier(K)` adds it, `classify` uses
  it (class scores from each sequence's last real token), and backward() then starts there.

The seam it uses: the blocks of GPT reach their four linear maps only through
linear_forward / linear_backward, which this class overrides (a frozen map, an adapted one);
and it composes its own backward from the core's pieces (the heads, block_backward,
embeddings_backward), so the core's forward and backward stay the plain GPT.

Shapes: B batch, T time, C channels, V vocabulary, K classes, r LoRA rank.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int, check_real
from ..kernels import ops
from ..models.base import ModelCache, check_idx, cross_entropy
from ..models.gpt import GPT, LINEAR_MAPS, BodyCache

LORA_TARGETS = LINEAR_MAPS  # every linear map of a block can carry an adapter
HEAD = ("score.weight", "score.bias")  # the classification head's parameters


class ClassifyCache(NamedTuple):
    """What classify() keeps for backward (forward() keeps GPT's, a ModelCache)."""

    body: BodyCache  # embeddings, blocks and ln_f, as GPT.body_forward keeps them
    head: tuple  # the classification head's cache
    loss: tuple | None  # softmax cross-entropy (None without labels)


class FinetuneGPT(GPT):
    """A GPT that fine-tunes: what trains, LoRA adapters, a classification head.

    model = FinetuneGPT(cfg, params=pretrained.params)
    model.trainable = {...}                      # freeze the rest (default: all trains)
    model.add_lora(rank=8)                       # or: adapters train, the weights are frozen
    model.add_classifier(K)                      # and/or: a head for model.classify(...)
    grads = model.backward()                     # the names in model.trainable
    AdamW(model.trainable_params(), ...)         # steps exactly those
    """

    def __init__(self, config, seed=0, dtype=np.float32, params=None):
        super().__init__(config, seed=seed, dtype=dtype, params=params)
        self.lora = {}  # "h.{i}.<target>" -> scale alpha / r, one entry per adapter
        self._trainable = frozenset(self.params)

    @classmethod
    def from_model(cls, model):
        """A FinetuneGPT holding a copy of a GPT's config and weights (its dropout seed
        restarts from 0)."""
        return cls(model.config, dtype=model.dtype, params=model.params)

    def load_params(self, params):
        """GPT.load_params: plain weights, every parameter trains, no adapters."""
        super().load_params(params)
        self.lora, self._trainable = {}, frozenset(self.params)

    # --- what trains ---------------------------------------------------------------------

    @property
    def trainable(self):
        """The names of the parameters backward() computes gradients for (default: all).
        Assign a set of names to freeze the rest, e.g. {"h.3.mlp.c_fc.weight", ...}."""
        return self._trainable

    @trainable.setter
    def trainable(self, names):
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            raise ConfigError(f"trainable must be a set of parameter names, got {names!r}")
        names = frozenset(names)
        unknown = sorted(map(str, names - set(self.params)))
        if unknown:
            raise ConfigError(f"unknown parameter names in trainable: {unknown[:3]}"
                              f"{' ...' if len(unknown) > 3 else ''} (see model.params)")
        if not names:
            raise ConfigError("trainable is empty: nothing would get a gradient")
        adapted = sorted(n for n in names if n.rsplit(".", 1)[0] in self.lora
                         and not n.endswith((".lora_A", ".lora_B")))
        if adapted:
            raise ConfigError(f"{adapted[0]} belongs to a linear map with a LoRA adapter, "
                              "which trains in its place (merge_lora() first to train it)")
        self._trainable = names

    def trainable_params(self):
        """{name: array} of the trainable parameters, in params order: what to hand to the
        optimizer, AdamW(model.trainable_params(), ...), so it steps exactly what backward
        returns (the arrays are the model's own, updated in place)."""
        return {k: p for k, p in self.params.items() if k in self._trainable}

    # --- LoRA ----------------------------------------------------------------------------

    def add_lora(self, rank=8, alpha=16, targets=LORA_TARGETS, seed=0):
        """Add a LoRA adapter (see layers/lora.py) to the linear maps named in `targets` in
        every block, and train only the adapters: model.trainable becomes their names (plus
        the classification head's, if the model has one).

        Adds params "h.{i}.<target>.lora_A" (in, rank) and "...lora_B" (rank, out), scale
        alpha / rank. B starts at 0, so the model computes exactly what it did before. A
        starts as peft's (and the LoRA paper's code's) Kaiming-uniform, U(-1/sqrt(in),
        1/sqrt(in)), drawn from np.random.default_rng(seed): x @ A keeps the size of x's
        entries whatever the width. A must not be 0 too: dB = scale (x A)^T dy would then
        be 0, and dA is proportional to B, so nothing would ever move.
        """
        if self.lora:
            raise ConfigError("this model already has LoRA adapters (merge_lora() first)")
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets:
            raise ConfigError(f"unknown LoRA targets {unknown}; choose from {LORA_TARGETS}")
        rank = check_int("rank", rank, minimum=1)
        alpha = check_real("alpha", alpha, low=0.0)
        if alpha == 0:
            raise ConfigError("alpha must be > 0 (alpha = 0 would switch the adapters off)")
        rng = np.random.default_rng(seed)
        for i in range(self.config.n_layer):
            for t in dict.fromkeys(targets):  # each target once, in the given order
                name = f"h.{i}.{t}"
                Din, Dout = self.params[name + ".weight"].shape
                if rank > min(Din, Dout):
                    raise ConfigError(f"rank={rank} is larger than the layer {t} "
                                      f"({Din} -> {Dout}) allows: at most {min(Din, Dout)}")
                bound = 1.0 / math.sqrt(Din)
                self.params[name + ".lora_A"] = rng.uniform(
                    -bound, bound, (Din, rank)).astype(self.dtype)  # (in, r)
                self.params[name + ".lora_B"] = np.zeros((rank, Dout), self.dtype)  # (r, out)
                self.lora[name] = alpha / rank
        # the adapters train, and a classification head if there is one (it is new: frozen,
        # it would stay random)
        self._trainable = frozenset(k for k in self.params if ".lora_" in k or k in HEAD)
        self._cache = None

    def merge_lora(self):
        """Fold every adapter into its weight, w += scale * A @ B, and remove the adapters:
        the model computes the same logits (forward already used w + scale * A @ B), is a
        plain GPT-2 again (save_pretrained works) and trains every parameter."""
        if not self.lora:
            raise ConfigError("no LoRA adapters to merge (none added, or merged already)")
        p = self.params
        for name, scale in self.lora.items():
            p[name + ".weight"] += scale * (p[name + ".lora_A"] @ p[name + ".lora_B"])
            del p[name + ".lora_A"], p[name + ".lora_B"]
        self.lora = {}
        self._trainable = frozenset(p)
        self._cache = None

    def save_pretrained(self, folder, tokenizer=None):
        """GPT.save_pretrained, for a model without adapters or head (GPT-2's format has no
        place for them; a silent merge of a copy would hide it)."""
        if self.lora:
            raise ValueError("this model has unmerged LoRA adapters; call model.merge_lora() "
                             "first, then save_pretrained writes a plain GPT-2 folder")
        return super().save_pretrained(folder, tokenizer)

    # The seam of GPT: each linear map is plain, frozen (no dw), or adapted (LoRA).

    def linear_forward(self, name, x):
        """x @ w + b, plus scale * (x @ A) @ B when the map has a LoRA adapter."""
        if name in self.lora:
            p = self.params
            return L.lora_forward(x, p[name + ".weight"], p[name + ".bias"],
                                  p[name + ".lora_A"], p[name + ".lora_B"], self.lora[name])
        return super().linear_forward(name, x)

    def linear_backward(self, name, dout, cache, grads):
        """Stores the gradients of what trains (the adapter's A and B, or w and b) in
        `grads`; computes no dw for a frozen w. Returns dx."""
        if name in self.lora:
            dx, grads[name + ".lora_A"], grads[name + ".lora_B"] = L.lora_backward(dout, cache)
            return dx
        if {name + ".weight", name + ".bias"} & self._trainable:
            return super().linear_backward(name, dout, cache, grads)
        return ops.linear_backward(dout, cache, frozen=True)[0]

    # --- the classification head -----------------------------------------------------------

    def add_classifier(self, n_classes, seed=0):
        """Add a classification head, params "score.weight" (C, n_classes) and "score.bias"
        (n_classes,), read by classify(). The weight starts as N(0, 0.02) like GPT-2's other
        weights (from np.random.default_rng(seed)), the bias at 0. model.trainable gains the
        head: a new head always trains (the rest keeps its setting; freeze it with
        model.trainable = {"score.weight", "score.bias"})."""
        n_classes = check_int("n_classes", n_classes, minimum=2)
        if HEAD[0] in self.params:
            raise ConfigError("this model already has a classification head")
        rng = np.random.default_rng(seed)
        C = self.config.n_embd
        self.params[HEAD[0]] = rng.normal(0.0, 0.02, (C, n_classes)).astype(self.dtype)
        self.params[HEAD[1]] = np.zeros(n_classes, self.dtype)
        self._trainable = self._trainable | set(HEAD)
        self._cache = None

    def classify(self, idx, lengths, labels=None, *, rng=None):
        """Class scores from the hidden state of each sequence's last real token (the head
        added by add_classifier; see layers/classifier.py).

        Inputs:
        - idx: int (B, T) token ids, right-padded (any id) after each sequence's end
        - lengths: int (B,), the real length of each sequence, in [1, T]
        - labels: optional int (B,) class ids in [0, n_classes)
        - rng: as in forward

        Returns (logits, loss): logits (B, n_classes); loss a float, or None without labels.
        Then backward() returns the gradients of this loss.
        """
        if HEAD[0] not in self.params:
            raise ConfigError("this model has no classification head: call "
                              "model.add_classifier(n_classes) first")
        check_idx(idx, self.config)
        B, T = idx.shape
        K = self.params[HEAD[0]].shape[1]
        lengths = _check_labels("lengths", lengths, B, 1, T)
        if labels is not None:
            labels = _check_labels("labels", labels, B, 0, K - 1)
        self._cache = None
        xf, body = self.body_forward(idx, rng)  # (B, T, C)
        logits, head = L.classifier_forward(xf, lengths, self.params[HEAD[0]],
                                            self.params[HEAD[1]])  # (B, K)
        loss, loss_cache = cross_entropy(logits, labels)
        self._cache = ClassifyCache(body, head, loss_cache)
        return logits, loss

    # --- backward: the core's pieces, only as far down as something trains ---------------

    def backward(self, dlogits=None):
        """Gradients of the mean loss of the last forward(idx, targets) or classify(idx,
        lengths, labels) call, for the parameters in model.trainable only. Or, with dlogits
        (B, T, V): of any loss of the last forward(idx)'s logits, given its gradient with
        respect to them (a loss computed outside the model: preference tuning's, dpo.py).

        The work that serves only frozen parameters is skipped: the dw product of every
        frozen linear map, the head's dwte product when wte is frozen, and everything below
        the lowest trainable parameter. An adapted linear map trains its LoRA A and B only.

        Returns a dict with the names in model.trainable, in params order.
        """
        cfg, p, train = self.config, self.params, self._trainable
        grads = {}
        if dlogits is None:
            cache = self._loss_cache()
            dlogits = ops.softmax_cross_entropy_backward(1.0, cache.loss)  # (B, T, V) or (B, K)
        else:
            cache = self._cache
            if not isinstance(cache, ModelCache) or dlogits.shape[:2] != cache.xf.shape[:2]:
                raise RuntimeError("backward(dlogits) needs a forward(idx) call first, and "
                                   "dlogits of the shape of its logits")
        if isinstance(cache, ClassifyCache):
            dxf, grads[HEAD[0]], grads[HEAD[1]] = L.classifier_backward(dlogits, cache.head)
        else:  # the LM head: logits = xf @ wte.T
            B, T, V = dlogits.shape
            dlogits2 = dlogits.reshape(B * T, V)
            dxf = (dlogits2 @ p["wte.weight"]).reshape(B, T, cfg.n_embd)  # (B, T, C)
            if "wte.weight" in train:
                grads["wte.weight"] = dlogits2.T @ cache.xf.reshape(B * T, -1)  # (V, C)
        # How far down the backward pass must go: to the embeddings if one of them trains,
        # else to the lowest block with a trainable parameter (stop = n_layer: none).
        embeddings = {"wte.weight", "wpe.weight"} & train
        stop = 0 if embeddings else min(
            (i for i in range(cfg.n_layer) if any(k.startswith(f"h.{i}.") for k in train)),
            default=cfg.n_layer)
        body = cache.body
        if stop < cfg.n_layer or {"ln_f.weight", "ln_f.bias"} & train:
            dx = self.layernorm_backward("ln_f", dxf, body.ln_f, grads)
        for i in reversed(range(stop, cfg.n_layer)):
            dx = self.block_backward(i, dx, body.blocks[i], grads)
        if embeddings:
            self.embeddings_backward(dx, body, grads)
        return {k: grads[k] for k in p if k in train}  # same order as params


def _check_labels(name, values, B, low, high):
    """values as an int64 (B,) array with every entry in [low, high], else a ValueError."""
    if not isinstance(values, np.ndarray) or not np.issubdtype(values.dtype, np.integer):
        got = values.dtype if isinstance(values, np.ndarray) else type(values).__name__
        raise TypeError(f"{name} must be an integer numpy array, got {got}")
    if values.shape != (B,):
        raise ValueError(f"{name} must have shape ({B},), one per sequence, got {values.shape}")
    bad = (values < low) | (values > high)
    if bad.any():
        raise ValueError(f"{name}[{int(np.argmax(bad))}] = {values[bad][0]} is outside "
                         f"[{low}, {high}]")
    return values.astype(np.int64)


__all__ = ["FinetuneGPT", "LORA_TARGETS", "HEAD"]
