"""Llama checkpoints in and out, in the Hugging Face format (LlamaForCausalLM).

A Llama folder holds `config.json` (LlamaConfig: hidden_size, num_attention_heads,
num_key_value_heads, rope_theta, ...) and `model.safetensors`, whose tensors have the names of
numpygpt's Llama params (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
..., lm_head.weight unless the head is tied). PyTorch's nn.Linear stores its weight
(out, in); numpygpt stores (in, out), so every matrix but the embedding is transposed on the
way in and on the way out, lm_head included ((V, C) there, (C, V) here).

    model = Llama.from_pretrained("path/to/folder")   # read_folder, then the model
    model.save_pretrained("export")                   # write_folder; transformers loads it

As io/hf_gpt2.py, this module knows the format, not the model: it deals in the config's
fields (a dict) and arrays, and the model (models/llama.py) calls it.

Rotary convention: Hugging Face's "rotate_half" (pairs (i, i + hs/2)), which layers/rope.py
implements; the checkpoints on the Hub are converted to it.

Reading checks before it trusts, as io/hf_gpt2.py does for GPT-2 (it reuses its readers):
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

from .checkpoint import CKPT_NAME, CheckpointError, validate_params
from .files import atomic_write_json
from .hf_gpt2 import check_export_folder, folder_root, make_config, read_config
from .safetensors import read_safetensors_header, read_tensors, save_safetensors

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
ARCHITECTURE = "LlamaForCausalLM"
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
_BUFFER_SUFFIX = "rotary_emb.inv_freq"  # older exports stored RoPE's frequencies: not weights


def _missing(path):
    return CheckpointError(f"no {path.name} in '{path.parent}' (a Llama folder holds "
                           f"{CONFIG_NAME} and {WEIGHTS_NAME})")


def config_from_hf(d, where=CONFIG_NAME):
    """Map a Llama config.json (a dict) to the fields of numpygpt's LlamaConfig (a dict),
    refusing what numpygpt's Llama cannot compute. Missing optional keys take transformers'
    LlamaConfig defaults (num_key_value_heads = num_attention_heads, rms_norm_eps 1e-6,
    rope_theta 10000, max_position_embeddings 2048, untied head). Raises CheckpointError
    listing every problem.
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
    return {"vocab_size": d["vocab_size"], "block_size": d.get("max_position_embeddings", 2048),
            "n_layer": d["num_hidden_layers"], "n_head": nh,
            "n_kv_head": d.get("num_key_value_heads") or nh, "n_embd": C,
            "intermediate_size": d["intermediate_size"], "rope_theta": theta,
            "rms_eps": d.get("rms_norm_eps", 1e-6),
            "tie_embeddings": d.get("tie_word_embeddings", False)}


def hf_shapes(shapes):
    """Hugging Face name -> shape as stored there: our shapes, matrices transposed."""
    return {k: s if k == EMBED or len(s) == 1 else s[::-1] for k, s in shapes.items()}


def read_folder(folder, make, param_shapes):
    """(config, params) of a Hugging Face Llama folder (config.json + model.safetensors).

    Inputs:
    - folder: the folder
    - make: builds the model's config from its fields (LlamaConfig); a value it refuses is a
      CheckpointError naming config.json
    - param_shapes: config -> {name: shape}, the parameters the model expects, (in, out)

    config.json and the tensors' names, dtypes and shapes are checked before a tensor is
    read. Returns (the config, name -> ndarray in numpygpt's (in, out) layout). Raises
    CheckpointError for a missing, unreadable or unsupported checkpoint.
    """
    folder = Path(os.fspath(folder)).expanduser()
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise CheckpointError(f"'{folder}' is {what}: give a folder with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}")
    if os.path.lexists(folder / CKPT_NAME) and not os.path.lexists(folder / WEIGHTS_NAME):
        raise CheckpointError(f"'{folder}' is a numpygpt training checkpoint, not a Hugging "
                              "Face Llama folder")
    root, weights = folder_root(folder), folder / WEIGHTS_NAME
    if not os.path.lexists(folder / CONFIG_NAME):
        raise _missing(folder / CONFIG_NAME)
    if not os.path.lexists(weights):
        raise _missing(weights)
    where = f"'{folder / CONFIG_NAME}'"
    cfg = make_config(make, config_from_hf(read_config(folder, root, "Llama"), where), where)
    infos = read_safetensors_header(weights, root)
    if 9 * cfg.n_layer + 2 > len(infos):  # before listing every layer's names
        raise CheckpointError(f"{where}: num_hidden_layers is {cfg.n_layer:,} (9 tensors "
                              f"each), but '{weights}' holds only {len(infos):,} tensors")
    infos = {k: t for k, t in infos.items() if not k.endswith(_BUFFER_SUFFIX)}
    expected = hf_shapes(param_shapes(cfg))
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
    return cfg, {k: a if a.ndim == 1 or k == EMBED else a.T for k, a in tensors.items()}


LLAMA_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head",
                "intermediate_size", "rope_theta", "rms_eps", "tie_embeddings")


def hf_config(fields, dtype=np.float32):
    """The config.json of a Llama, given its config's fields (LlamaConfig.to_dict()), in
    transformers' LlamaConfig terms. Anything else is a ValueError."""
    if not isinstance(fields, dict) or set(fields) != set(LLAMA_FIELDS):
        got = type(fields).__name__ if not isinstance(fields, dict) else sorted(fields)
        raise ValueError(f"a Llama folder needs a Llama's config fields (LlamaConfig.to_dict(): "
                         f"{', '.join(LLAMA_FIELDS)}), got {got}")
    theta = fields["rope_theta"]
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "vocab_size": fields["vocab_size"],
        "hidden_size": fields["n_embd"],
        "intermediate_size": fields["intermediate_size"],
        "num_hidden_layers": fields["n_layer"],
        "num_attention_heads": fields["n_head"],
        "num_key_value_heads": fields["n_kv_head"],
        "head_dim": fields["n_embd"] // fields["n_head"],
        "max_position_embeddings": fields["block_size"],
        "rms_norm_eps": fields["rms_eps"],
        "rope_theta": theta,  # transformers < 5 reads this
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},  # >= 5
        "rope_scaling": None,
        "tie_word_embeddings": fields["tie_embeddings"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": np.dtype(dtype).name,
        "use_cache": True,
    }


def write_folder(folder, fields, params, dtype=np.float32):
    """Write a Hugging Face Llama folder: model.safetensors (the arrays as they are, matrices
    transposed to (out, in), no lm_head.weight when tied, as transformers writes it), then
    config.json (from the config's `fields`), each atomically. The folder must be new,
    empty or an earlier Llama export. Returns the folder as a Path."""
    folder = Path(os.fspath(folder)).expanduser()
    check_export_folder(folder, "llama", CheckpointError)
    save_safetensors(folder / WEIGHTS_NAME, {k: a if a.ndim == 1 or k == EMBED else a.T
                                             for k, a in params.items()})
    atomic_write_json(folder / CONFIG_NAME, hf_config(fields, dtype))
    return folder


__all__ = ["read_folder", "write_folder", "config_from_hf", "hf_config", "hf_shapes"]
