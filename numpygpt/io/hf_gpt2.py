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

A folder may come from anyone, so reading checks before it trusts: only regular files inside
the folder are read (see numpygpt.io.files), config.json and the tokenizer files are bounded in size
and nesting, the safetensors header is checked (each tensor's dtype, shape and byte range
inside the file, no two sharing bytes) and compared with config.json before any tensor is
read, only float tensors are accepted, every weight must be finite, and the tokenizer's
vocabulary must be the model's vocab_size.
"""

from __future__ import annotations

import http.client
import math
import os
import re
import struct
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data.corpora import default_cache_dir
from ..data.tokenizer_base import vocab_mismatch
from ..models.gpt import GPT, GPTConfig, param_shapes
from .checkpoint import CKPT_NAME, CheckpointError, validate_params
from .files import (
    MAX_CONFIG_BYTES,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    open_regular,
    parse_json,
    read_json,
)

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
MAX_HEADER_BYTES = 16 << 20  # a safetensors header; GPT-2 XL's is 60 KB
# safetensors dtypes NumPy has (BF16 and the float8 kinds it has not)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
              "BOOL": "?"}


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


def looks_like_gpt2_folder(path):
    """True if `path` is a folder meant to be in GPT-2 format: it has a config.json or a
    model.safetensors (of any kind: a broken link, a FIFO) and no ckpt.npz. from_pretrained
    then says what is wrong with it, where is_gpt2_folder would only answer False."""
    path = Path(path)
    return (path.is_dir() and not os.path.lexists(path / CKPT_NAME)
            and any(os.path.lexists(path / n) for n in (CONFIG_NAME, WEIGHTS_NAME)))


def _root(folder):
    """The folder that the files of `folder` must not leave through symbolic links: `folder`
    itself or, for a snapshot in Hugging Face's cache (models--org--name/snapshots/<rev>/,
    whose files are links into models--org--name/blobs/), the model's cache folder."""
    real = Path(os.path.realpath(folder))
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def gpt2_cache_folder(name, cache_dir=None):
    """Where download_gpt2 puts a model: <cache>/hf/<name>, <cache> = cache_dir or
    numpygpt.data.corpora.default_cache_dir() ($NUMPYGPT_CACHE or ~/.cache/numpygpt)."""
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


def _missing(path):
    return CheckpointError(f"no {path.name} in '{path.parent}' (a GPT-2 folder holds "
                           f"{CONFIG_NAME} and {WEIGHTS_NAME}; a numpygpt training run, "
                           f"{CKPT_NAME})")


def _read_config(folder, root):
    """folder/config.json as a dict: a regular file inside `root`, at most 1 MB."""
    path = folder / CONFIG_NAME
    if not os.path.lexists(path):
        raise _missing(path)
    d = read_json(path, "config file", MAX_CONFIG_BYTES, root, CheckpointError)
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
    n_embd = d.get("n_embd")
    want("n_inner", None, lambda v: v is None or (type(n_embd) is int and v == 4 * n_embd),
         "null (4 n_embd)")
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
                         dropout=d.get("resid_pdrop", 0.1), pos_encoding="learned")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise CheckpointError("GPT-2 checkpoints need the safetensors package: "
                              "pip install safetensors") from None
    return safetensors.numpy


class TensorInfo(NamedTuple):
    """A tensor as a safetensors header declares it; start and end are offsets in the file."""

    dtype: np.dtype
    shape: tuple
    start: int
    end: int


