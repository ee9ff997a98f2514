"""GPT-2 checkpoints in the Hugging Face format, read and written as plain configs and arrays.

A GPT-2 folder (a name on the Hub, see io/hub.py, resolves to one) holds
- `config.json`        the hyperparameters (GPT2Config: n_embd, n_layer, n_head, n_positions, ...)
- `model.safetensors`  the tensors (io/safetensors.py)
- `vocab.json`, `merges.txt`  the byte-level BPE tokenizer (read by data/bpe.py)

Our parameter names are GPT-2's (`wte.weight`, `h.0.attn.c_attn.weight`, ...), and our linear
weights are stored (in, out) like GPT-2's Conv1D, so the tensors load as they are: no renaming
beyond an optional `transformer.` prefix, no transposes. The LM head is tied to `wte`.

This module knows the format, not the model: `read_folder` maps config.json to the fields of
numpygpt's config and checks the tensors against the shapes the caller expects, and
`write_folder` writes fields and arrays back. GPT.from_pretrained and GPT.save_pretrained
(models/gpt.py) call them, so a model can load itself without this module importing it.

A folder may come from anyone, so reading checks before it trusts: only regular files inside
the folder are read (io/files.py), config.json is bounded in size and nesting, the
safetensors header is checked and compared with config.json before any tensor is read, only
float tensors are accepted and every weight must be finite. Every problem with reading is a
CheckpointError, every export refusal a ValueError, each one line that says what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .checkpoint import CKPT_NAME, CheckpointError, validate_params
from .files import MAX_CONFIG_BYTES, atomic_write_json, read_json
from .safetensors import read_safetensors_header, read_tensors, save_safetensors

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
VOCAB_NAME, MERGES_NAME = "vocab.json", "merges.txt"
GPT2_VOCAB_SIZE, GPT2_EOT_ID = 50257, 50256  # <|endoftext|> is GPT-2's last token
PREFIX = "transformer."  # GPT2LMHeadModel's name for the GPT2Model inside it
# Attention-mask buffers that older exports store next to the weights (not parameters).
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are 0.5 x (1 + tanh(...)), like ours


# --- the folder ------------------------------------------------------------------------------


def is_gpt2_folder(path):
    """True if `path` is a folder in GPT-2 format (config.json + model.safetensors) and not a
    numpygpt training checkpoint (those have a ckpt.npz, and a config.json copy too)."""
    path = Path(path)
    return ((path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()
            and not (path / CKPT_NAME).exists())


def looks_like_gpt2_folder(path):
    """True if `path` is a folder meant to be in GPT-2 format: it has a config.json or a
    model.safetensors (of any kind: a broken link, a FIFO) and no ckpt.npz. read_folder
    then says what is wrong with it, where is_gpt2_folder would only answer False."""
    path = Path(path)
    return (path.is_dir() and not os.path.lexists(path / CKPT_NAME)
            and any(os.path.lexists(path / n) for n in (CONFIG_NAME, WEIGHTS_NAME)))


def folder_root(folder):
    """The folder that the files of `folder` must not leave through symbolic links: `folder`
    itself or, for a snapshot in Hugging Face's cache (models--org--name/snapshots/<rev>/,
    whose files are links into models--org--name/blobs/), the model's cache folder."""
    real = Path(os.path.realpath(folder))
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def missing(path, kind="GPT-2"):
    """The error for a file a Hugging Face folder lacks."""
    return CheckpointError(f"no {path.name} in '{path.parent}' (a {kind} folder holds "
                           f"{CONFIG_NAME} and {WEIGHTS_NAME}; a numpygpt training run, "
                           f"{CKPT_NAME})")


