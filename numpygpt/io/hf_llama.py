"""Llama checkpoints in and out, in the Hugging Face format (LlamaForCausalLM).

A Llama folder holds `config.json` (LlamaConfig: hidden_size, num_attention_heads,
num_key_value_heads, rope_theta, ...) and `model.safetensors`, whose tensors have the names of
numpygpt.models.llama's params (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
..., lm_head.weight unless the head is tied). PyTorch's nn.Linear stores its weight
(out, in); numpygpt stores (in, out), so every matrix but the embedding is transposed on the
way in and on the way out, lm_head included ((V, C) there, (C, V) here).

    model = Llama.from_pretrained("path/to/folder")   # or numpygpt.io.hf_llama.from_pretrained
    model.save_pretrained("export")                   # transformers loads it back

Rotary convention: Hugging Face's "rotate_half" (pairs (i, i + hs/2)), which layers/rope.py
implements; the checkpoints on the Hub are converted to it.

Reading checks before it trusts, as numpygpt.io.hf_gpt2 does for GPT-2 (it reuses its readers):
config.json is bounded, the safetensors header is checked and compared with the config
before a tensor is read, only float tensors are accepted and every weight must be finite.
What numpygpt's Llama does not compute is refused with one line: rope scaling (Llama 3.1's
"llama3", "linear", "dynamic", ...), biases in attention or the MLP, an activation other
than SiLU, a head_dim other than hidden_size / num_attention_heads. Every problem is a
CheckpointError (a UserError and ValueError).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..models.llama import Llama, LlamaConfig, llama_param_shapes
from .checkpoint import CKPT_NAME, CheckpointError, validate_params
from .files import MAX_CONFIG_BYTES, atomic_write_bytes, atomic_write_json, read_json
from .hf_gpt2 import _read_config, _root, _safetensors, read_safetensors_header, read_tensors

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
ARCHITECTURE = "LlamaForCausalLM"
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
_BUFFER_SUFFIX = "rotary_emb.inv_freq"  # older exports stored RoPE's frequencies: not weights


def _missing(path):
    return CheckpointError(f"no {path.name} in '{path.parent}' (a Llama folder holds "
                           f"{CONFIG_NAME} and {WEIGHTS_NAME})")


def config_from_hf(d, where=CONFIG_NAME):
    """Map a Llama config.json (a dict) to a LlamaConfig, refusing what numpygpt's Llama
    cannot compute. Missing optional keys take transformers' LlamaConfig defaults
    (num_key_value_heads = num_attention_heads, rms_norm_eps 1e-6, rope_theta 10000,
    max_position_embeddings 2048, untied head). Raises CheckpointError listing every problem.
    """
    problems = []
    archs = d.get("architectures") or []
    if d.get("model_type") != "llama" and ARCHITECTURE not in (archs if isinstance(archs, list)
                                                               else []):
        problems.append(f"model_type is {d.get('model_type')!r}, numpygpt's Llama reads only "
                        f"'llama' (or architectures [{ARCHITECTURE!r}])")

    def want(key, default, ok, expected):
        value = d.get(key, default)
        if not ok(value):
            problems.append(f"{key} is {value!r:.80}, numpygpt supports only {expected}")

    want("hidden_act", "silu", lambda v: v == "silu", "'silu'")
    want("attention_bias", False, lambda v: v is False, "false (no biases)")
    want("mlp_bias", False, lambda v: v is False, "false (no biases)")
    # rope scaling: transformers < 5 writes rope_scaling (null when absent) and rope_theta;
    # transformers 5 writes rope_parameters {"rope_type": "default", "rope_theta": ...}
    plain = (None, "default")
    want("rope_scaling", None, lambda v: v is None or (isinstance(v, dict) and v.get(
        "rope_type", v.get("type")) in plain), "null (no rope scaling)")
    rope = d.get("rope_parameters")
    want("rope_parameters", None, lambda v: v is None or (isinstance(v, dict) and v.get(
        "rope_type", "default") in plain), "rope_type 'default' (no rope scaling)")
    theta = rope.get("rope_theta") if isinstance(rope, dict) and "rope_theta" in rope \
        else d.get("rope_theta", 10000.0)
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads") if k not in d]
    if missing:
        problems.append("missing " + ", ".join(missing))
    C, nh = d.get("hidden_size"), d.get("num_attention_heads")
    hd = d.get("head_dim")
    if hd is not None and type(C) is int and type(nh) is int and nh > 0 and hd != C // nh:
        problems.append(f"head_dim is {hd!r}, numpygpt supports only hidden_size / "
                        f"num_attention_heads = {C // nh}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    try:
        return LlamaConfig(
            vocab_size=d["vocab_size"], block_size=d.get("max_position_embeddings", 2048),
            n_layer=d["num_hidden_layers"], n_head=nh,
            n_kv_head=d.get("num_key_value_heads") or nh, n_embd=C,
            intermediate_size=d["intermediate_size"], rope_theta=theta,
            rms_eps=d.get("rms_norm_eps", 1e-6),
            tie_embeddings=d.get("tie_word_embeddings", False))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def hf_shapes(cfg):
    """Hugging Face name -> shape as stored there: our shapes, matrices transposed."""
    return {k: s if k == EMBED or len(s) == 1 else s[::-1]
            for k, s in llama_param_shapes(cfg).items()}


def from_pretrained(folder, dtype=np.float32):
    """Load a Hugging Face Llama folder (config.json + model.safetensors) as a Llama.

    Inputs:
    - folder: the folder
    - dtype: np.float32 or np.float64 (the tensors are cast to it)

    Returns a Llama in eval mode. Raises CheckpointError for a missing, unreadable or
    unsupported checkpoint; the config and the tensors' names, dtypes and shapes are checked
    before a tensor is read.
    """
    folder = Path(os.fspath(folder)).expanduser()
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise CheckpointError(f"'{folder}' is {what}: give a folder with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}")
    if os.path.lexists(folder / CKPT_NAME) and not os.path.lexists(folder / WEIGHTS_NAME):
        raise CheckpointError(f"'{folder}' is a numpygpt training checkpoint, not a Hugging "
                              "Face Llama folder")
    root, weights = _root(folder), folder / WEIGHTS_NAME
    if not os.path.lexists(folder / CONFIG_NAME):
        raise _missing(folder / CONFIG_NAME)
    if not os.path.lexists(weights):
        raise _missing(weights)
    cfg = config_from_hf(_read_config(folder, root), f"'{folder / CONFIG_NAME}'")
    infos = read_safetensors_header(weights, root)
    if 9 * cfg.n_layer + 2 > len(infos):  # before listing every layer's names
        raise CheckpointError(f"'{folder / CONFIG_NAME}': num_hidden_layers is "
                              f"{cfg.n_layer:,} (9 tensors each), but '{weights}' holds only "
                              f"{len(infos):,} tensors")
    infos = {k: t for k, t in infos.items() if not k.endswith(_BUFFER_SUFFIX)}
    expected = hf_shapes(cfg)
    lm_head = infos.pop(LM_HEAD, None) if cfg.tie_embeddings else None
    if lm_head is not None and lm_head.shape != expected[EMBED]:
        raise CheckpointError(f"'{weights}': {LM_HEAD} has shape {lm_head.shape}, expected "
                              f"{expected[EMBED]} (tied to the embedding)")
    validate_params(infos, expected, what=f"'{weights}'")
    bad = [f"{k} is {t.dtype}" for k, t in infos.items() if not np.issubdtype(t.dtype,
                                                                              np.floating)]
    if bad:
        raise CheckpointError(f"'{weights}': expected float tensors, but {', '.join(bad[:3])}")
    names = list(expected) + ([LM_HEAD] if lm_head is not None else [])
    tensors = read_tensors(weights, names, root)
    nonfinite = [k for k, a in tensors.items() if not np.isfinite(a).all()]
    if nonfinite:
        raise CheckpointError(f"'{weights}' holds NaN or inf values in {len(nonfinite)} "
                              f"tensors: {', '.join(nonfinite[:5])}")
    if lm_head is not None and not np.array_equal(tensors.pop(LM_HEAD), tensors[EMBED]):
        raise CheckpointError(f"'{weights}': {LM_HEAD} differs from {EMBED}, but config.json "
                              "says tie_word_embeddings: true")
    params = {k: a if a.ndim == 1 or k == EMBED else a.T for k, a in tensors.items()}
    return Llama(cfg, dtype=dtype, params=params).eval()


def hf_config(cfg, dtype=np.float32):
    """The config.json of a LlamaConfig in transformers' LlamaConfig terms."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.n_embd // cfg.n_head,
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,  # transformers < 5 reads this
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # >= 5
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": np.dtype(dtype).name,
        "use_cache": True,
    }


