"""The GPT: token + position embeddings, a stack of pre-LayerNorm transformer blocks, a final
layer norm and a language-model head tied to the token embedding (GPT-2's architecture).

    x = drop(wte[idx] + pos)                              (B, T, C)
    for each block:  x = x + drop(attn(ln_1(x)));  x = x + drop(mlp(ln_2(x)))
    logits = ln_f(x) @ wte.T                              (B, T, V)

(drop is dropout with probability config.dropout while training, the identity otherwise;
attention also drops some of its probabilities.)

Every gradient comes from the layers' own backward passes; the model only chains them and adds
up the contributions where a tensor is used twice (the residual stream and the tied wte). The
layers are looked up in numpygpt.kernels' table (`ops`): the plain layers, or their fast twins.

Shapes: B batch, T time, C channels (n_embd), V vocabulary, nh heads, L layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import layers as L
from ..data.tokenizer_base import vocab_mismatch
from ..errors import ConfigError, check_real
from ..io import hf_gpt2, hub
from ..kernels import ops
from .base import LanguageModel, ModelCache, ModelConfig, check_idx, cross_entropy

POS_ENCODINGS = ("learned", "sinusoidal")
LINEAR_MAPS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # each block's four


@dataclass
class GPTConfig(ModelConfig):
    """The model's hyperparameters (nanoGPT's names): the sizes of every model (vocab_size,
    block_size, n_layer, n_head, n_embd; models/base.py), and GPT-2's own settings."""

    dropout: float = 0.0
    pos_encoding: str = "learned"  # or "sinusoidal"

    def __post_init__(self):
        super().__post_init__()
        self.dropout = check_real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if not isinstance(self.pos_encoding, str) or self.pos_encoding not in POS_ENCODINGS:
            raise ConfigError(f"pos_encoding must be one of {POS_ENCODINGS}, "
                              f"got {self.pos_encoding!r}")


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
    """The number of parameters of a GPT of config `cfg`, without building it (from
    param_shapes, see LanguageModel.param_count): per block 12 C^2 + 13 C (four linear maps
    and two layer norms), plus the embeddings and ln_f."""
    return GPT.param_count(cfg)


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


class BlockCache(NamedTuple):
    """What one transformer block's forward keeps for its backward (the layers' caches)."""

    ln_1: tuple  # layer norm before attention; ln_1.x is the block's input
    c_attn: tuple  # the qkv projection (B, T, C) -> (B, T, 3C)
    attn: L.AttentionCoreCache  # the heads; attn.probs: attention probabilities (B, nh, T, T)
    c_proj: tuple  # attention's output projection
    attn_drop: np.ndarray | None  # dropout mask on the attention branch's output
    ln_2: tuple  # layer norm before the MLP
    c_fc: tuple  # the MLP's first linear map (C -> 4C)
    gelu: tuple  # GELU's cache; gelu[0] is its input h (B, T, 4C)
    mlp_proj: tuple  # the MLP's second linear map (4C -> C)
    mlp_drop: np.ndarray | None  # dropout mask on the MLP branch's output

    @property
    def probs(self):
        return self.attn.probs


class BodyCache(NamedTuple):
    """What body_forward keeps: from the token ids to ln_f's output, in forward order."""

    wte: tuple  # embedding lookup
    pos: tuple | None  # positional encoding (None: sinusoidal, nothing to remember)
    emb_drop: np.ndarray | None  # dropout mask on the embeddings
    blocks: list  # one BlockCache per layer
    ln_f: tuple  # final layer norm


