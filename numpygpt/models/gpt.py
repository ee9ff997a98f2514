"""The GPT: token + position embeddings, a stack of pre-LayerNorm transformer blocks, a final
layer norm and a language-model head tied to the token embedding (GPT-2's architecture).

    x = drop(wte[idx] + pos)                              (B, T, C)
    for each block:  x = x + drop(attn(ln_1(x)));  x = x + drop(mlp(ln_2(x)))
    logits = ln_f(x) @ wte.T                              (B, T, V)

(drop is dropout with probability config.dropout while training, the identity otherwise;
attention also drops some of its probabilities.)

Every gradient comes from the layers' own backward passes; the model only chains them and adds
up the contributions where a tensor is used twice (the residual stream and the tied wte).

Shapes: B batch, T time, C channels (n_embd), V vocabulary, nh heads, L layers.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int, check_real
from ..io.checkpoint import validate_params

POS_ENCODINGS = ("learned", "sinusoidal")
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # every linear map


@dataclass
class GPTConfig:
    """The model's hyperparameters (nanoGPT's names)."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    pos_encoding: str = "learned"  # or "sinusoidal"

    def __post_init__(self):
        # Every problem is a ConfigError (a ValueError): a wrong type (dropout="0.1", a bool
        # or 4.0 for an int) as much as a wrong value.
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        self.dropout = check_real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if not isinstance(self.pos_encoding, str) or self.pos_encoding not in POS_ENCODINGS:
            raise ConfigError(f"pos_encoding must be one of {POS_ENCODINGS}, "
                              f"got {self.pos_encoding!r}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build a config from a dict (e.g. a checkpoint's), refusing unknown keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a dict, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(map(str, unknown))}")
        return cls(**d)


