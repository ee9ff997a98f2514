"""GPT-2 checkpoints in and out, in the Hugging Face format.

A GPT-2 checkpoint on the Hugging Face Hub is a folder with
- `config.json`        the hyperparameters (GPT2Config: n_embd, n_layer, n_head, n_positions, ...)
- `model.safetensors`  the tensors: a JSON header (names, dtypes, shapes, offsets) and raw
                       little-endian bytes; nothing is unpickled when it is read
- `vocab.json`, `merges.txt`  the byte-level BPE tokenizer

Our parameter names are GPT-2's (`wte.weight`, `h.0.attn.c_attn.weight`, ...), and our linear
weights are stored (in, out) like GPT-2's Conv1D, so the tensors load as they are: no renaming
beyond an optional `transformer.` prefix, no transposes. The LM head is tied to `wte`.

    model = from_pretrained("gpt2")            # downloads once into the cache, then offline
    model = from_pretrained("path/to/folder")  # config.json + model.safetensors
    tok = load_tokenizer("gpt2")               # BPETokenizer, or None without vocab files
    save_pretrained(model, "export", tok)      # transformers' GPT2LMHeadModel can load it

Every problem with reading a folder, a file or a download is a CheckpointError (a ValueError),
and every export refusal a ValueError, with a one-line message that says what is wrong and what
to do (the command line prints it as it is).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .checkpoint import CKPT_NAME, CheckpointError, validate_params
from .data import default_cache_dir
from .io import atomic_open, atomic_write_bytes, atomic_write_json
from .model import GPT, GPTConfig, param_shapes

HF_BASE_URL = "https://huggingface.co"  # the HF_ENDPOINT environment variable overrides it
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_REPO_OWNER = "openai-community"
GPT2_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
VOCAB_NAME, MERGES_NAME = "vocab.json", "merges.txt"
GPT2_VOCAB_SIZE, GPT2_EOT_ID = 50257, 50256  # <|endoftext|> is GPT-2's last token
PREFIX = "transformer."  # GPT2LMHeadModel's name for the GPT2Model inside it
# Attention-mask buffers that older exports store next to the weights (not parameters).
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are 0.5 x (1 + tanh(...)), like ours


# --- where a checkpoint lives --------------------------------------------------------------


def gpt2_name(name):
    """The short GPT-2 name ("gpt2", ...) for "gpt2" or "openai-community/gpt2", else None."""
    if not isinstance(name, str):
        return None
    owner, _, short = name.rpartition("/")
    if owner in ("", GPT2_REPO_OWNER) and short in GPT2_NAMES:
        return short
    return None


def is_gpt2_folder(path):
    """True if `path` is a folder in GPT-2 format (config.json + model.safetensors) and not a
    numpygpt training checkpoint (those have a ckpt.npz, and a config.json copy too)."""
    path = Path(path)
    return ((path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()
            and not (path / CKPT_NAME).exists())


def gpt2_cache_folder(name, cache_dir=None):
    """Where download_gpt2 puts a model: <cache>/hf/<name>, <cache> = cache_dir or
    numpygpt.data.default_cache_dir() ($NUMPYGPT_CACHE or ~/.cache/numpygpt)."""
    short = gpt2_name(name)
    if short is None:
        raise ValueError(f"{name!r} is not a GPT-2 name (one of {', '.join(GPT2_NAMES)})")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "hf" / short


def resolve(path_or_name, cache_dir=None):
    """The folder meant by `path_or_name`: an existing folder as it is, or a GPT-2 name's
    cache folder (downloading what it lacks). A folder wins over a name it shadows."""
    path = Path(os.fspath(path_or_name)).expanduser()
    if path.is_dir():
        return path
    if gpt2_name(os.fspath(path_or_name)) is not None:
        return download_gpt2(os.fspath(path_or_name), cache_dir)
    what = "a file, not a folder" if path.exists() else "no such folder"
    raise CheckpointError(f"'{path_or_name}' is {what}: give a folder with {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME}, or one of the names {', '.join(GPT2_NAMES)}")


# --- downloading -----------------------------------------------------------------------------


def download_gpt2(name, cache_dir=None, timeout=30, progress=True):
    """Download GPT-2's config.json, vocab.json, merges.txt and model.safetensors once.

    Files already in the cache folder are used as they are: each one was written atomically
    (temp file + os.replace), so a file that exists is complete. A failed download leaves
    nothing behind but the files that were complete before it.

    Inputs:
    - name: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl" (or "openai-community/gpt2", ...)
    - cache_dir: see gpt2_cache_folder
    - timeout: socket timeout in seconds
    - progress: show a progress bar (tqdm, only on a terminal)

    Returns the folder. Raises CheckpointError saying what to do when a file cannot be fetched.
    """
    short = gpt2_name(name)
    folder = gpt2_cache_folder(short, cache_dir)
    repo = f"{GPT2_REPO_OWNER}/{short}"
    base = (os.environ.get("HF_ENDPOINT") or HF_BASE_URL).rstrip("/")  # e.g. a mirror
    for fname in GPT2_FILES:
        path = folder / fname
        if path.is_file():
            continue
        url = f"{base}/{repo}/resolve/main/{fname}"
        try:
            _fetch(url, path, timeout, progress)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()
                reason = e  # "HTTP Error 404: Not Found"
            else:
                reason = getattr(e, "reason", e)
            raise CheckpointError(
                f"could not download {url} ({reason}); without internet, download "
                f"{', '.join(GPT2_FILES)} by hand from {HF_BASE_URL}/{repo}/tree/main into "
                f"'{folder}' (then '{short}' finds them), or into any folder and pass that "
                f"folder's path instead of '{name}'") from None
    return folder


def _fetch(url, path, timeout, progress):
    """Stream `url` into `path` atomically, checking the length the server announced."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "numpygpt"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None and total.isdigit() else None
        got = 0
        with atomic_open(path) as f, tqdm(total=total, unit="B", unit_scale=True,
                                          desc=path.name, disable=None if progress else True,
                                          leave=False) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            if total is not None and got != total:  # raising here discards the temp file
                raise OSError(f"connection closed after {got:,} of {total:,} bytes")


