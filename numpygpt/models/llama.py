"""A Llama: GPT-2's decoder with four changes, each a layer of its own (numpygpt/layers).

    x = embed_tokens[idx]                                           (B, T, C)   no position table
    for each layer:
        x = x + o_proj(gqa(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rmsnorm(x)
        x = x + down_proj(silu(gate_proj(h)) * up_proj(h)),                 h = rmsnorm(x)
    logits = rmsnorm(x) @ lm_head                                   (B, T, V)

- positions: rotary (RoPE, layers/rope.py) inside attention, instead of GPT-2's learned wpe
  added to the input;
- normalisation: RMSNorm (layers/rmsnorm.py), no mean and no bias, instead of layer norm;
- MLP: SwiGLU (layers/swiglu.py), a gated MLP with three matrices, instead of GELU's two;
- attention: grouped-query (layers/gqa.py), n_kv_head key/value heads shared by n_head
  query heads, no biases;
- and an LM head of its own (lm_head, (C, V)) unless tie_embeddings, no dropout.

Parameter names are Hugging Face's LlamaForCausalLM's (model.embed_tokens.weight,
model.layers.0.self_attn.q_proj.weight, ...), with every linear weight stored (in, out) as
everywhere in numpygpt: numpygpt.io.hf_llama transposes them on load and save.

The API is GPT's (model.py): forward, backward, generate, params, num_params, train/eval,
from_pretrained/save_pretrained; so the training loop drives either model.

Shapes: B batch, T time, C channels (n_embd), V vocabulary, nh query heads, nkv key/value
heads, hs = C // nh head size, I intermediate size (the MLP's hidden units), L layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int, check_real
from ..io.checkpoint import validate_params
from .gpt import check_idx, check_memory, check_sampling, sample_next


@dataclass
class LlamaConfig:
    """The model's hyperparameters. The defaults are a "baby" Llama sized like GPT's baby
    preset (4 layers, 4 heads, C = 128): 2 key/value heads, and I = 384, Llama's own rule
    (8C/3 = 341, rounded up to a multiple of 128), which also gives about the parameters of
    the GPT baby (804,224 against 809,856 with a 65-token vocabulary)."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 2
    n_embd: int = 128
    intermediate_size: int = 384
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd",
                     "intermediate_size"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head != 0:
            raise ConfigError(f"n_head={self.n_head} is not divisible by n_kv_head="
                              f"{self.n_kv_head} (each key/value head serves a whole group "
                              "of query heads)")
        if (self.n_embd // self.n_head) % 2 != 0:
            raise ConfigError(f"the head size n_embd / n_head = {self.n_embd // self.n_head} "
                              "must be even: RoPE rotates pairs of channels")
        self.rope_theta = check_real("rope_theta", self.rope_theta, low=0.0)
        if self.rope_theta <= 1.0:
            raise ConfigError(f"rope_theta must be > 1, got {self.rope_theta:g}")
        self.rms_eps = check_real("rms_eps", self.rms_eps, low=0.0, high=1.0)
        if not isinstance(self.tie_embeddings, (bool, np.bool_)):
            raise ConfigError(f"tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        self.tie_embeddings = bool(self.tie_embeddings)

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


def llama_param_shapes(cfg):
    """Name -> shape of every parameter, in Hugging Face's names, linear weights (in, out)."""
    C, V, I = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size
    kv = cfg.n_kv_head * (C // cfg.n_head)  # the width of k and v: nkv heads of hs channels
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (C,),
            p + "self_attn.q_proj.weight": (C, C),
            p + "self_attn.k_proj.weight": (C, kv),
            p + "self_attn.v_proj.weight": (C, kv),
            p + "self_attn.o_proj.weight": (C, C),
            p + "post_attention_layernorm.weight": (C,),
            p + "mlp.gate_proj.weight": (C, I),
            p + "mlp.up_proj.weight": (C, I),
            p + "mlp.down_proj.weight": (I, C),
        })
    shapes["model.norm.weight"] = (C,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (C, V)
    return shapes


def llama_param_count(cfg):
    """The number of parameters, without building the model: per layer
    2 C^2 + 2 C kv + 3 C I + 2 C, plus the embedding, the final norm and an untied head."""
    C, V, I = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size
    kv = cfg.n_kv_head * (C // cfg.n_head)
    head = 0 if cfg.tie_embeddings else C * V
    return V * C + cfg.n_layer * (2 * C * C + 2 * C * kv + 3 * C * I + 2 * C) + C + head


def init_llama_params(cfg, rng, dtype=np.float32):
    """Hugging Face's Llama initialisation: N(0, initializer_range = 0.02) for every matrix
    and the embedding, ones for the RMSNorm gains (Llama has no biases)."""
    params = {}
    for name, shape in llama_param_shapes(cfg).items():
        value = np.ones(shape) if len(shape) == 1 else rng.normal(0.0, 0.02, size=shape)
        params[name] = value.astype(dtype)
    return params


class LlamaBlockCache(NamedTuple):
    """What one layer's forward keeps for its backward (the layers' caches)."""

    norm_1: tuple  # input_layernorm (RMSNorm); norm_1[0] is the layer's input
    attn: L.GQAAttentionCache  # attn.core.probs: attention probabilities (B, nh, T, T)
    norm_2: tuple  # post_attention_layernorm
    mlp: tuple  # swiglu_mlp_forward's cache


class LlamaCache(NamedTuple):
    """What Llama.forward keeps for Llama.backward, in forward order."""

    embed: tuple  # embedding lookup
    blocks: list  # one LlamaBlockCache per layer
    norm: tuple  # the final RMSNorm
    xf: np.ndarray  # (B, T, C) its output, the head's input
    loss: tuple | None  # softmax cross-entropy (None without targets)


class Llama:
    """A Llama-style language model with hand-written backward passes.

    model = Llama(cfg, seed=0, dtype=np.float32)
    logits, loss = model.forward(idx, targets)   # loss is None without targets
    grads = model.backward()                     # dict with the names of model.params
    """

    def __init__(self, config, seed=0, dtype=np.float32, params=None):
        """config: a LlamaConfig; seed: for the initial weights; dtype: float32 to train,
        float64 for gradient checks; params: weights to start from instead of the random
        initialisation (checked against the config)."""
        if not isinstance(config, LlamaConfig):
            raise TypeError("config must be a LlamaConfig")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        init_ss, rng_ss = np.random.SeedSequence(seed).spawn(2)
        if params is None:
            n = llama_param_count(config)
            check_memory(n * dtype.itemsize, f"the model's parameters ({n:,} in {dtype})")
            self.params = init_llama_params(config, np.random.default_rng(init_ss), dtype)
        else:
            self.load_params(params)
        self.rng = np.random.default_rng(rng_ss)  # GPT's API (dropout masks); Llama has none
        self.training = True
        self.trainable = frozenset(self.params)  # every parameter trains
        self._cache = None
        self._rope = None  # (cos, sin) of positions 0 .. block_size - 1, built on first use

    # --- bookkeeping ---------------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (Llama has no dropout: the same computation as eval mode)."""
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def num_params(self):
        """Total number of parameters (a tied head shares the embedding: counted once)."""
        return int(sum(p.size for p in self.params.values()))

    def load_params(self, params):
        """Replace the parameters after checking their names and shapes against the config
        (a ValueError lists every mismatch); they are converted to the model's dtype."""
        expected = llama_param_shapes(self.config)
        validate_params(params, expected, what="the given")
        self.params = {k: np.array(params[k], dtype=self.dtype) for k in expected}
        self._cache = None

    def trainable_params(self):
        """{name: array} of every parameter (for AdamW), the model's own arrays."""
        return dict(self.params)

    @classmethod
    def from_pretrained(cls, folder, dtype=np.float32):
        """Load a Hugging Face Llama folder (config.json + model.safetensors). See
        numpygpt.io.hf_llama."""
        from ..io.hf_llama import from_pretrained

        return from_pretrained(folder, dtype=dtype)

    def save_pretrained(self, folder):
        """Write a folder that transformers' LlamaForCausalLM.from_pretrained loads. See
        numpygpt.io.hf_llama."""
        from ..io.hf_llama import save_pretrained

        return save_pretrained(self, folder)

    def rope(self, T, offset=0):
        """(cos, sin), each (T, hs), for positions offset .. offset + T - 1 (a slice of a
        table of block_size positions computed once)."""
        cfg = self.config
        if self._rope is None or self._rope[0].dtype != self.dtype:
            self._rope = L.rope_table(cfg.block_size, cfg.n_embd // cfg.n_head, cfg.rope_theta,
                                      self.dtype)
        cos, sin = self._rope
        return cos[offset:offset + T], sin[offset:offset + T]

    def _head(self, p):
        """The LM head (C, V): lm_head, or the embedding transposed when tied."""
        return p["model.embed_tokens.weight"].T if self.config.tie_embeddings \
            else p["lm_head.weight"]

    def attention_probs(self):
        """The attention probabilities of the last forward call, one (B, nh, T, T) array per
        layer. For plotting."""
        if self._cache is None:
            raise RuntimeError("attention_probs() needs a forward() call first")
        return [block.attn.core.probs for block in self._cache.blocks]

    # --- forward and backward ------------------------------------------------------------

    def forward(self, idx, targets=None, *, rng=None):
        """Inputs:
        - idx: int (B, T) token ids, T <= block_size
        - targets: optional int (B, T) next-token ids; -1 marks targets to ignore
        - rng: accepted for GPT's API (dropout masks); Llama has no dropout

        Returns (logits, loss): logits (B, T, V); loss a float, or None without targets.
        """
        cfg, p = self.config, self.params
        check_idx(idx, cfg)
        if targets is not None:
            L.check_targets(targets, idx.shape, cfg.vocab_size)
        self._cache = None
        B, T = idx.shape
        C = cfg.n_embd
        cos, sin = self.rope(T)  # (T, hs) each
        x, embed = L.embedding_forward(idx, p["model.embed_tokens.weight"])  # (B, T, C)
        blocks = []
        for i in range(cfg.n_layer):
            x, block = self._block_forward(i, x, cos, sin)
            blocks.append(block)
        xf, norm = L.rmsnorm_forward(x, p["model.norm.weight"], cfg.rms_eps)  # (B, T, C)
        logits = (xf.reshape(B * T, C) @ self._head(p)).reshape(B, T, -1)  # (B, T, V)
        loss = loss_cache = None
        if targets is not None:
            loss, loss_cache = L.softmax_cross_entropy_forward(logits, targets)
            loss = float(loss)
        self._cache = LlamaCache(embed, blocks, norm, xf, loss_cache)
        return logits, loss

    def backward(self):
        """Gradients of the mean loss of the last forward(idx, targets) call: its steps in
        reverse order, each layer's backward taking the cache its forward kept.

        Returns a dict with the names of model.params, in the same order.
        """
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        cache = self._cache
        if cache.loss is None:
            raise RuntimeError("backward() needs a loss: call forward(idx, targets) first")
        cfg, p = self.config, self.params
        grads = {}
        dlogits = L.softmax_cross_entropy_backward(1.0, cache.loss)  # (B, T, V)
        B, T, V = dlogits.shape
        C = cfg.n_embd
        dlogits2 = dlogits.reshape(B * T, V)
        xf2 = cache.xf.reshape(B * T, C)
        # logits = xf @ head  =>  dxf = dlogits @ head^T,  dhead = xf^T @ dlogits
        dxf = (dlogits2 @ self._head(p).T).reshape(B, T, C)
        if cfg.tie_embeddings:
            dembed_head = dlogits2.T @ xf2  # (V, C): head = embed^T
        else:
            grads["lm_head.weight"] = xf2.T @ dlogits2  # (C, V)
        dx, grads["model.norm.weight"] = L.rmsnorm_backward(dxf, cache.norm)
        for i in reversed(range(cfg.n_layer)):
            dx = self._block_backward(i, dx, cache.blocks[i], grads)
        # a tied embedding is used twice, by the lookup and by the head: the sum of both
        grads["model.embed_tokens.weight"] = L.embedding_backward(
            dx, cache.embed, out=dembed_head if cfg.tie_embeddings else None)
        return {k: grads[k] for k in p}  # same order as params

    # One layer, forward and backward side by side: each backward line undoes the forward
    # line with the same names, read bottom to top.

    def _block_forward(self, i, x_in, cos, sin):
        """Layer i: x_mid = x_in + attn(rmsnorm(x_in)), x_out = x_mid + mlp(rmsnorm(x_mid)).
        Returns (x_out, LlamaBlockCache)."""
        cfg, p, pre = self.config, self.params, f"model.layers.{i}."
        h, norm_1 = L.rmsnorm_forward(x_in, p[pre + "input_layernorm.weight"], cfg.rms_eps)
        a, attn = L.gqa_attention_forward(
            h, p[pre + "self_attn.q_proj.weight"], p[pre + "self_attn.k_proj.weight"],
            p[pre + "self_attn.v_proj.weight"], p[pre + "self_attn.o_proj.weight"],
            cfg.n_head, cfg.n_kv_head, cos, sin)  # (B, T, C)
        x_mid = x_in + a  # residual
        h, norm_2 = L.rmsnorm_forward(x_mid, p[pre + "post_attention_layernorm.weight"],
                                      cfg.rms_eps)
        m, mlp = L.swiglu_mlp_forward(h, p[pre + "mlp.gate_proj.weight"],
                                      p[pre + "mlp.up_proj.weight"],
                                      p[pre + "mlp.down_proj.weight"])  # (B, T, C)
        return x_mid + m, LlamaBlockCache(norm_1, attn, norm_2, mlp)

    def _block_backward(self, i, dx_out, cache, grads):
        """Backward through layer i given dx_out (B, T, C); stores the layer's parameter
        gradients in `grads`, returns dx_in (B, T, C)."""
        pre = f"model.layers.{i}."
        # x_out = x_mid + m: the gradient reaches x_mid directly and through the MLP
        dh, grads[pre + "mlp.gate_proj.weight"], grads[pre + "mlp.up_proj.weight"], \
            grads[pre + "mlp.down_proj.weight"] = L.swiglu_mlp_backward(dx_out, cache.mlp)
        dx_mid, grads[pre + "post_attention_layernorm.weight"] = L.rmsnorm_backward(
            dh, cache.norm_2)
        dx_mid += dx_out
        # x_mid = x_in + a: likewise through attention
        dh, grads[pre + "self_attn.q_proj.weight"], grads[pre + "self_attn.k_proj.weight"], \
            grads[pre + "self_attn.v_proj.weight"], grads[pre + "self_attn.o_proj.weight"] = \
            L.gqa_attention_backward(dx_mid, cache.attn)
        dx_in, grads[pre + "input_layernorm.weight"] = L.rmsnorm_backward(dh, cache.norm_1)
        dx_in += dx_mid
        return dx_in

    # --- generation ----------------------------------------------------------------------

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                 use_cache=True):
        """Continue the sequences in idx by sampling one token at a time (as GPT.generate).

        Inputs:
        - idx: int (B, T) prompt ids (T >= 1; only the last block_size tokens are looked at)
        - max_new_tokens: how many tokens to add
        - temperature: divides the logits; 0 = greedy (argmax)
        - top_k, top_p: sample only among the k most likely tokens / the smallest set whose
          probability sums to >= p
        - seed: seed of the sampling Generator (None: fresh entropy)
        - use_cache: keep the rotated keys and the values of past tokens (a KV cache of
          n_kv_head heads per layer); False recomputes the whole context every step

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
        out = idx.astype(np.int64)
        past = None  # per layer (k, v), each (B, nkv, T_past, hs)
        try:
            for _ in range(max_new_tokens):
                if not use_cache:
                    logits, _ = self.forward(out[:, -block:])
                    logits = logits[:, -1, :]
                elif past is None or past[0][0].shape[2] + 1 > block:
                    # empty cache, or the window is full and slides: the positions of the
                    # tokens kept change, so start over from the last block_size tokens
                    logits, past = self._forward_cached(out[:, -block:], None)
                else:
                    logits, past = self._forward_cached(out[:, -1:], past)  # the new token
                nxt = sample_next(logits, temperature, top_k, top_p, rng)  # (B,)
                out = np.concatenate([out, nxt[:, None]], axis=1)
        finally:
            self._cache = None
        return out

    def _forward_cached(self, idx, past):
        """The forward pass for generation: new tokens idx (B, T_new) given the KV cache
        `past` (per layer (k, v), each (B, nkv, T_past, hs); None when empty). The same
        layers as forward, with the positions starting at T_past, no caches for backward,
        and the final norm and head on the last position only.

        Returns (logits of the last position (B, V), the updated cache).
        """
        cfg, p = self.config, self.params
        T_past = 0 if past is None else past[0][0].shape[2]
        cos, sin = self.rope(idx.shape[1], offset=T_past)
        x = p["model.embed_tokens.weight"][idx]  # (B, T_new, C)
        new_past = []
        for i in range(cfg.n_layer):
            pre = f"model.layers.{i}."
            h, _ = L.rmsnorm_forward(x, p[pre + "input_layernorm.weight"], cfg.rms_eps)
            a, kv = L.gqa_cached_forward(
                h, p[pre + "self_attn.q_proj.weight"], p[pre + "self_attn.k_proj.weight"],
                p[pre + "self_attn.v_proj.weight"], p[pre + "self_attn.o_proj.weight"],
                cfg.n_head, cfg.n_kv_head, cos, sin, None if past is None else past[i])
            new_past.append(kv)
            x = x + a
            h, _ = L.rmsnorm_forward(x, p[pre + "post_attention_layernorm.weight"], cfg.rms_eps)
            m, _ = L.swiglu_mlp_forward(h, p[pre + "mlp.gate_proj.weight"],
                                        p[pre + "mlp.up_proj.weight"],
                                        p[pre + "mlp.down_proj.weight"])
            x = x + m
        xf, _ = L.rmsnorm_forward(x[:, -1, :], p["model.norm.weight"], cfg.rms_eps)  # (B, C)
        return xf @ self._head(p), new_past  # (B, V)


def kv_cache_bytes(n_layer, n_kv_head, head_size, T, batch_size=1, itemsize=4):
    """Bytes of a KV cache: keys and values of n_kv_head heads per layer, T positions."""
    return 2 * n_layer * n_kv_head * head_size * T * batch_size * itemsize


__all__ = ["Llama", "LlamaConfig", "llama_param_shapes", "llama_param_count",
           "init_llama_params", "kv_cache_bytes"]