def _check_export_folder(folder):
    """Refuse a folder holding anything but an earlier Llama export (never overwrite a user's
    other files); an earlier export's files are replaced."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"'{folder}' is a file; save_pretrained needs a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    try:
        earlier = (folder / WEIGHTS_NAME).is_file() and read_json(
            folder / CONFIG_NAME, "config file", MAX_CONFIG_BYTES, folder,
            CheckpointError).get("model_type") == "llama"
    except (ValueError, AttributeError):
        earlier = False
    if not earlier:
        raise CheckpointError(f"'{folder}' is not empty and does not hold a Llama export; "
                              "save into a new or empty folder")


def save_pretrained(model, folder):
    """Write `model` as a Hugging Face Llama folder: model.safetensors (the model's dtype,
    matrices transposed to (out, in), no lm_head.weight when tied, as transformers writes
    it), then config.json, each atomically. The folder must be new, empty or an earlier
    Llama export. Returns the folder as a Path."""
    if not isinstance(model, Llama):
        raise ConfigError(f"save_pretrained needs a Llama, got {type(model).__name__}")
    folder = Path(os.fspath(folder)).expanduser()
    _check_export_folder(folder)
    st = _safetensors()
    tensors = {k: np.ascontiguousarray(a if a.ndim == 1 or k == EMBED else a.T)
               for k, a in model.params.items()}
    # format "pt": transformers refuses safetensors files whose metadata names no framework
    atomic_write_bytes(folder / WEIGHTS_NAME, st.save(tensors, metadata={"format": "pt"}))
    atomic_write_json(folder / CONFIG_NAME, hf_config(model.config, model.dtype))
    return folder


__all__ = ["from_pretrained", "save_pretrained", "config_from_hf", "hf_config", "hf_shapes"]
