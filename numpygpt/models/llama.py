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
everywhere in numpygpt: io/hf_llama.py transposes them on load and save.

The bookkeeping (building, loading, generate) is GPT's, from models/base.py; so the training
loop drives either model.

Shapes: B batch, T time, C channels (n_embd), V vocabulary, nh query heads, nkv key/value
heads, hs = C // nh head size, I intermediate size (the MLP's hidden units), L layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..errors import ConfigError, check_int, check_real
from ..io import hf_llama
from ..kernels import ops
from .base import LanguageModel, ModelCache, ModelConfig, check_idx, cross_entropy


@dataclass
class LlamaConfig(ModelConfig):
    """The model's hyperparameters: the sizes of every model (vocab_size, block_size, n_layer,
    n_head, n_embd; models/base.py) and Llama's own. The defaults are a "baby" Llama sized like
    GPT's baby preset (4 layers, 4 heads, C = 128): 2 key/value heads, and I = 384, Llama's own
    rule (8C/3 = 341, rounded up to a multiple of 128), which also gives about the parameters
    of the GPT baby (804,224 against 809,856 with a 65-token vocabulary)."""

    n_kv_head: int = 2
    intermediate_size: int = 384
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_kv_head", "intermediate_size"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
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
    """The number of parameters, without building the model (LanguageModel.param_count):
    per layer 2 C^2 + 2 C kv + 3 C I + 2 C, plus the embedding, the final norm and an untied
    head."""
    return Llama.param_count(cfg)


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
    attn: L.GQAAttentionCache  # the attention layer: projections, RoPE, heads
    norm_2: tuple  # post_attention_layernorm
    mlp: tuple  # swiglu_mlp_forward's cache

    @property
    def probs(self):
        """The attention probabilities (B, nh, T, T)."""
        return self.attn.core.probs


class LlamaBodyCache(NamedTuple):
    """What Llama.forward keeps from the token ids to the final norm, in forward order."""

    embed: tuple  # embedding lookup
    blocks: list  # one LlamaBlockCache per layer
    norm: tuple  # the final RMSNorm