# --- reading ---------------------------------------------------------------------------------


def _read_json(path):
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no {path.name} in '{path.parent}' (a GPT-2 folder holds "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME})") from None
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8 or bad JSON
        raise CheckpointError(f"cannot read '{path}': {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object, got {type(d).__name__}")
    return d


def config_from_hf(d, where="config.json"):
    """Map a GPT-2 config.json (a dict) to a GPTConfig, refusing what our model cannot do.

    Keys: vocab_size, n_embd, n_layer, n_head, n_positions (or the older n_ctx); dropout is
    resid_pdrop. Missing optional keys take GPT2Config's defaults. Raises CheckpointError
    listing every problem.
    """
    problems = []

    def want(key, default, ok, expected):
        value = d.get(key, default)
        if not ok(value):
            problems.append(f"{key} is {value!r}, numpygpt supports only {expected}")

    want("model_type", "gpt2", lambda v: v == "gpt2", "'gpt2'")
    want("activation_function", "gelu_new", lambda v: v in _TANH_GELUS,
         "'gelu_new' (the tanh approximation of GELU)")
    want("layer_norm_epsilon", 1e-5, lambda v: v == 1e-5, "1e-05")
    want("n_inner", None, lambda v: v is None or v == 4 * d.get("n_embd", 0), "null (4 n_embd)")
    want("scale_attn_weights", True, lambda v: v is True, "true")
    want("scale_attn_by_inverse_layer_idx", False, lambda v: v is False, "false")
    want("tie_word_embeddings", True, lambda v: v is True, "true (LM head tied to wte)")
    want("add_cross_attention", False, lambda v: v is False, "false")
    block = d.get("n_positions", d.get("n_ctx"))
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if k not in d]
    missing += ["n_positions (or n_ctx)"] if block is None else []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    try:
        return GPTConfig(vocab_size=d["vocab_size"], block_size=block, n_layer=d["n_layer"],
                         n_head=d["n_head"], n_embd=d["n_embd"],
                         dropout=float(d.get("resid_pdrop", 0.1)), pos_encoding="learned")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise CheckpointError("GPT-2 checkpoints need the safetensors package: "
                              "pip install safetensors") from None
    return safetensors.numpy


