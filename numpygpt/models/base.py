"""What GPT and Llama share: the bookkeeping around their maths.

A model is its config, a flat dict of parameters, a forward pass, a backward pass and
generation. The maths differs from model to model (models/gpt.py, models/llama.py); the rest
is the same and lives here once:
- building: the config's type, the dtype, a seed for the weights and one for dropout, the
  parameters initialised or loaded (names and shapes checked against the config);
- the parameter count, from the parameter shapes (one formula for every model);
- train/eval mode, num_params, the checks of the token ids a caller passes in;
- generation: the sampling loop around the model's cached forward (a KV cache).

A model class sets `config_class`, `param_shapes(config)` and `init_params(config, rng,
dtype)`, and defines forward, backward and forward_cached.

Shapes: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int, check_memory
from ..io.checkpoint import validate_params
from ..kernels import ops
from .sampling import check_sampling, sample_next


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


def cross_entropy(logits, targets):
    """(loss as a float, its cache) of the softmax cross-entropy; (None, None) without
    targets."""
    if targets is None:
        return None, None
    loss, cache = ops.softmax_cross_entropy_forward(logits, targets)
    return float(loss), cache


class ModelCache(NamedTuple):
    """What a model's forward keeps for its backward."""

    body: tuple  # the caches of the layers from the token ids to the final norm (the model's)
    xf: np.ndarray  # (B, T, C) the final norm's output, the LM head's input
    loss: tuple | None  # softmax cross-entropy (None without targets)


@dataclass
class ModelConfig:
    """The sizes every model here has (nanoGPT's names); a model's config adds its own
    settings. Every problem is a ConfigError (a ValueError): a wrong type (a bool, or 4.0 for
    an int) as much as a wrong value."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build a config from a dict (e.g. a checkpoint's), refusing unknown keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a dict, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(map(str, unknown))}")
        return cls(**d)


class LanguageModel:
    """The bookkeeping of a language model; GPT and Llama add their maths.

    model = GPT(config, seed=0, dtype=np.float32)   # or params=... to start from weights
    logits, loss = model.forward(idx, targets)      # loss is None without targets
    grads = model.backward()                        # {name: gradient}, params' names
    out = model.generate(idx, max_new_tokens)
    """

    config_class = None  # the model's config dataclass

    def __init__(self, config, seed=0, dtype=np.float32, params=None):
        """config: the model's config; seed: for the initial weights and the dropout masks;
        dtype: float32 to train, float64 for gradient checks; params: weights to start from
        instead of the random initialisation (checked against the config)."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        init_ss, dropout_ss = np.random.SeedSequence(seed).spawn(2)
        if params is None:
            n = self.param_count(config)
            check_memory(n * dtype.itemsize, f"the model's parameters ({n:,} in {dtype})")
            self.params = self.init_params(config, np.random.default_rng(init_ss), dtype)
        else:
            self.load_params(params)  # (GPT-2 XL: no seconds and gigabytes of random init)
        self.rng = np.random.default_rng(dropout_ss)  # dropout masks
        self.training = True
        self._cache = None

    @classmethod
    def param_count(cls, config):
        """The number of parameters of a model of `config`, without building it, from
        param_shapes: the count with one block, plus (n_layer - 1) times what a second
        block adds (so a config claiming a billion layers costs two small dicts)."""
        def count(n_layer):
            shapes = cls.param_shapes(dataclasses.replace(config, n_layer=n_layer))
            return sum(math.prod(s) for s in shapes.values())

        one = count(1)
        return one + (config.n_layer - 1) * (count(2) - one)

    # --- bookkeeping ---------------------------------------------------------------------

    def train(self, mode=True):
        """Training mode: dropout active (if the model has dropout)."""
        self.training = mode
        return self

    def eval(self):
        """Evaluation mode: no dropout."""
        return self.train(False)

    def num_params(self):
        """Total number of parameters (a tied head shares its array: counted once)."""
        return int(sum(p.size for p in self.params.values()))

    def load_params(self, params):
        """Replace the parameters after checking their names and shapes against the config
        (a ValueError lists every mismatch); they are converted to the model's dtype."""
        expected = self.param_shapes(self.config)
        validate_params(params, expected, what="the given")
        self.params = {k: np.array(params[k], dtype=self.dtype) for k in expected}
        self._cache = None

    def attention_probs(self):
        """The attention probabilities of the last forward call, one (B, nh, T, T) array per
        layer (row t: how much position t looked at each position s <= t). For plotting."""
        if self._cache is None:
            raise RuntimeError("attention_probs() needs a forward() call first")
        return [block.probs for block in self._cache.body.blocks]

    def _loss_cache(self):
        """The last forward call's cache, for backward: an error if there is none, or if that
        call had no targets."""
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        if self._cache.loss is None:
            raise RuntimeError("backward() needs a loss: call forward(idx, targets) first")
        return self._cache

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
        - use_cache: keep the keys and values of past tokens (a KV cache, forward_cached) and
          compute only the new token each step. False recomputes the whole context every
          step: the simple path, slower, same tokens.

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
        B, T = idx.shape
        check_memory(B * (T + max_new_tokens) * 8, f"{max_new_tokens:,} new tokens")
        out = np.empty((B, T + max_new_tokens), dtype=np.int64)  # the prompt, then the new ones
        out[:, :T] = idx
        was_training, self.training = self.training, False  # no dropout while sampling
        past = None  # the KV cache: per layer (k, v), each (B, heads, T_past, hs)
        try:
            for t in range(T, T + max_new_tokens):  # out[:, :t] is known, out[:, t] is next
                if not use_cache:
                    logits = self.forward(out[:, max(0, t - block):t])[0][:, -1, :]  # (B, V)
                elif past is None or past[0][0].shape[2] + 1 > block:
                    # empty cache, or the window is full and slides: positions shift, so the
                    # cached keys are stale; start over from the last block_size tokens
                    logits, past = self.forward_cached(out[:, max(0, t - block):t])
                else:
                    logits, past = self.forward_cached(out[:, t - 1:t], past)  # the new token
                out[:, t] = sample_next(logits, temperature, top_k, top_p, rng)  # (B,)
        finally:
            self.training = was_training
            self._cache = None
        return out