class Llama(LanguageModel):
    """A Llama-style language model with hand-written backward passes; built, trained and
    sampled as every model is (models/base.py: Llama(config), forward, backward, generate).
    It has no dropout: train() and eval() compute the same, and forward's rng goes unused."""

    config_class = LlamaConfig
    param_shapes = staticmethod(llama_param_shapes)
    init_params = staticmethod(init_llama_params)

    @classmethod
    def from_pretrained(cls, folder, dtype=np.float32):
        """Load a Hugging Face Llama folder (config.json + model.safetensors), in eval mode.
        See io/hf_llama.py for what is read and what is refused."""
        config, params = hf_llama.read_folder(folder, LlamaConfig, llama_param_shapes)
        return cls(config, dtype=dtype, params=params).eval()

    def save_pretrained(self, folder):
        """Write a folder that transformers' LlamaForCausalLM.from_pretrained loads. Returns
        the folder as a Path."""
        return hf_llama.write_folder(folder, self.config.to_dict(), self.params, self.dtype)

    def rope(self, T, offset=0):
        """(cos, sin), each (T, hs), of positions offset .. offset + T - 1: only the
        positions a call needs (a table of block_size positions would cost memory that a
        long context makes large)."""
        cfg = self.config
        return ops.rope_table(T, cfg.n_embd // cfg.n_head, cfg.rope_theta, self.dtype, offset)

    def _head(self):
        """The LM head (C, V): lm_head, or the embedding transposed when tied."""
        p = self.params
        return p["model.embed_tokens.weight"].T if self.config.tie_embeddings \
            else p["lm_head.weight"]

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
        cos, sin = self.rope(T)  # (T, hs) each
        x, embed = ops.embedding_forward(idx, p["model.embed_tokens.weight"])  # (B, T, C)
        blocks = []
        for i in range(cfg.n_layer):
            x, block = self.block_forward(i, x, cos, sin)
            blocks.append(block)
        xf, norm = ops.rmsnorm_forward(x, p["model.norm.weight"], cfg.rms_eps)  # (B, T, C)
        logits = (xf.reshape(B * T, -1) @ self._head()).reshape(B, T, -1)  # (B, T, V)
        loss, loss_cache = cross_entropy(logits, targets)
        self._cache = ModelCache(LlamaBodyCache(embed, blocks, norm), xf, loss_cache)
        return logits, loss

    def backward(self):
        """Gradients of the mean loss of the last forward(idx, targets) call: its steps in
        reverse order, each layer's backward taking the cache its forward kept.

        Returns a dict with the names of model.params, in the same order.
        """
        cache = self._loss_cache()
        body, tied = cache.body, self.config.tie_embeddings
        dlogits = ops.softmax_cross_entropy_backward(1.0, cache.loss)  # (B, T, V)
        B, T, V = dlogits.shape
        dlogits2 = dlogits.reshape(B * T, V)
        xf2 = cache.xf.reshape(B * T, -1)  # (B*T, C)
        # logits = xf @ head  =>  dxf = dlogits @ head^T,  dhead = xf^T @ dlogits
        dxf = (dlogits2 @ self._head().T).reshape(cache.xf.shape)  # (B, T, C)
        grads = {}
        if tied:  # head = embed^T: its gradient joins the lookup's, below
            grads["model.embed_tokens.weight"] = dlogits2.T @ xf2  # (V, C)
        else:
            grads["lm_head.weight"] = xf2.T @ dlogits2  # (C, V)
        dx, grads["model.norm.weight"] = ops.rmsnorm_backward(dxf, body.norm)
        for i in reversed(range(self.config.n_layer)):
            dx = self.block_backward(i, dx, body.blocks[i], grads)
        # a tied embedding is used twice, by the lookup and by the head: the sum of both
        grads["model.embed_tokens.weight"] = ops.embedding_backward(
            dx, body.embed, out=grads.get("model.embed_tokens.weight"))
        return {k: grads[k] for k in self.params}

    # One layer, forward and backward side by side: each backward line undoes the forward
    # line with the same names, read bottom to top.

    def block_forward(self, i, x_in, cos, sin):
        """Layer i: x_mid = x_in + attn(rmsnorm(x_in)), x_out = x_mid + mlp(rmsnorm(x_mid)).
        Returns (x_out, LlamaBlockCache)."""
        cfg, p, pre = self.config, self.params, f"model.layers.{i}."
        h, norm_1 = ops.rmsnorm_forward(x_in, p[pre + "input_layernorm.weight"], cfg.rms_eps)
        a, attn = ops.gqa_attention_forward(
            h, p[pre + "self_attn.q_proj.weight"], p[pre + "self_attn.k_proj.weight"],
            p[pre + "self_attn.v_proj.weight"], p[pre + "self_attn.o_proj.weight"],
            cfg.n_head, cfg.n_kv_head, cos, sin)  # (B, T, C)
        x_mid = x_in + a  # residual: the layer adds to the stream
        h, norm_2 = ops.rmsnorm_forward(x_mid, p[pre + "post_attention_layernorm.weight"],
                                        cfg.rms_eps)  # (B, T, C)
        m, mlp = ops.swiglu_mlp_forward(h, p[pre + "mlp.gate_proj.weight"],
                                        p[pre + "mlp.up_proj.weight"],
                                        p[pre + "mlp.down_proj.weight"])  # (B, T, C)
        return x_mid + m, LlamaBlockCache(norm_1, attn, norm_2, mlp)

    def block_backward(self, i, dx_out, cache, grads):
        """Backward through layer i given dx_out (B, T, C); stores the layer's parameter
        gradients in `grads`, returns dx_in (B, T, C)."""
        pre = f"model.layers.{i}."
        # x_out = x_mid + m: the gradient reaches x_mid directly and through the MLP
        dh, grads[pre + "mlp.gate_proj.weight"], grads[pre + "mlp.up_proj.weight"], \
            grads[pre + "mlp.down_proj.weight"] = ops.swiglu_mlp_backward(dx_out, cache.mlp)
        dx_mid, grads[pre + "post_attention_layernorm.weight"] = ops.rmsnorm_backward(
            dh, cache.norm_2)  # (B, T, C)
        dx_mid += dx_out
        # x_mid = x_in + a: likewise through attention
        dh, grads[pre + "self_attn.q_proj.weight"], grads[pre + "self_attn.k_proj.weight"], \
            grads[pre + "self_attn.v_proj.weight"], grads[pre + "self_attn.o_proj.weight"] = \
            ops.gqa_attention_backward(dx_mid, cache.attn)
        dx_in, grads[pre + "input_layernorm.weight"] = ops.rmsnorm_backward(dh, cache.norm_1)
        dx_in += dx_mid
        return dx_in

    # --- generation ----------------------------------------------------------------------

    def forward_cached(self, idx, past=None):
        """The forward pass for generation: new tokens idx (B, T_new) given the KV cache
        `past` (per layer (k, v), each (B, nkv, T_past, hs), the keys already rotated; None
        when empty). The same layers as forward, with the positions starting at T_past, no
        caches for backward, and the final norm and head on the last position only.

        Returns (logits of the last position (B, V), the updated cache).
        """
        cfg, p = self.config, self.params
        T_past = 0 if past is None else past[0][0].shape[2]
        cos, sin = self.rope(idx.shape[1], offset=T_past)  # (T_new, hs) each
        x = p["model.embed_tokens.weight"][idx]  # (B, T_new, C)
        new_past = []
        for i in range(cfg.n_layer):
            pre = f"model.layers.{i}."
            h, _ = ops.rmsnorm_forward(x, p[pre + "input_layernorm.weight"], cfg.rms_eps)
            a, kv = ops.gqa_cached_forward(
                h, p[pre + "self_attn.q_proj.weight"], p[pre + "self_attn.k_proj.weight"],
                p[pre + "self_attn.v_proj.weight"], p[pre + "self_attn.o_proj.weight"],
                cfg.n_head, cfg.n_kv_head, cos, sin, None if past is None else past[i])
            new_past.append(kv)
            x = x + a  # (B, T_new, C)
            h, _ = ops.rmsnorm_forward(x, p[pre + "post_attention_layernorm.weight"], cfg.rms_eps)
            m, _ = ops.swiglu_mlp_forward(h, p[pre + "mlp.gate_proj.weight"],
                                          p[pre + "mlp.up_proj.weight"],
                                          p[pre + "mlp.down_proj.weight"])
            x = x + m
        xf, _ = ops.rmsnorm_forward(x[:, -1, :], p["model.norm.weight"], cfg.rms_eps)  # (B, C)
        return xf @ self._head(), new_past  # (B, V)


def kv_cache_bytes(n_layer, n_kv_head, head_size, T, batch_size=1, itemsize=4):
    """Bytes of a KV cache: keys and values of n_kv_head heads per layer, T positions."""
    return 2 * n_layer * n_kv_head * head_size * T * batch_size * itemsize


__all__ = ["Llama", "LlamaConfig", "llama_param_shapes", "llama_param_count",
           "init_llama_params", "kv_cache_bytes"]