def read_tensors(path):
    """name -> ndarray of a .safetensors file, with a CheckpointError if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {path.name} in '{path.parent}' (a GPT-2 folder holds "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    st = _safetensors()
    try:
        return st.load_file(path)
    except Exception as e:  # the Rust reader's SafetensorError, dtypes NumPy lacks (bfloat16)
        raise CheckpointError(f"cannot read '{path}': {type(e).__name__}: {e}") from None


def gpt2_params(tensors, cfg, where="model.safetensors"):
    """Our parameters from GPT-2 tensors: drop the `transformer.` prefix, skip attention-mask
    buffers, check that a stored lm_head.weight is wte (tied), then check names and shapes.

    Returns name -> ndarray in param_shapes(cfg)'s order. Raises CheckpointError.
    """
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
    validate_params(params, param_shapes(cfg), what=f"'{where}'")
    if lm_head is not None and not np.array_equal(lm_head, params["wte.weight"]):
        raise CheckpointError(f"'{where}': lm_head.weight differs from wte.weight; numpygpt "
                              "ties the LM head to the token embedding, so it cannot load an "
                              "untied head")
    return {k: params[k] for k in param_shapes(cfg)}


def from_pretrained(path_or_name, dtype=np.float32, cache_dir=None):
    """Load a GPT-2 checkpoint in Hugging Face format as a GPT.

    Inputs:
    - path_or_name: a folder with config.json and model.safetensors, or "gpt2",
      "gpt2-medium", "gpt2-large", "gpt2-xl" (also "openai-community/gpt2", ...): downloaded
      once into the cache (see download_gpt2), read from there afterwards
    - dtype: np.float32 or np.float64 (the tensors are cast to it)
    - cache_dir: see gpt2_cache_folder

    Returns a GPT in eval mode (no dropout), as transformers' from_pretrained does.
    Raises CheckpointError (a ValueError) for a missing, unreadable or unsupported checkpoint.
    """
    folder = resolve(path_or_name, cache_dir)
    if (folder / CKPT_NAME).exists() and not (folder / WEIGHTS_NAME).exists():
        raise CheckpointError(f"'{folder}' is a numpygpt training checkpoint, not a GPT-2 "
                              "folder: load it with numpygpt.checkpoint.load_checkpoint, or "
                              "export it with save_pretrained")
    cfg = config_from_hf(_read_json(folder / CONFIG_NAME), f"'{folder / CONFIG_NAME}'")
    weights = folder / WEIGHTS_NAME
    params = gpt2_params(read_tensors(weights), cfg, str(weights))
    return GPT(cfg, dtype=dtype, params=params).eval()


def load_tokenizer(path_or_name, cache_dir=None):
    """The BPE tokenizer of a GPT-2 folder (vocab.json + merges.txt), or None if it has
    neither file. A GPT-2 name is resolved (and downloaded) as in from_pretrained."""
    folder = resolve(path_or_name, cache_dir)
    vocab, merges = folder / VOCAB_NAME, folder / MERGES_NAME
    if not vocab.is_file() and not merges.is_file():
        return None
    if not (vocab.is_file() and merges.is_file()):
        have, lack = (vocab, merges) if vocab.is_file() else (merges, vocab)
        raise CheckpointError(f"'{folder}' has {have.name} but no {lack.name}; a GPT-2 "
                              "tokenizer needs both")
    from .bpe import BPETokenizer

    try:
        return BPETokenizer.from_gpt2_files(vocab, merges)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the tokenizer in '{folder}': {e}") from None


# --- writing ---------------------------------------------------------------------------------


def hf_config(cfg):
    """The config.json of a GPTConfig in GPT2Config's terms (transformers reads it)."""
    eot = GPT2_EOT_ID if cfg.vocab_size == GPT2_VOCAB_SIZE else None  # only GPT-2's own vocab
    p = float(cfg.dropout)
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,  # the older name, for older readers
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
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


def _check_export_folder(folder):
    """Refuse a folder that holds anything but an earlier GPT-2 export (never overwrite a
    user's other files); an earlier export's files are replaced."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"'{folder}' is a file; save_pretrained needs a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    config = folder / CONFIG_NAME
    try:
        earlier = is_gpt2_folder(folder) and json.loads(
            config.read_text(encoding="utf-8")).get("model_type") == "gpt2"
    except (OSError, ValueError, AttributeError):
        earlier = False
    if not earlier:
        raise ValueError(f"'{folder}' is not empty and does not hold a GPT-2 export; "
                         "save into a new or empty folder")


def save_pretrained(model, folder, tokenizer=None):
    """Write `model` as a GPT-2 checkpoint in Hugging Face format.

    Writes folder/model.safetensors (float32, names with the `transformer.` prefix, as
    transformers' GPT2LMHeadModel writes them; no lm_head.weight: it is tied to wte),
    folder/vocab.json + merges.txt if `tokenizer` is given (a BPETokenizer), and
    folder/config.json last. Each file is written atomically.

    The folder must be new, empty, or an earlier GPT-2 export (whose config and weights are
    then replaced; other files, such as its tokenizer files, are kept when no tokenizer is
    given). Raises ValueError for a model GPT-2's format cannot hold (sinusoidal positions),
    a tokenizer that is not BPE, or a folder holding other things.

    Returns the folder as a Path.
    """
    cfg = model.config
    if cfg.pos_encoding != "learned":
        raise ValueError("GPT-2 has learned positions; a model with "
                         f"pos_encoding={cfg.pos_encoding!r} cannot be saved in GPT-2 format")
    if tokenizer is not None:
        if getattr(tokenizer, "kind", None) != "bpe":
            raise ValueError(f"only a BPE tokenizer can be saved in GPT-2 format (vocab.json + "
                             f"merges.txt), got {type(tokenizer).__name__}; pass tokenizer=None")
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model "
                             f"only {cfg.vocab_size}")
    folder = Path(folder).expanduser()
    _check_export_folder(folder)
    st = _safetensors()
    tensors = {PREFIX + k: np.ascontiguousarray(v, dtype=np.float32)
               for k, v in model.params.items()}
    # format "pt": transformers refuses safetensors files whose metadata names no framework
    atomic_write_bytes(folder / WEIGHTS_NAME, st.save(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_gpt2_files(folder)
    atomic_write_json(folder / CONFIG_NAME, hf_config(cfg))
    return folder


__all__ = ["from_pretrained", "load_tokenizer", "save_pretrained", "download_gpt2",
           "config_from_hf", "hf_config", "gpt2_params", "read_tensors", "is_gpt2_folder",
           "gpt2_name", "gpt2_cache_folder", "resolve", "GPT2_NAMES", "HF_BASE_URL"]
