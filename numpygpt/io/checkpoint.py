"""Training checkpoints: one file, written atomically, read without pickle.

A checkpoint lives in a folder OUT. The authoritative file is OUT/ckpt.npz, an uncompressed
.npz archive holding
- `param/<name>`          every model parameter, in its own dtype (e.g. `param/wte.weight`)
- `optim/<slot>/<name>`   optimizer state arrays (slots such as `m`, `v`, `momentum`)
- `meta.json`             a uint8 array: the UTF-8 bytes of a JSON document
                          {"format": "numpygpt-checkpoint", "version": 1, "config": {...},
                           "tokenizer": {...}, "optimizer": {hyperparameters} or null,
                           "train_state": {step, RNG state, ...}}

Everything lives in one file so that a single os.replace swaps the whole state: a crash
mid-save leaves the previous checkpoint, never new weights with an old optimizer or step.
JSON rather than npz arrays for the metadata because RNG states hold integers wider than
64 bits, which Python's json round-trips exactly.

OUT/config.json and OUT/tokenizer.json are human-readable copies for people and other tools.
They are written after ckpt.npz, so they may lag behind it after a crash; loading never
reads them.

Reading trusts nothing in the file, and checks it before it costs memory or time:
- only a regular file is read (not a FIFO or a device), and a folder's ckpt.npz must not be a
  symbolic link that leaves the folder;
- the archive is read by io/npz.py, which checks the zip directory and every entry's headers
  before any array is allocated; this module adds its own rule: only meta.json, param/<name>
  and optim/<slot>/<name> entries, params and optimizer slots in float16/32/64;
- then the metadata's types, n_layer against the parameters, and that every weight is
  finite.
Every failure becomes a CheckpointError with a one-line message naming the file. The format
knows no model: checking the parameters against one is validate_params's job, called by the
model that loads them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .files import (
    MAX_TOKENIZER_BYTES,
    atomic_save_npz,
    atomic_write_json,
    human_bytes,
    open_regular,
    parse_json,
)
from .npz import read_npz

CKPT_NAME = "ckpt.npz"
FORMAT = "numpygpt-checkpoint"
VERSION = 1
META_KEY = "meta.json"
MAX_META_BYTES = MAX_TOKENIZER_BYTES  # meta.json holds the tokenizer
FLOAT_DTYPES = ("float16", "float32", "float64")  # for params and optimizer slots


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, damaged, unsafe or does not fit the model."""


@dataclass
class Checkpoint:
    """Everything a checkpoint holds.

    - config, tokenizer: JSON dicts
    - params: name -> ndarray
    - optimizer: {"hyper": {...JSON...}, "slots": {slot: {param name: ndarray}}}, or None
    - train_state: JSON dict (step, RNG state, ...)
    """

    config: dict
    tokenizer: dict
    params: dict[str, np.ndarray]
    optimizer: dict | None = None
    train_state: dict = field(default_factory=dict)