def param_shapes(cfg):
    """Name -> shape of every parameter, in GPT-2's names and (in, out) weight layout."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes = {"wte.weight": (V, C)}
    if cfg.pos_encoding == "learned":
        shapes["wpe.weight"] = (cfg.block_size, C)
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (C, 4 * C), p + "mlp.c_fc.bias": (4 * C,),
            p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


def param_count(cfg):
    """The number of parameters of a model with config `cfg`, without building it: per block
    12 C^2 + 13 C (four linear maps and two layer norms), plus the embeddings and ln_f."""
    C = cfg.n_embd
    pos = cfg.block_size * C if cfg.pos_encoding == "learned" else 0
    return cfg.vocab_size * C + pos + cfg.n_layer * (12 * C * C + 13 * C) + 2 * C


def machine_memory():
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(nbytes, what):
    """Raise ConfigError if `nbytes` (an estimate) is more than this machine's RAM: refusing
    before allocating beats a MemoryError, or a machine swapping for minutes, after."""
    ram = machine_memory()
    if ram is not None and nbytes > ram:
        raise ConfigError(f"{what} would need about {nbytes / 1e9:,.1f} GB but this machine has "
                          f"{ram / 1e9:,.1f} GB of RAM; choose a smaller model or batch")


def init_params(cfg, rng, dtype=np.float32):
    """GPT-2 initialisation: N(0, 0.02) for weights and embeddings, with the residual
    projections (c_proj) scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does
    not grow with depth; biases 0; layer-norm gains 1."""
    params = {}
    resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for name, shape in param_shapes(cfg).items():
        if ".ln_" in name or name.startswith("ln_"):
            value = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        elif name.endswith("bias"):
            value = np.zeros(shape)
        else:
            std = resid_std if name.endswith("c_proj.weight") else 0.02
            value = rng.normal(0.0, std, size=shape)
        params[name] = value.astype(dtype)
    return params


def check_idx(idx, cfg, name="idx", crop=False):
    """Raise TypeError/ValueError unless idx is an integer (B, T) array, B >= 1, T >= 1, with
    ids in [0, vocab_size) and T <= block_size (unless crop: generate keeps the last
    block_size tokens)."""
    if not isinstance(idx, np.ndarray) or not np.issubdtype(idx.dtype, np.integer):
        got = idx.dtype if isinstance(idx, np.ndarray) else type(idx).__name__
        raise TypeError(f"{name} must be an integer numpy array of token ids, got {got}")
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, T) with T >= 1, got {idx.shape}")
    if idx.shape[0] == 0:  # NumPy would fail later with "cannot reshape"
        raise ValueError(f"{name} holds no sequences: shape {idx.shape}, need B >= 1")
    if not crop and idx.shape[1] > cfg.block_size:
        raise ValueError(f"sequence length T={idx.shape[1]} exceeds block_size={cfg.block_size}")
    L.check_token_ids(idx, cfg.vocab_size, name)


class BlockCache(NamedTuple):
    """What one transformer block's forward keeps for its backward (the layers' caches)."""

    ln_1: tuple  # layer norm before attention; ln_1.x is the block's input
    c_attn: tuple  # the qkv projection (a linear or LoRA cache)
    attn: L.AttentionCoreCache  # the heads; attn.probs: attention probabilities (B, nh, T, T)
    c_proj: tuple  # attention's output projection
    attn_drop: np.ndarray | None  # dropout mask on the attention branch's output
    ln_2: tuple  # layer norm before the MLP
    c_fc: tuple  # the MLP's first linear map (C -> 4C)
    gelu: tuple  # GELU's cache; gelu[0] is its input h (B, T, 4C)
    mlp_proj: tuple  # the MLP's second linear map (4C -> C)
    mlp_drop: np.ndarray | None  # dropout mask on the MLP branch's output


class ModelCache(NamedTuple):
    """What GPT.forward (or GPT.classify) keeps for GPT.backward, in forward order."""

    wte: tuple  # embedding lookup
    pos: tuple | None  # positional encoding (None: sinusoidal, nothing to remember)
    emb_drop: np.ndarray | None  # dropout mask on the embeddings
    blocks: list  # one BlockCache per layer
    ln_f: tuple  # final layer norm
    xf: np.ndarray  # (B, T, C) ln_f's output, the head's input
    head: str  # "lm" (forward: logits over the vocabulary) or "classifier" (classify)
    classifier: tuple | None  # the classification head's cache (classify only)
    loss: tuple | None  # softmax cross-entropy (None without targets)


class GPT:
    """A GPT-2-style language model with hand-written backward passes.

    model = GPT(cfg, seed=0, dtype=np.float32)
    logits, loss = model.forward(idx, targets)   # loss is None without targets
    grads = model.backward()                     # dict with the names in model.trainable

    Fine-tuning: model.trainable (default: every parameter) names what backward computes
    gradients for; model.add_lora(...) adds low-rank adapters and trains only them, and
    model.merge_lora() folds them back into plain weights; model.add_classifier(K) adds a
    head for model.classify(idx, lengths, labels), after which backward() works the same.
    """

    def __init__(self, config, seed=0, dtype=np.float32, params=None):
        """config: a GPTConfig; seed: for the initial weights and the dropout masks;
        dtype: float32 to train, float64 for gradient checks; params: weights to start from
        instead of the random initialisation (checked against the config)."""
        if not isinstance(config, GPTConfig):
            raise TypeError("config must be a GPTConfig")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        if params is None:
            check_memory(param_count(config) * dtype.itemsize, f"the model's parameters "
                         f"({param_count(config):,} in {dtype})")
        init_ss, dropout_ss = np.random.SeedSequence(seed).spawn(2)
        if params is None:
            self.params = init_params(config, np.random.default_rng(init_ss), dtype)
        else:
            self.load_params(params)  # (GPT-2 XL: no seconds and gigabytes of random init)
        self.lora = {}  # "h.{i}.<target>" -> scale alpha / r, one entry per adapter
        self._trainable = frozenset(self.params)  # see the trainable property
        self.rng = np.random.default_rng(dropout_ss)  # dropout masks
        self.training = True
        self._cache = None

    # --- bookkeeping ---------------------------------------------------------------------

    def train(self, mode=True):
        """Training mode: dropout active (if config.dropout > 0)."""
        self.training = mode
        return self

    def eval(self):
        """Evaluation mode: no dropout."""
        return self.train(False)

    def num_params(self):
        """Total number of parameters (wte counted once: the LM head shares it)."""
        return int(sum(p.size for p in self.params.values()))

    def load_params(self, params):
        """Replace the parameters after checking their names and shapes against the config
        (a ValueError lists every mismatch); they are converted to the model's dtype."""
        expected = param_shapes(self.config)
        validate_params(params, expected, what="the given")
        self.params = {k: np.array(params[k], dtype=self.dtype) for k in expected}
        self.lora, self._trainable = {}, frozenset(self.params)  # plain weights, all trained
        self._cache = None

    # --- fine-tuning: what trains, and LoRA adapters ---------------------------------------

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
        self._trainable = frozenset(k for k in self.params if ".lora_" in k
                                    or k.startswith("score."))
        self._cache = None

    def add_classifier(self, n_classes, seed=0):
        """Add a classification head, params "score.weight" (C, n_classes) and "score.bias"
        (n_classes,), read by classify(). The weight starts as N(0, 0.02) like GPT-2's other
        weights (from np.random.default_rng(seed)), the bias at 0. model.trainable gains the
        head: a new head always trains (the rest keeps its setting; freeze it with
        model.trainable = {"score.weight", "score.bias"})."""
        n_classes = check_int("n_classes", n_classes, minimum=2)
        if "score.weight" in self.params:
            raise ConfigError("this model already has a classification head")
        rng = np.random.default_rng(seed)
        C = self.config.n_embd
        self.params["score.weight"] = rng.normal(0.0, 0.02, (C, n_classes)).astype(self.dtype)
        self.params["score.bias"] = np.zeros(n_classes, self.dtype)
        self._trainable = self._trainable | {"score.weight", "score.bias"}
        self._cache = None

    def _lora_delta(self, name):
        """scale * A @ B (in, out): the adapter of linear map `name` as a weight update."""
        p = self.params
        return self.lora[name] * (p[name + ".lora_A"] @ p[name + ".lora_B"])

    def merge_lora(self):
        """Fold every adapter into its weight, w += scale * A @ B, and remove the adapters:
        the model computes the same logits (forward already used w + scale * A @ B), is a
        plain GPT-2 again (save_pretrained works) and trains every parameter."""
        if not self.lora:
            raise ConfigError("no LoRA adapters to merge (none added, or merged already)")
        for name in self.lora:
            self.params[name + ".weight"] += self._lora_delta(name)
            del self.params[name + ".lora_A"], self.params[name + ".lora_B"]
        self.lora = {}
        self._trainable = frozenset(self.params)
        self._cache = None

    def _weights(self):
        """The weights generation uses: params, with every adapted w replaced by
        w + scale * A @ B (a new array; params keep the frozen w). The same function as
        lora_forward's x @ w + scale * (x @ A) @ B, folded once per generate() call, so each
        new token costs what it costs without adapters. (Training keeps them apart: the
        adapter's own gradients need x @ A, and no dw is computed for the frozen w.)"""
        if not self.lora:
            return self.params
        return {**self.params, **{name + ".weight": self.params[name + ".weight"]
                                  + self._lora_delta(name) for name in self.lora}}

    @classmethod
    def from_pretrained(cls, path_or_name, dtype=np.float32, cache_dir=None):
        """Load GPT-2 weights: a Hugging Face folder (config.json + model.safetensors) or a
        name ("gpt2", "gpt2-medium", ...; downloaded once into the cache).
        See numpygpt.io.hf_gpt2."""
        # numpygpt.io.hf_gpt2 builds on this module; these two wrappers import it when called, never
        # at load time, so imports flow one way: hf -> model.
        from ..io.hf_gpt2 import from_pretrained

        return from_pretrained(path_or_name, dtype=dtype, cache_dir=cache_dir)

    def save_pretrained(self, folder, tokenizer=None):
        """Write a folder that Hugging Face's GPT2LMHeadModel.from_pretrained loads (and, with
        a GPT-2-style BPE tokenizer, its vocab.json + merges.txt). See numpygpt.io.hf_gpt2."""
        from ..io.hf_gpt2 import save_pretrained

        return save_pretrained(self, folder, tokenizer=tokenizer)

    def attention_probs(self):
        """The attention probabilities of the last forward call, one (B, nh, T, T) array per
        layer (row t: how much position t looked at each position s <= t). For plotting."""
        if self._cache is None:
            raise RuntimeError("attention_probs() needs a forward() call first")
        return [block.attn.probs for block in self._cache.blocks]

    # --- forward and backward ------------------------------------------------------------

    def forward(self, idx, targets=None, *, rng=None):
        """Inputs:
        - idx: int (B, T) token ids, T <= block_size
        - targets: optional int (B, T) next-token ids; -1 marks targets to ignore
        - rng: Generator for the dropout masks (default: the model's own); pass a fresh
          Generator with a fixed seed to get the same masks every call (gradient checks)

        Returns (logits, loss): logits (B, T, V); loss a float, or None without targets.
        """
        cfg = self.config
        check_idx(idx, cfg)
        if targets is not None:
            L.check_targets(targets, idx.shape, cfg.vocab_size)
        self._cache = None
        xf, body = self._body_forward(idx, rng)  # (B, T, C)
        # LM head tied to the token embedding: logits = xf @ wte.T (no bias)
        B, T, C = xf.shape
        logits = (xf.reshape(B * T, C) @ self.params["wte.weight"].T).reshape(B, T, -1)  # (B,T,V)
        loss, loss_cache = _loss(logits, targets)
        self._cache = ModelCache(*body, xf, "lm", None, loss_cache)
        return logits, loss

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
        cfg = self.config
        if "score.weight" not in self.params:
            raise ConfigError("this model has no classification head: call "
                              "model.add_classifier(n_classes) first")
        check_idx(idx, cfg)
        B, T = idx.shape
        K = self.params["score.weight"].shape[1]
        lengths = _check_labels("lengths", lengths, B, 1, T)
        if labels is not None:
            labels = _check_labels("labels", labels, B, 0, K - 1)
        self._cache = None
        xf, body = self._body_forward(idx, rng)  # (B, T, C)
        logits, head = L.classifier_forward(xf, lengths, self.params["score.weight"],
                                            self.params["score.bias"])  # (B, K)
        loss, loss_cache = _loss(logits, labels)
        self._cache = ModelCache(*body, xf, "classifier", head, loss_cache)
        return logits, loss

    def _body_forward(self, idx, rng):
        """Embeddings, blocks and ln_f: idx (B, T) -> (xf (B, T, C), the caches for backward:
        wte, pos, emb_drop, blocks, ln_f)."""
        cfg, p = self.config, self.params
        pdrop = float(cfg.dropout) if self.training else 0.0
        rng = self.rng if rng is None else rng

        x, wte_cache = L.embedding_forward(idx, p["wte.weight"])  # (B, T, C)
        if cfg.pos_encoding == "learned":
            x, pos_cache = L.learned_positional_forward(x, p["wpe.weight"])
        else:
            x, pos_cache = L.sinusoidal_positional_forward(x)
        x, emb_drop = L.dropout_forward(x, pdrop, rng)

        blocks = []
        for i in range(cfg.n_layer):
            x, block_cache = self._block_forward(i, x, pdrop, rng)
            blocks.append(block_cache)

        xf, ln_f = L.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])  # (B, T, C)
        return xf, (wte_cache, pos_cache, emb_drop, blocks, ln_f)

    def backward(self):
        """Gradients of the mean loss of the last forward(idx, targets) (or classify(idx,
        lengths, labels)) call: its steps in reverse order, each layer's backward taking the
        cache its forward kept.

        Frozen parameters (not in model.trainable) get no gradient, and work that serves
        only them is skipped: the dw product of every frozen linear map, the head's dwte
        product when wte is frozen, and everything below the lowest trainable parameter.
        An adapted linear map trains its LoRA A and B only (lora_backward).

        Returns a dict with the names in model.trainable, in params order.
        """
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        cache = self._cache
        if cache.loss is None:
            raise RuntimeError("backward() needs a loss: call forward(idx, targets) "
                               "(or classify(idx, lengths, labels)) first")
        cfg, p, train = self.config, self.params, self._trainable
        grads = {}
        dlogits = L.softmax_cross_entropy_backward(1.0, cache.loss)  # (B, T, V) or (B, K)
        if cache.head == "classifier":
            dxf, grads["score.weight"], grads["score.bias"] = L.classifier_backward(
                dlogits, cache.classifier)  # (B, T, C): zero except the last real tokens
        else:
            B, T, V = dlogits.shape
            C = cfg.n_embd
            dlogits2 = dlogits.reshape(B * T, V)
            # logits = xf @ wte.T  =>  dxf = dlogits @ wte,  dwte (head part) = dlogits.T @ xf
            dxf = (dlogits2 @ p["wte.weight"]).reshape(B, T, C)
            if "wte.weight" in train:
                grads["wte.weight"] = dlogits2.T @ cache.xf.reshape(B * T, C)  # (V, C)

        # How far down the backward pass must go: to the embeddings if one of them trains,
        # else to the lowest block with a trainable parameter (stop = n_layer: none).
        embeddings = {"wte.weight", "wpe.weight"} & train
        stop = 0 if embeddings else min(
            (i for i in range(cfg.n_layer) if any(k.startswith(f"h.{i}.") for k in train)),
            default=cfg.n_layer)
        if stop < cfg.n_layer or {"ln_f.weight", "ln_f.bias"} & train:
            dx, grads["ln_f.weight"], grads["ln_f.bias"] = L.layernorm_backward(dxf, cache.ln_f)
        for i in reversed(range(stop, cfg.n_layer)):
            dx = self._block_backward(i, dx, cache.blocks[i], grads)

        if embeddings:
            dx = L.dropout_backward(dx, cache.emb_drop)
            if cfg.pos_encoding == "learned":
                dx, grads["wpe.weight"] = L.learned_positional_backward(dx, cache.pos)
            if "wte.weight" in train:
                # wte is used twice, by the lookup and by the LM head: its gradient is the sum,
                # the lookup's added into the head's (classify() has no LM head: a new array)
                grads["wte.weight"] = L.embedding_backward(dx, cache.wte,
                                                           out=grads.get("wte.weight"))
        return {k: grads[k] for k in p if k in train}  # same order as params

    # One transformer block, forward and backward side by side: each backward line undoes the
    # forward line with the same names (x_mid, ln2, qkv, ...), read bottom to top. Its four
    # linear maps go through _linear_forward/_linear_backward: a plain linear layer, a frozen
    # one (no dw), or one with a LoRA adapter.

    def _block_forward(self, i, x_in, pdrop, rng):
        """Block i: x_mid = x_in + drop(attn(ln_1(x_in))), then
        x_out = x_mid + drop(mlp(ln_2(x_mid))). Returns (x_out, BlockCache)."""
        pre, p = f"h.{i}.", self.params
        ln1, ln_1 = L.layernorm_forward(x_in, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        # attention = c_attn, the heads, c_proj (layers.attention_forward, in three steps)
        qkv, c_attn = self._linear_forward(pre + "attn.c_attn", ln1)  # (B, T, 3C)
        y, attn = L.attention_core_forward(qkv, self.config.n_head, pdrop, rng)  # (B, T, C)
        a, c_proj = self._linear_forward(pre + "attn.c_proj", y)  # (B, T, C)
        a, attn_drop = L.dropout_forward(a, pdrop, rng)
        x_mid = x_in + a  # residual: the block adds to the stream, it does not replace it
        ln2, ln_2 = L.layernorm_forward(x_mid, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        # MLP = c_fc, GELU, c_proj (layers.mlp_forward, in three steps)
        h, c_fc = self._linear_forward(pre + "mlp.c_fc", ln2)  # (B, T, 4C)
        g, gelu = L.gelu_forward(h)  # (B, T, 4C)
        m, mlp_proj = self._linear_forward(pre + "mlp.c_proj", g)  # (B, T, C)
        m, mlp_drop = L.dropout_forward(m, pdrop, rng)
        x_out = x_mid + m  # (B, T, C)
        return x_out, BlockCache(ln_1, c_attn, attn, c_proj, attn_drop, ln_2, c_fc, gelu,
                                 mlp_proj, mlp_drop)

    def _block_backward(self, i, dx_out, cache, grads):
        """Backward through block i, given dx_out (B, T, C), the gradient of its output.
        Stores the gradients of block i's parameters in `grads`; returns dx_in (B, T, C)."""
        pre = f"h.{i}."
        # x_out = x_mid + m: the gradient reaches x_mid directly and through the MLP branch
        dm = L.dropout_backward(dx_out, cache.mlp_drop)
        dg = self._linear_backward(pre + "mlp.c_proj", dm, cache.mlp_proj, grads)
        dh = L.gelu_backward(dg, cache.gelu)
        dln2 = self._linear_backward(pre + "mlp.c_fc", dh, cache.c_fc, grads)
        dx_mid_branch, grads[pre + "ln_2.weight"], grads[pre + "ln_2.bias"] = \
            L.layernorm_backward(dln2, cache.ln_2)
        dx_mid = dx_out + dx_mid_branch
        # x_mid = x_in + a: likewise through the attention branch
        da = L.dropout_backward(dx_mid, cache.attn_drop)
        dy = self._linear_backward(pre + "attn.c_proj", da, cache.c_proj, grads)
        dqkv = L.attention_core_backward(dy, cache.attn)
        dln1 = self._linear_backward(pre + "attn.c_attn", dqkv, cache.c_attn, grads)
        dx_in_branch, grads[pre + "ln_1.weight"], grads[pre + "ln_1.bias"] = \
            L.layernorm_backward(dln1, cache.ln_1)
        return dx_mid + dx_in_branch

    def _linear_forward(self, name, x):
        """The linear map `name` ("h.0.attn.c_attn", ...) applied to x: x @ w + b, plus
        scale * (x @ A) @ B when it has a LoRA adapter. Returns (out, cache)."""
        p = self.params
        w, b = p[name + ".weight"], p[name + ".bias"]
        if name in self.lora:
            return L.lora_forward(x, w, b, p[name + ".lora_A"], p[name + ".lora_B"],
                                  self.lora[name])
        return L.linear_forward(x, w, b)

    def _linear_backward(self, name, dout, cache, grads):
        """Backward of _linear_forward: stores the gradients of what trains (the adapter's
        A and B, or w and b) in `grads`, computes no dw for a frozen w. Returns dx."""
        if name in self.lora:
            dx, grads[name + ".lora_A"], grads[name + ".lora_B"] = L.lora_backward(dout, cache)
            return dx
        w, b = name + ".weight", name + ".bias"
        if w in self._trainable or b in self._trainable:
            dx, grads[w], grads[b] = L.linear_backward(dout, cache)
            return dx
        return L.linear_backward(dout, cache, frozen=True)[0]

    # --- generation ----------------------------------------------------------------------

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                 use_cache=True):
        """Continue the sequences in idx by sampling one token at a time.

        Inputs:
        - idx: int (B, T) prompt ids (T >= 1; only the last block_size tokens are looked at)
        - max_new_tokens: how many tokens to add
        - temperature: divides the logits; < 1 sharper, > 1 flatter, 0 = greedy (argmax)
        - top_k: sample only among the k most likely tokens
        - top_p: sample only among the smallest set of tokens whose probability sums to >= p
        - seed: seed of the sampling Generator (None: fresh entropy)
        - use_cache: keep the keys and values of past tokens (a KV cache) and compute only the
          new token each step. False recomputes the whole context every step: the simple
          path, slower, same tokens.

        Returns int (B, T + max_new_tokens).
        """
        check_idx(idx, self.config, crop=True)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, "
                             f"got {max_new_tokens!r}")
        check_sampling(temperature, top_k, top_p)
        rng = np.random.default_rng(seed)
        block = self.config.block_size
        was_training, self.training = self.training, False  # no dropout while sampling
        try:
            p = self._weights()  # once per call: adapters (if any) folded into the weights
            out = idx.astype(np.int64)
            past = None  # the KV cache: per layer (k, v), each (B, nh, T_past, hs)
            for _ in range(max_new_tokens):
                if not use_cache:
                    logits, _ = self.forward(out[:, -block:])  # (B, T, V)
                    logits = logits[:, -1, :]
                elif past is None or past[0][0].shape[2] + 1 > block:
                    # empty cache, or the window is full and slides: positions shift, so the
                    # cached keys are stale; start over from the last block_size tokens
                    logits, past = self._forward_cached(out[:, -block:], None, p)
                else:
                    logits, past = self._forward_cached(out[:, -1:], past, p)  # the new token
                nxt = sample_next(logits, temperature, top_k, top_p, rng)  # (B,)
                out = np.concatenate([out, nxt[:, None]], axis=1)
        finally:
            self.training = was_training
            self._cache = None
        return out

    def _forward_cached(self, idx, past, p):
        """The forward pass for generation, with a KV cache: new tokens idx (B, T_new) given
        `past` (per layer (k, v), each (B, nh, T_past, hs); None when empty) and the weights
        p (model._weights()).

        The same layers in the same order as forward and _block_forward, with four
        differences: the positions start at T_past instead of 0; each block calls
        attention_cached_forward (the keys and values of earlier tokens come from `past`)
        instead of attention_forward; there is no dropout and no cache for a backward pass;
        and ln_f and the LM head run on the last position only (the one we sample from).
        tests/test_model.py checks that both paths generate the same tokens.

        Returns (logits of the last position (B, V), the updated cache).
        """
        cfg = self.config
        T_past = 0 if past is None else past[0][0].shape[2]
        T_new = idx.shape[1]
        x = p["wte.weight"][idx]  # (B, T_new, C)
        if cfg.pos_encoding == "learned":
            x = x + p["wpe.weight"][T_past:T_past + T_new]
        else:
            x = x + L.sinusoidal_table(T_past + T_new, cfg.n_embd, x.dtype)[T_past:]
        new_past = []
        for i in range(cfg.n_layer):
            pre = f"h.{i}."
            ln1, _ = L.layernorm_forward(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
            a, kv = L.attention_cached_forward(
                ln1, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"],
                p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"], cfg.n_head,
                None if past is None else past[i])
            new_past.append(kv)
            x = x + a
            ln2, _ = L.layernorm_forward(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
            m, _ = L.mlp_forward(ln2, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"],
                                 p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
            x = x + m
        xf, _ = L.layernorm_forward(x[:, -1, :], p["ln_f.weight"], p["ln_f.bias"])  # (B, C)
        return xf @ p["wte.weight"].T, new_past  # (B, V)


def _loss(logits, targets):
    """(loss as a float, its cache) of the softmax cross-entropy; (None, None) without
    targets."""
    if targets is None:
        return None, None
    loss, cache = L.softmax_cross_entropy_forward(logits, targets)
    return float(loss), cache


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


def check_sampling(temperature, top_k, top_p):
    """Raise ConfigError (a ValueError) for sampling settings that make no sense."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not temperature >= 0 or not math.isfinite(temperature):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float,
                                                                              np.number))
                              or not 0.0 < top_p <= 1.0):
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Draw one token id per row of logits (B, V). Returns int64 (B,)."""
    logits = logits.astype(np.float64)  # sampling is cheap; float64 keeps tiny probs honest
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]  # (B, 1) k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)  # (B, V)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep a token if the mass *before* it is still < top_p (so the top token always stays)
        keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    rng = rng if rng is not None else np.random.default_rng()
    u = rng.random((probs.shape[0], 1))  # inverse-CDF sampling, one uniform per row
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), probs.shape[-1] - 1)