def read_safetensors_header(path, root=None):
    """name -> TensorInfo of a .safetensors file, from its header alone.

    The format: 8 bytes (little-endian uint64) giving the header's length N, N bytes of JSON
    {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
    {...}}, then the tensors' bytes, offsets counted from the end of the header. Before
    anything else is read we check that N fits in the file and in MAX_HEADER_BYTES, the JSON
    (bounded like all JSON we read), and that each tensor's dtype is one NumPy has, its shape
    is a list of non-negative ints, and its byte range is exactly its size, inside the file,
    and shared with no other tensor.

    Inputs:
    - path: the .safetensors file
    - root: if given, the folder `path` must not leave through symbolic links

    Raises CheckpointError.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise _missing(path)

    def bad(why):
        return CheckpointError(f"cannot read '{path}': {why}")

    with open_regular(path, "weights file", root=root, error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise bad(f"its header declares {n:,} bytes, more than the file's {size - 8:,} or "
                      f"the {MAX_HEADER_BYTES:,} numpygpt reads")
        header = f.read(n)
    d = parse_json(header, f"the header of '{path}'", CheckpointError)
    if not isinstance(d, dict):
        raise bad("its header is not a JSON object")
    if not isinstance(d.pop("__metadata__", {}), dict):
        raise bad("its __metadata__ is not a JSON object")

    def counts(v):
        return isinstance(v, list) and all(type(x) is int and x >= 0 for x in v)

    data_len, infos = size - 8 - n, {}
    for name, t in d.items():
        what = f"tensor {name!r:.80}"
        if not (isinstance(t, dict) and {"dtype", "shape", "data_offsets"} <= t.keys()):
            raise bad(f"{what} has no dtype, shape and data_offsets")
        kind, shape, offsets = t["dtype"], t["shape"], t["data_offsets"]
        if not isinstance(kind, str) or kind not in _ST_DTYPES:
            raise bad(f"{what} has dtype {kind!r:.20}, which NumPy cannot hold (numpygpt reads "
                      "F16, F32 and F64)")
        if not counts(shape):
            raise bad(f"{what} has the shape {shape!r:.60}")
        if not (counts(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1] <= data_len):
            raise bad(f"{what} has data_offsets {offsets!r:.60}, outside the file's "
                      f"{data_len:,} bytes of data")
        dtype = np.dtype(_ST_DTYPES[kind])
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if offsets[1] - offsets[0] != nbytes:
            raise bad(f"{what} of shape {tuple(shape)} and dtype {kind} takes {nbytes:,} bytes, "
                      f"but its data_offsets span {offsets[1] - offsets[0]:,}")
        infos[name] = TensorInfo(dtype, tuple(shape), 8 + n + offsets[0], 8 + n + offsets[1])
    spans = sorted((t.start, t.end, name) for name, t in infos.items() if t.end > t.start)
    for (_, end_a, a), (start_b, _, b) in pairwise(spans):
        if end_a > start_b:
            raise bad(f"tensors {a!r:.80} and {b!r:.80} share bytes")
    return infos


def read_tensors(path, names=None, root=None):
    """name -> ndarray of a .safetensors file (only `names`, if given), each read straight into
    its array after read_safetensors_header has checked the file. Raises CheckpointError."""
    path = Path(path)
    infos = read_safetensors_header(path, root)
    tensors = {}
    with open_regular(path, "weights file", root=root, error=CheckpointError) as f:
        for name in infos if names is None else names:
            t = infos[name]
            a = np.empty(math.prod(t.shape), dtype=t.dtype)
            f.seek(t.start)
            if f.readinto(a.view(np.uint8)) != t.end - t.start:
                raise CheckpointError(f"cannot read '{path}': it ends inside tensor {name!r}")
            tensors[name] = a.reshape(t.shape)
    return tensors


def _sort_tensors(tensors, cfg, where):
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
    validate_params(params, param_shapes(cfg), what=f"'{where}'")
    return params, lm_head


def gpt2_params(tensors, cfg, where="model.safetensors"):
    """Our parameters from GPT-2 tensors: drop the `transformer.` prefix, skip attention-mask
    buffers, check names, float dtypes and shapes, that every value is finite, and that a
    stored lm_head.weight is wte (tied).

    Returns name -> ndarray in param_shapes(cfg)'s order. Raises CheckpointError.
    """
    params, lm_head = _sort_tensors(tensors, cfg, where)
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
    Raises CheckpointError (a ValueError) for a missing, unreadable or unsupported checkpoint;
    the config and the tensors' names, dtypes and shapes are checked before a tensor is read.
    """
    folder = resolve(path_or_name, cache_dir)
    if os.path.lexists(folder / CKPT_NAME) and not os.path.lexists(folder / WEIGHTS_NAME):
        raise CheckpointError(f"'{folder}' is a numpygpt training checkpoint, not a GPT-2 "
                              "folder: load it with numpygpt.io.checkpoint.load_checkpoint, or "
                              "export it with save_pretrained")
    root, weights = _root(folder), folder / WEIGHTS_NAME
    if not os.path.lexists(weights):  # first: a numpygpt run's config.json is not GPT-2's
        raise _missing(weights)
    cfg = config_from_hf(_read_config(folder, root), f"'{folder / CONFIG_NAME}'")
    infos = read_safetensors_header(weights, root)
    if 12 * cfg.n_layer + 4 > 2 * len(infos):  # before param_shapes lists every layer's names
        raise CheckpointError(f"'{folder / CONFIG_NAME}': n_layer is {cfg.n_layer:,} (12 "
                              f"tensors each), but '{weights}' holds only {len(infos):,} tensors")
    _sort_tensors(infos, cfg, str(weights))  # names, dtypes, shapes: nothing read yet
    names = [n for n in infos if not _BUFFER.fullmatch(n.removeprefix(PREFIX))]
    params = gpt2_params(read_tensors(weights, names, root), cfg, str(weights))
    return GPT(cfg, dtype=dtype, params=params).eval()