def checkpoint_path(path):
    """The ckpt.npz file meant by `path`: the file itself, or OUT/ckpt.npz for a folder."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        return path / CKPT_NAME
    return path


def checkpoint_exists(out_dir):
    """True if `out_dir` (a folder, or a ckpt.npz path) holds a checkpoint file."""
    return checkpoint_path(out_dir).is_file()


# --- saving -----------------------------------------------------------------------------


def _to_json(obj, what):
    """Serialise a JSON section, naming the section if something in it is not JSON-able."""

    def default(o):
        # NumPy scalars (np.int64 step counters, np.float32 losses) are common and harmless.
        if isinstance(o, np.generic) and o.dtype != object:
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    try:
        return json.dumps(obj, default=default, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint {what} must be JSON-serialisable: {e}") from None


def _array(a, what):
    """Return `a` as an ndarray, refusing what load_checkpoint refuses: dtypes other than
    float16/32/64 (object arrays would need pickle) and NaN or inf."""
    a = np.asarray(a)
    if a.dtype.name not in FLOAT_DTYPES:
        raise TypeError(f"{what} has dtype {a.dtype}; only {', '.join(FLOAT_DTYPES)} arrays "
                        "are saved")
    bad = a.size - np.count_nonzero(np.isfinite(a))
    if bad:
        raise ValueError(f"{what} has {bad:,} non-finite values (NaN or inf); a checkpoint "
                         "holding them could not be loaded")
    return a


def _check_name(name, what):
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what} names must be non-empty strings, got {name!r}")


def save_checkpoint(out_dir, *, config, tokenizer, params, optimizer=None, train_state=None):
    """Save a checkpoint to OUT/ckpt.npz atomically, plus OUT/config.json, OUT/tokenizer.json.

    Inputs:
    - out_dir: folder to write into (created if needed)
    - config, tokenizer: JSON-able dicts
    - params: dict name -> ndarray, saved in its own dtype
    - optimizer: None, or {"hyper": {...JSON...}, "slots": {slot: {param name: ndarray}}}
    - train_state: JSON-able dict (step, rng.bit_generator.state, ...); None means {}

    Returns the path of ckpt.npz. Raises TypeError for arrays that are not float16/32/64 or
    for non-JSON values, ValueError for NaN or inf in an array; so whatever it saves,
    load_checkpoint loads.
    """
    out_dir = Path(out_dir)
    train_state = {} if train_state is None else train_state
    arrays = {}
    for name, a in params.items():
        _check_name(name, "parameter")
        arrays[f"param/{name}"] = _array(a, f"parameter {name!r}")

    hyper = None
    if optimizer is not None:
        unknown = set(optimizer) - {"hyper", "slots"}
        if unknown:
            raise TypeError(f"optimizer dict has unknown keys {sorted(unknown)}; "
                            "expected 'hyper' and 'slots'")
        hyper = optimizer.get("hyper") or {}
        if not isinstance(hyper, dict):  # load_checkpoint reads an object or null only
            raise TypeError(f"optimizer 'hyper' must be a dict, got {type(hyper).__name__}")
        for slot, tensors in (optimizer.get("slots") or {}).items():
            # The slot is the text between the first two slashes, so it cannot contain one.
            if not isinstance(slot, str) or not slot or "/" in slot:
                raise TypeError(f"optimizer slot names must be non-empty strings without '/', "
                                f"got {slot!r}")
            for name, a in tensors.items():
                _check_name(name, f"optimizer slot {slot!r} tensor")
                arrays[f"optim/{slot}/{name}"] = _array(a, f"optimizer slot {slot}/{name!r}")

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.loads(_to_json(config, "config")),
        "tokenizer": json.loads(_to_json(tokenizer, "tokenizer")),
        "optimizer": json.loads(_to_json(hyper, "optimizer hyperparameters")),
        "train_state": json.loads(_to_json(train_state, "train_state")),
    }
    raw = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    if len(raw) > MAX_META_BYTES:
        raise ValueError(f"checkpoint metadata is {human_bytes(len(raw))}, more than the "
                         f"{human_bytes(MAX_META_BYTES)} load_checkpoint reads")
    parse_json(raw, "checkpoint metadata", ValueError)  # nesting and keys load_checkpoint takes
    arrays[META_KEY] = np.frombuffer(raw, dtype=np.uint8)

    path = out_dir / CKPT_NAME
    atomic_save_npz(path, arrays)
    # Convenience copies, written after the authoritative file (see the module docstring).
    atomic_write_json(out_dir / "config.json", meta["config"])
    atomic_write_json(out_dir / "tokenizer.json", meta["tokenizer"])
    return path


# --- loading ----------------------------------------------------------------------------


def _check_kind(where):
    """The checkpoint's rule for read_npz: which entries it may hold, with which dtypes."""

    def check(key, shape, dtype):
        if key == META_KEY:
            if dtype != np.uint8 or len(shape) != 1:
                raise CheckpointError(f"{where}: {META_KEY} must be a 1-D uint8 array, got "
                                      f"{dtype} of shape {shape}")
            if math.prod(shape) > MAX_META_BYTES:
                raise CheckpointError(f"{where}: {META_KEY} is {human_bytes(math.prod(shape))}, "
                                      f"more than the {human_bytes(MAX_META_BYTES)} numpygpt "
                                      "reads")
            return
        kind, _, rest = key.partition("/")
        slot, _, name = rest.partition("/")
        if not ((kind == "param" and rest) or (kind == "optim" and slot and name)):
            raise CheckpointError(f"{where}: unexpected entry {key!r}")
        if dtype.kind != "f" or dtype.name not in FLOAT_DTYPES:
            what = "parameter" if kind == "param" else "optimizer slot"
            raise CheckpointError(f"{where}: {what} {key!r} has dtype {str(dtype):.60}; "
                                  f"parameters and optimizer slots must be "
                                  f"{', '.join(FLOAT_DTYPES)}")

    return check