class GPT(LanguageModel):
    """A GPT-2-style language model with hand-written backward passes; built, trained and
    sampled as every model is (models/base.py: GPT(config), forward, backward, generate)."""

    config_class = GPTConfig
    param_shapes = staticmethod(param_shapes)
    init_params = staticmethod(init_params)

    @classmethod
    def from_pretrained(cls, path_or_name, dtype=np.float32, cache_dir=None):
        """Load GPT-2 weights: a Hugging Face folder (config.json + model.safetensors) or a
        name ("gpt2", "gpt2-medium", ...; downloaded once into the cache, see io/hub.py).
        Returns the model in eval mode, as transformers' from_pretrained does."""
        folder = hub.resolve(path_or_name, cache_dir)
        config, params = hf_gpt2.read_folder(folder, GPTConfig, param_shapes)
        return cls(config, dtype=dtype, params=params).eval()

    def save_pretrained(self, folder, tokenizer=None):
        """Write a folder that transformers' GPT2LMHeadModel.from_pretrained loads (with a
        byte-level BPE tokenizer: its vocab.json and merges.txt too). Raises ValueError for
        what GPT-2's format cannot hold. Returns the folder as a Path."""
        if self.config.pos_encoding != "learned":
            raise ValueError("GPT-2 has learned positions; a model with pos_encoding="
                             f"{self.config.pos_encoding!r} cannot be saved in GPT-2 format")
        extra = sorted(set(self.params) - set(param_shapes(self.config)))
        if extra:
            raise ValueError(f"GPT-2's format has no place for the parameters {extra[:3]}")
        if tokenizer is not None:
            if getattr(tokenizer, "kind", None) != "bpe":
                raise ValueError(f"only a BPE tokenizer can be saved in GPT-2 format (vocab.json "
                                 f"+ merges.txt), got {type(tokenizer).__name__}; pass "
                                 "tokenizer=None")
            problem = vocab_mismatch(tokenizer.vocab_size, self.config.vocab_size)
            if problem:  # from_pretrained would refuse the folder
                raise ValueError(problem)
        return hf_gpt2.write_folder(folder, self.config.to_dict(), self.params, tokenizer)

    # --- forward and backward ------------------------------------------------------------

    def forward(self, idx, targets=None, *, rng=None):
        """Inputs:
        - idx: int (B, T) token ids, T <= block_size
        - targets: optional int (B, T) next-token ids; -1 marks targets to ignore
        - rng: Generator for the dropout masks (default: the model's own); pass a fresh
          Generator with a fixed seed to get the same masks every call (gradient checks)

        Returns (logits, loss): logits (B, T, V); loss a float, or None without targets.
        """
        check_idx(idx, self.config)
        if targets is not None:
            L.check_targets(targets, idx.shape, self.config.vocab_size)
        self._cache = None
        xf, body = self.body_forward(idx, rng)  # (B, T, C)
        # LM head tied to the token embedding: logits = xf @ wte.T (no bias)
        B, T, C = xf.shape
        logits = (xf.reshape(B * T, C) @ self.params["wte.weight"].T).reshape(B, T, -1)
        loss, loss_cache = cross_entropy(logits, targets)  # logits (B, T, V)
        self._cache = ModelCache(body, xf, loss_cache)
        return logits, loss

    def backward(self):
        """Gradients of the mean loss of the last forward(idx, targets) call: its steps in
        reverse order, each layer's backward taking the cache its forward kept.

        Returns a dict with the names of model.params, in the same order.
        """
        cache = self._loss_cache()
        dlogits = ops.softmax_cross_entropy_backward(1.0, cache.loss)  # (B, T, V)
        B, T, V = dlogits.shape
        dlogits2 = dlogits.reshape(B * T, V)
        # logits = xf @ wte.T  =>  dxf = dlogits @ wte,  dwte (head part) = dlogits.T @ xf
        dxf = (dlogits2 @ self.params["wte.weight"]).reshape(cache.xf.shape)  # (B, T, C)
        grads = {"wte.weight": dlogits2.T @ cache.xf.reshape(B * T, -1)}  # (V, C)
        dx = self.layernorm_backward("ln_f", dxf, cache.body.ln_f, grads)
        for i in reversed(range(self.config.n_layer)):
            dx = self.block_backward(i, dx, cache.body.blocks[i], grads)
        self.embeddings_backward(dx, cache.body, grads)
        return {k: grads[k] for k in self.params}

    def body_forward(self, idx, rng=None):
        """Embeddings, blocks and ln_f: idx (B, T) -> (xf (B, T, C), BodyCache)."""
        cfg, p = self.config, self.params
        pdrop = cfg.dropout if self.training else 0.0
        rng = self.rng if rng is None else rng
        x, wte = ops.embedding_forward(idx, p["wte.weight"])  # (B, T, C)
        if cfg.pos_encoding == "learned":
            x, pos = ops.learned_positional_forward(x, p["wpe.weight"])
        else:
            x, pos = ops.sinusoidal_positional_forward(x)
        x, emb_drop = ops.dropout_forward(x, pdrop, rng)
        blocks = []
        for i in range(cfg.n_layer):
            x, block = self.block_forward(i, x, pdrop, rng)
            blocks.append(block)
        xf, ln_f = ops.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])  # (B, T, C)
        return xf, BodyCache(wte, pos, emb_drop, blocks, ln_f)

    def embeddings_backward(self, dx, body, grads):
        """Backward of the embeddings, given dx (B, T, C) of their sum: dwpe, and the lookup's
        part of dwte added into grads["wte.weight"] (wte is used twice, by the lookup and by
        the LM head: its gradient is the sum), or stored there when it holds none."""
        dx = ops.dropout_backward(dx, body.emb_drop)
        if self.config.pos_encoding == "learned":
            dx, grads["wpe.weight"] = ops.learned_positional_backward(dx, body.pos)
        grads["wte.weight"] = ops.embedding_backward(dx, body.wte, out=grads.get("wte.weight"))

    # One transformer block, forward and backward side by side: each backward line undoes the
    # forward line with the same names (x_mid, ln2, qkv, ...), read bottom to top.

    def block_forward(self, i, x_in, pdrop, rng):
        """Block i: x_mid = x_in + drop(attn(ln_1(x_in))), then
        x_out = x_mid + drop(mlp(ln_2(x_mid))). Returns (x_out, BlockCache)."""
        pre, p = f"h.{i}.", self.params
        ln1, ln_1 = ops.layernorm_forward(x_in, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        # attention = c_attn, the heads, c_proj (layers.attention_forward, in three steps)
        qkv, c_attn = self.linear_forward(pre + "attn.c_attn", ln1)  # (B, T, 3C)
        y, attn = ops.attention_core_forward(qkv, self.config.n_head, pdrop, rng)  # (B, T, C)
        a, c_proj = self.linear_forward(pre + "attn.c_proj", y)  # (B, T, C)
        a, attn_drop = ops.dropout_forward(a, pdrop, rng)
        x_mid = x_in + a  # residual: the block adds to the stream, it does not replace it
        ln2, ln_2 = ops.layernorm_forward(x_mid, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        # MLP = c_fc, GELU, c_proj (layers.mlp_forward, in three steps)
        h, c_fc = self.linear_forward(pre + "mlp.c_fc", ln2)  # (B, T, 4C)
        g, gelu = ops.gelu_forward(h)  # (B, T, 4C)
        m, mlp_proj = self.linear_forward(pre + "mlp.c_proj", g)  # (B, T, C)
        m, mlp_drop = ops.dropout_forward(m, pdrop, rng)
        x_out = x_mid + m  # (B, T, C)
        return x_out, BlockCache(ln_1, c_attn, attn, c_proj, attn_drop, ln_2, c_fc, gelu,
                                 mlp_proj, mlp_drop)

    def block_backward(self, i, dx_out, cache, grads):
        """Backward through block i, given dx_out (B, T, C), the gradient of its output.
        Stores the gradients of block i's parameters in `grads`; returns dx_in (B, T, C)."""
        pre = f"h.{i}."
        # x_out = x_mid + m: the gradient reaches x_mid directly and through the MLP branch
        dm = ops.dropout_backward(dx_out, cache.mlp_drop)
        dg = self.linear_backward(pre + "mlp.c_proj", dm, cache.mlp_proj, grads)
        dh = ops.gelu_backward(dg, cache.gelu)
        dln2 = self.linear_backward(pre + "mlp.c_fc", dh, cache.c_fc, grads)
        dx_mid = dx_out + self.layernorm_backward(pre + "ln_2", dln2, cache.ln_2, grads)
        # x_mid = x_in + a: likewise through the attention branch
        da = ops.dropout_backward(dx_mid, cache.attn_drop)
        dy = self.linear_backward(pre + "attn.c_proj", da, cache.c_proj, grads)
        dqkv = ops.attention_core_backward(dy, cache.attn)
        dln1 = self.linear_backward(pre + "attn.c_attn", dqkv, cache.c_attn, grads)
        return dx_mid + self.layernorm_backward(pre + "ln_1", dln1, cache.ln_1, grads)

    def layernorm_backward(self, name, dout, cache, grads):
        """Backward through the layer norm `name` ("h.0.ln_1", "ln_f"): stores the gradients
        of its weight and bias in `grads`, returns dx."""
        dx, grads[name + ".weight"], grads[name + ".bias"] = ops.layernorm_backward(dout, cache)
        return dx

    # The seam: the blocks reach their linear maps (LINEAR_MAPS) only through these two
    # methods, so that a model built on GPT can change what a linear map computes (numpygpt's
    # fine-tuning does) without touching forward, backward or generation.

    def linear_forward(self, name, x):
        """The linear map `name` ("h.0.attn.c_attn", ...) applied to x: x @ w + b.
        Returns (out, cache)."""
        return ops.linear_forward(x, self.params[name + ".weight"], self.params[name + ".bias"])

    def linear_backward(self, name, dout, cache, grads):
        """Backward of linear_forward: stores dw and db in `grads`, returns dx."""
        dx, grads[name + ".weight"], grads[name + ".bias"] = ops.linear_backward(dout, cache)
        return dx

    # --- generation ----------------------------------------------------------------------

    def forward_cached(self, idx, past=None):
        """The forward pass for generation, with a KV cache: new tokens idx (B, T_new) given
        `past` (per layer (k, v), each (B, nh, T_past, hs); None when empty).

        The same layers in the same order as body_forward and block_forward, with four
        differences: the positions start at T_past instead of 0; the heads see the keys and
        values of earlier tokens from `past` (attention_core_cached); there is no dropout and
        no cache for a backward pass; and ln_f and the LM head run on the last position only
        (the one we sample from). The tests check that both paths give the same tokens.

        Returns (logits of the last position (B, V), the updated cache).
        """
        cfg, p = self.config, self.params
        T_past = 0 if past is None else past[0][0].shape[2]
        T_new = idx.shape[1]
        x = p["wte.weight"][idx]  # (B, T_new, C)
        if cfg.pos_encoding == "learned":
            x = x + p["wpe.weight"][T_past:T_past + T_new]
        else:
            x = x + ops.sinusoidal_table(T_past + T_new, cfg.n_embd, x.dtype)[T_past:]
        new_past = []
        for i in range(cfg.n_layer):
            pre = f"h.{i}."
            ln1, _ = ops.layernorm_forward(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
            qkv, _ = self.linear_forward(pre + "attn.c_attn", ln1)  # (B, T_new, 3C)
            y, kv = ops.attention_core_cached(qkv, cfg.n_head, None if past is None else past[i])
            new_past.append(kv)
            x = x + self.linear_forward(pre + "attn.c_proj", y)[0]
            ln2, _ = ops.layernorm_forward(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
            g, _ = ops.gelu_forward(self.linear_forward(pre + "mlp.c_fc", ln2)[0])  # (B, T_new, 4C)
            x = x + self.linear_forward(pre + "mlp.c_proj", g)[0]
        xf, _ = ops.layernorm_forward(x[:, -1, :], p["ln_f.weight"], p["ln_f.bias"])  # (B, C)
        return xf @ p["wte.weight"].T, new_past  # (B, V)


__all__ = ["GPT", "GPTConfig", "param_shapes", "param_count", "init_params", "POS_ENCODINGS",
           "LINEAR_MAPS"]