def read_config(folder, root, kind="GPT-2"):
    """folder/config.json as a dict: a regular file inside `root`, at most 1 MB."""
    path = Path(folder) / CONFIG_NAME
    if not os.path.lexists(path):
        raise missing(path, kind)
    d = read_json(path, "config file", MAX_CONFIG_BYTES, root, CheckpointError)
    if not isinstance(d, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object, got {type(d).__name__}")
    return d


def make_config(make, fields, where):
    """make(**fields) (a model's config class), its ConfigError a CheckpointError naming
    the file: a value of config.json that the model refuses."""
    try:
        return make(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


# --- config.json -----------------------------------------------------------------------------


def config_from_hf(d, where=CONFIG_NAME):
    """Map a GPT-2 config.json (a dict) to the fields of numpygpt's GPTConfig (a dict),
    refusing what numpygpt's GPT cannot compute.

    Keys: vocab_size, n_embd, n_layer, n_head, n_positions (or the older n_ctx); dropout is
    resid_pdrop. Missing optional keys take GPT2Config's defaults. Raises CheckpointError
    listing every problem.
    """
    kind = d.get("model_type", "gpt2")
    if kind != "gpt2":  # another model altogether: say so, not which of its keys differ
        hint = (" (a Llama folder loads with numpygpt.Llama.from_pretrained in Python)"
                if kind == "llama" else "")
        raise CheckpointError(f"{where}: model_type is {kind!r}, and this reads GPT-2 "
                              f"folders only ('gpt2'){hint}")
    problems = []

    def want(key, default, ok, expected):
        value = d.get(key, default)
        if not ok(value):
            problems.append(f"{key} is {value!r}, numpygpt supports only {expected}")

    want("activation_function", "gelu_new", lambda v: v in _TANH_GELUS,
         "'gelu_new' (the tanh approximation of GELU)")
    want("layer_norm_epsilon", 1e-5, lambda v: v == 1e-5, "1e-05")
    n_embd = d.get("n_embd")
    want("n_inner", None, lambda v: v is None or (type(n_embd) is int and v == 4 * n_embd),
         "null (4 n_embd)")
    want("scale_attn_weights", True, lambda v: v is True, "true")
    want("scale_attn_by_inverse_layer_idx", False, lambda v: v is False, "false")
    want("tie_word_embeddings", True, lambda v: v is True, "true (LM head tied to wte)")
    want("add_cross_attention", False, lambda v: v is False, "false")
    block = d.get("n_positions", d.get("n_ctx"))
    absent = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if k not in d]
    absent += ["n_positions (or n_ctx)"] if block is None else []
    if absent:
        problems.append("missing " + ", ".join(absent))
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    return {"vocab_size": d["vocab_size"], "block_size": block, "n_layer": d["n_layer"],
            "n_head": d["n_head"], "n_embd": d["n_embd"], "dropout": d.get("resid_pdrop", 0.1),
            "pos_encoding": "learned"}


GPT_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout",
              "pos_encoding")


def hf_config(fields):
    """The config.json of a GPT, given its config's fields (GPTConfig.to_dict()), in
    GPT2Config's terms (transformers reads it). Anything else is a ValueError (a Llama's
    config goes through io/hf_llama.py: Llama.save_pretrained)."""
    if not isinstance(fields, dict) or set(fields) != set(GPT_FIELDS):
        got = type(fields).__name__ if not isinstance(fields, dict) else sorted(fields)
        raise ValueError(f"GPT-2's format needs a GPT's config fields (GPTConfig.to_dict(): "
                         f"{', '.join(GPT_FIELDS)}), got {got}; a Llama saves itself with "
                         "Llama.save_pretrained")
    V = fields["vocab_size"]
    eot = GPT2_EOT_ID if V == GPT2_VOCAB_SIZE else None  # only GPT-2's own vocabulary
    p = float(fields["dropout"])
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": V,
        "n_positions": fields["block_size"],
        "n_ctx": fields["block_size"],  # the older name, for older readers
        "n_embd": fields["n_embd"],
        "n_layer": fields["n_layer"],
        "n_head": fields["n_head"],
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-05,
        "resid_pdrop": p,
        "embd_pdrop": p,
        "attn_pdrop": p,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": True,
        "use_cache": True,
    }


# --- the tensors -----------------------------------------------------------------------------


def _sort_tensors(tensors, shapes, where):
    """Our name -> tensor for GPT-2 tensors (arrays, or TensorInfos before anything is read):
    the `transformer.` prefix dropped, attention-mask buffers skipped; and the stored
    lm_head.weight or None. Checks names, float dtypes and shapes. Raises CheckpointError."""
    params, problems, lm_head = {}, [], None
    for name, a in tensors.items():
        short = name.removeprefix(PREFIX)
        if _BUFFER.fullmatch(short):
            continue
        if short == "lm_head.weight":
            lm_head = a
            continue
        if short in params:
            problems.append(f"{short} is stored twice (with and without '{PREFIX}')")
        elif not np.issubdtype(a.dtype, np.floating):
            problems.append(f"{name} has dtype {a.dtype}, expected floating point")
        params[short] = a
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems[:5]))
    validate_params(params, shapes, what=f"'{where}'")
    return params, lm_head