def _read_arrays(path, f, keys=None):
    """Every array of the checkpoint open as `f` (or those in `keys`), through read_npz."""
    where = f"checkpoint '{path}'"
    return read_npz(f, where, check=_check_kind(where), keys=keys, error=CheckpointError,
                    what="a checkpoint")


def _read_meta(path, arrays):
    """Decode and check the meta.json entry: every field load_checkpoint passes on has the
    type it should. Returns the metadata dict."""
    where = f"checkpoint '{path}'"
    if META_KEY not in arrays:
        raise CheckpointError(f"{where} has no {META_KEY} entry (not a numpygpt checkpoint?)")
    raw = arrays.pop(META_KEY).tobytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where}: {META_KEY} is not valid UTF-8 JSON (byte {e.start}: "
                              f"{e.reason})") from None
    meta = parse_json(text, f"{where}: {META_KEY}", CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{where}: format is {got!r:.60}, expected {FORMAT!r}")
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise CheckpointError(f"{where}: unsupported version {version!r:.60} "
                              f"(this numpygpt reads version {VERSION})")
    for key in ("config", "tokenizer", "train_state"):
        if not isinstance(meta.get(key), dict):
            problem = "missing" if key not in meta else f"not an object ({meta[key]!r:.40})"
            raise CheckpointError(f"{where}: {META_KEY} key {key!r} is {problem}")
    hyper = meta.get("optimizer")
    if hyper is not None and not isinstance(hyper, dict):
        raise CheckpointError(f"{where}: optimizer must be an object or null")
    return meta


def _check_finite(path, arrays):
    """Refuse NaN or inf in any array: NaN logits make every sampled token 0 (blank text)
    and a resumed run cannot recover from them."""
    bad = []
    for key, a in arrays.items():
        n = a.size - np.count_nonzero(np.isfinite(a))
        if n:
            bad.append(f"{key} ({n:,} of {a.size:,})")
    if bad:
        raise CheckpointError(
            f"checkpoint '{path}' holds NaN or inf values in {len(bad)} arrays: {_listing(bad)}; "
            "a model with them predicts nothing (NaN logits). It was saved after training "
            "diverged, or damaged: use an earlier checkpoint (to inspect this one, "
            "load_checkpoint(path, check_finite=False))")


def _check_model(path, config, params):
    """When the checkpoint says which model it holds (config["model"], as numpygpt's training
    writes), check n_layer against the layers the parameters have: a claim of 10^6 layers
    would list 12 million names before any shape is compared. (The tokenizer is checked
    against the model's vocab_size where it is built: numpygpt.data.tokenizers.)"""
    model = config.get("model")
    if not isinstance(model, dict):
        return
    n_layer = model.get("n_layer")
    layers = {name.split(".")[1] for name in params if name.startswith("h.")}  # GPT-2's names
    layers |= {name.split(".")[2] for name in params if name.startswith("model.layers.")}  # Llama's
    if type(n_layer) is int and n_layer != len(layers):
        raise CheckpointError(f"checkpoint '{path}': its config says n_layer={n_layer:,} but "
                              f"it holds the parameters of {len(layers):,} layers")


def is_checkpoint(path):
    """True if `path` is a regular file holding a numpygpt checkpoint. Reads and checks only
    its metadata (a big checkpoint costs nothing; a FIFO or a device is never opened)."""
    try:
        with open_regular(path, "checkpoint", error=CheckpointError) as f:
            _read_meta(path, _read_arrays(path, f, keys={META_KEY}))
        return True
    except (CheckpointError, OSError):
        return False


def load_checkpoint(path, check_finite=True):
    """Load a checkpoint saved by save_checkpoint.

    Inputs:
    - path: the checkpoint folder, or the ckpt.npz file itself
    - check_finite: refuse a checkpoint holding NaN or inf (False: load it, to inspect it)

    Returns a Checkpoint. Raises CheckpointError (one line, naming the file) on any problem.
    """
    given = Path(path)
    path = checkpoint_path(given)
    if not os.path.lexists(path):
        folder = given if path.name != given.name else path.parent
        raise CheckpointError(f"no checkpoint at '{path}' "
                              f"(train one with `python -m numpygpt train --out {folder}`)")
    # A folder's ckpt.npz must stay inside it; a file named by the user is read where it is.
    root = given if path != given else None
    try:
        with open_regular(path, "checkpoint", root=root, error=CheckpointError) as f:
            arrays = _read_arrays(path, f)
    except OSError as e:  # e.g. a read error from the disk
        raise CheckpointError(f"cannot read checkpoint '{path}': {e.strerror or e}") from None
    meta = _read_meta(path, arrays)
    if check_finite:
        _check_finite(path, arrays)

    params, slots = {}, {}
    for key, a in arrays.items():  # every key is param/<name> or optim/<slot>/<name> by now
        kind, _, rest = key.partition("/")
        if kind == "param":
            params[rest] = a
        else:
            slot, _, name = rest.partition("/")
            slots.setdefault(slot, {})[name] = a
    _check_model(path, meta["config"], params)

    hyper = meta.get("optimizer")
    if hyper is None and slots:
        raise CheckpointError(f"checkpoint '{path}' has optimizer arrays but no optimizer "
                              "metadata")
    optimizer = None if hyper is None else {"hyper": hyper, "slots": slots}
    return Checkpoint(config=meta["config"], tokenizer=meta["tokenizer"], params=params,
                      optimizer=optimizer, train_state=meta["train_state"])


# --- checking against a model ---------------------------------------------------------------


def _listing(items, limit=5):
    """'a, b, c' for at most `limit` items, then '... (N more)'."""
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def validate_params(params, expected_shapes, dtype=None, what="checkpoint"):
    """Check that `params` has exactly the expected names and shapes (and dtype, if given).

    Inputs:
    - params: dict name -> ndarray (e.g. Checkpoint.params)
    - expected_shapes: dict name -> shape tuple, from the model the params are meant for
    - dtype: if not None, every array must have this dtype
    - what: how to name the source in the message, e.g. "checkpoint 'out/ckpt.npz'"

    Returns None. Raises CheckpointError listing every kind of mismatch (first few of each).
    """
    missing = [n for n in expected_shapes if n not in params]
    unexpected = [n for n in params if n not in expected_shapes]
    shapes = [f"{n} expected {tuple(s)}, got {np.shape(params[n])}"
              for n, s in expected_shapes.items()
              if n in params and np.shape(params[n]) != tuple(s)]
    dtypes = []
    if dtype is not None:
        want = np.dtype(dtype)
        dtypes = [f"{n} is {np.asarray(a).dtype}" for n, a in params.items()
                  if n in expected_shapes and np.asarray(a).dtype != want]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
    if shapes:
        problems.append(f"wrong shape {len(shapes)}: {_listing(shapes)}")
    if dtypes:
        problems.append(f"wrong dtype {len(dtypes)} (expected {want}): {_listing(dtypes)}")
    if problems:
        raise CheckpointError(f"{what} parameters do not match the model: " + "; ".join(problems))