def load_tokenizer(path_or_name, cache_dir=None):
    """The BPE tokenizer of a GPT-2 folder (vocab.json + merges.txt), or None if it has
    neither file. A GPT-2 name is resolved (and downloaded) as in from_pretrained.

    If the folder has a config.json, its vocab_size must be the tokenizer's: a smaller
    vocabulary could not decode ids the model emits, a larger one has ids the model cannot
    embed. Raises CheckpointError."""
    folder = resolve(path_or_name, cache_dir)
    root = _root(folder)
    vocab, merges = folder / VOCAB_NAME, folder / MERGES_NAME
    has_vocab, has_merges = os.path.lexists(vocab), os.path.lexists(merges)
    if not has_vocab and not has_merges:
        return None
    if not (has_vocab and has_merges):
        have, lack = (vocab, merges) if has_vocab else (merges, vocab)
        raise CheckpointError(f"'{folder}' has {have.name} but no {lack.name}; a GPT-2 "
                              "tokenizer needs both")
    from ..data.bpe import BPETokenizer

    try:
        tokenizer = BPETokenizer.from_gpt2_files(vocab, merges, root=root)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the tokenizer in '{folder}': {e}") from None
    if os.path.lexists(folder / CONFIG_NAME):
        V = _read_config(folder, root).get("vocab_size")
        problem = type(V) is int and vocab_mismatch(tokenizer.vocab_size, V)
        if problem:
            raise CheckpointError(f"'{folder}': {problem} ({VOCAB_NAME} against "
                                  f"{CONFIG_NAME})")
    return tokenizer


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
        earlier = is_gpt2_folder(folder) and read_json(
            config, "config file", MAX_CONFIG_BYTES, folder).get("model_type") == "gpt2"
    except (ValueError, AttributeError):
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
    given). Raises ValueError for a model GPT-2's format cannot hold (sinusoidal positions,
    unmerged LoRA adapters: merge_lora() first; a silent merge of a copy would hide it),
    a tokenizer that is not BPE, or a folder holding other things.

    Returns the folder as a Path.
    """
    cfg = model.config
    if getattr(model, "lora", None):  # GPT-2's format has no place for adapters
        raise ValueError("this model has unmerged LoRA adapters; call model.merge_lora() "
                         "first, then save_pretrained writes a plain GPT-2 folder")
    if cfg.pos_encoding != "learned":
        raise ValueError("GPT-2 has learned positions; a model with "
                         f"pos_encoding={cfg.pos_encoding!r} cannot be saved in GPT-2 format")
    if tokenizer is not None:
        if getattr(tokenizer, "kind", None) != "bpe":
            raise ValueError(f"only a BPE tokenizer can be saved in GPT-2 format (vocab.json + "
                             f"merges.txt), got {type(tokenizer).__name__}; pass tokenizer=None")
        problem = vocab_mismatch(tokenizer.vocab_size, cfg.vocab_size)
        if problem:  # from_pretrained + load_tokenizer would refuse the folder
            raise ValueError(problem)
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
           "config_from_hf", "hf_config", "gpt2_params", "read_tensors",
           "read_safetensors_header", "is_gpt2_folder", "looks_like_gpt2_folder", "gpt2_name",
           "gpt2_cache_folder", "resolve", "GPT2_NAMES", "HF_BASE_URL"]