def gpt2_params(tensors, shapes, where=WEIGHTS_NAME):
    """Our parameters from GPT-2 tensors: drop the `transformer.` prefix, skip attention-mask
    buffers, check names, float dtypes and `shapes` (name -> shape, the model's), that every
    value is finite, and that a stored lm_head.weight is wte (tied).

    Returns name -> ndarray in the order of `shapes`. Raises CheckpointError.
    """
    params, lm_head = _sort_tensors(tensors, shapes, where)
    bad = [f"{k} ({n:,} of {a.size:,})" for k, a in params.items()
           if (n := a.size - np.count_nonzero(np.isfinite(a)))]
    if bad:
        more = f", ... ({len(bad) - 5} more)" if len(bad) > 5 else ""
        raise CheckpointError(f"'{where}' holds NaN or inf values in {len(bad)} tensors: "
                              f"{', '.join(bad[:5])}{more}; a model with them predicts nothing "
                              "(NaN logits)")
    if lm_head is not None and not np.array_equal(lm_head, params["wte.weight"]):
        raise CheckpointError(f"'{where}': lm_head.weight differs from wte.weight; numpygpt "
                              "ties the LM head to the token embedding, so it cannot load an "
                              "untied head")
    return {k: params[k] for k in shapes}


def read_folder(folder, make, param_shapes):
    """(config, params) of a GPT-2 folder.

    Inputs:
    - folder: a folder with config.json and model.safetensors (io.hub.resolve finds it)
    - make: builds the model's config from its fields (GPTConfig); a value it refuses is a
      CheckpointError naming config.json
    - param_shapes: config -> {name: shape}, the parameters the model expects

    config.json and the tensors' names, dtypes and shapes are checked before a tensor is
    read. Returns (the config, name -> ndarray). Raises CheckpointError.
    """
    folder = Path(folder)
    if os.path.lexists(folder / CKPT_NAME) and not os.path.lexists(folder / WEIGHTS_NAME):
        raise CheckpointError(f"'{folder}' is a numpygpt training checkpoint, not a GPT-2 "
                              "folder: load it with numpygpt.io.checkpoint.load_checkpoint, or "
                              "export it with save_pretrained")
    root, weights = folder_root(folder), folder / WEIGHTS_NAME
    if not os.path.lexists(weights):  # first: a numpygpt run's config.json is not GPT-2's
        raise missing(weights)
    where = f"'{folder / CONFIG_NAME}'"
    cfg = make_config(make, config_from_hf(read_config(folder, root), where), where)
    infos = read_safetensors_header(weights, root)
    if 12 * cfg.n_layer + 4 > 2 * len(infos):  # before param_shapes lists every layer's names
        raise CheckpointError(f"{where}: n_layer is {cfg.n_layer:,} (12 tensors each), but "
                              f"'{weights}' holds only {len(infos):,} tensors")
    shapes = param_shapes(cfg)
    _sort_tensors(infos, shapes, str(weights))  # names, dtypes, shapes: nothing read yet
    names = [n for n in infos if not _BUFFER.fullmatch(n.removeprefix(PREFIX))]
    return cfg, gpt2_params(read_tensors(weights, names, root), shapes, str(weights))


# --- writing ---------------------------------------------------------------------------------


def check_export_folder(folder, model_type="gpt2", error=ValueError):
    """Refuse a folder that holds anything but an earlier export of this `model_type`
    (never overwrite a user's other files); an earlier export's files are replaced."""
    kind = {"gpt2": "GPT-2", "llama": "Llama"}.get(model_type, model_type)
    if folder.exists() and not folder.is_dir():
        raise error(f"'{folder}' is a file; save_pretrained needs a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    try:
        earlier = is_gpt2_folder(folder) and read_json(
            folder / CONFIG_NAME, "config file", MAX_CONFIG_BYTES, folder,
            CheckpointError).get("model_type") == model_type
    except (ValueError, AttributeError):
        earlier = False
    if not earlier:
        raise error(f"'{folder}' is not empty and does not hold a {kind} export; save into a "
                    "new or empty folder")


def write_folder(folder, fields, params, tokenizer=None):
    """Write a GPT-2 checkpoint in Hugging Face format: folder/model.safetensors (float32,
    names with the `transformer.` prefix, as transformers' GPT2LMHeadModel writes them; no
    lm_head.weight: it is tied to wte), the tokenizer's vocab.json + merges.txt if given (its
    save_gpt2_files), and folder/config.json last (from the config's `fields`). Each file is
    written atomically.

    The folder must be new, empty, or an earlier GPT-2 export (whose config and weights are
    then replaced; its other files, such as its tokenizer files, are kept when no tokenizer
    is given); a folder holding other things is a ValueError. Returns the folder as a Path.
    """
    folder = Path(folder).expanduser()
    check_export_folder(folder)
    save_safetensors(folder / WEIGHTS_NAME, {PREFIX + k: np.asarray(v, dtype=np.float32)
                                             for k, v in params.items()})
    if tokenizer is not None:
        tokenizer.save_gpt2_files(folder)
    atomic_write_json(folder / CONFIG_NAME, hf_config(fields))
    return folder


__all__ = ["read_folder", "write_folder", "config_from_hf", "hf_config", "gpt2_params",
           "is_gpt2_folder", "looks_like_gpt2_folder", "folder_root", "read_config",
           "check_export_folder"]
