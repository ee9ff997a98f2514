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

Reading never unpickles: np.load(..., allow_pickle=False) refuses object arrays, and every
failure (missing, truncated or foreign file, pickled data, bad metadata) becomes a
CheckpointError with a one-line message naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import atomic_save_npz, atomic_write_json

CKPT_NAME = "ckpt.npz"
FORMAT = "numpygpt-checkpoint"
VERSION = 1
META_KEY = "meta.json"
_ZIP_MAGIC = b"PK\x03\x04"  # every .npz is a zip archive and starts with a local file header


class CheckpointError(ValueError):
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
    """Return `a` as an ndarray, refusing object arrays (they would need pickle to store)."""
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise TypeError(f"{what} has dtype {a.dtype}; only plain numeric arrays are saved")
    return a


def save_checkpoint(out_dir, *, config, tokenizer, params, optimizer=None, train_state=None):
    """Save a checkpoint to OUT/ckpt.npz atomically, plus OUT/config.json, OUT/tokenizer.json.

    Inputs:
    - out_dir: folder to write into (created if needed)
    - config, tokenizer: JSON-able dicts
    - params: dict name -> ndarray, saved in its own dtype
    - optimizer: None, or {"hyper": {...JSON...}, "slots": {slot: {param name: ndarray}}}
    - train_state: JSON-able dict (step, rng.bit_generator.state, ...); None means {}

    Returns the path of ckpt.npz. Raises TypeError for object arrays or non-JSON values.
    """
    out_dir = Path(out_dir)
    train_state = {} if train_state is None else train_state
    arrays = {}
    for name, a in params.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"parameter names must be non-empty strings, got {name!r}")
        arrays[f"param/{name}"] = _array(a, f"parameter {name!r}")

    hyper = None
    if optimizer is not None:
        unknown = set(optimizer) - {"hyper", "slots"}
        if unknown:
            raise TypeError(f"optimizer dict has unknown keys {sorted(unknown)}; "
                            "expected 'hyper' and 'slots'")
        hyper = optimizer.get("hyper") or {}
        for slot, tensors in (optimizer.get("slots") or {}).items():
            # The slot is the text between the first two slashes, so it cannot contain one.
            if not isinstance(slot, str) or not slot or "/" in slot:
                raise TypeError(f"optimizer slot names must be non-empty strings without '/', "
                                f"got {slot!r}")
            for name, a in tensors.items():
                arrays[f"optim/{slot}/{name}"] = _array(a, f"optimizer slot {slot}/{name!r}")

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.loads(_to_json(config, "config")),
        "tokenizer": json.loads(_to_json(tokenizer, "tokenizer")),
        "optimizer": json.loads(_to_json(hyper, "optimizer hyperparameters")),
        "train_state": json.loads(_to_json(train_state, "train_state")),
    }
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                                     dtype=np.uint8)

    path = out_dir / CKPT_NAME
    atomic_save_npz(path, arrays)
    # Convenience copies, written after the authoritative file (see the module docstring).
    atomic_write_json(out_dir / "config.json", meta["config"])
    atomic_write_json(out_dir / "tokenizer.json", meta["tokenizer"])
    return path


# --- loading ----------------------------------------------------------------------------


def _read_arrays(path):
    """Read every array of the .npz at `path` into memory, without ever unpickling."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
        if not head:
            raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes)")
        if head != _ZIP_MAGIC:
            # np.load would try pickle on such a file; say plainly what it is not.
            raise CheckpointError(f"checkpoint '{path}' is not an .npz archive")
        f.seek(0)
        try:
            npz = np.load(f, allow_pickle=False)
        except Exception as e:  # zipfile, zlib and numpy report damage with many types
            raise CheckpointError(f"checkpoint '{path}' is damaged or truncated "
                                  f"({type(e).__name__}: {e})") from None
        arrays = {}
        with npz:
            for key in npz.files:
                # Object arrays only fail when accessed, so every member is read here.
                try:
                    a = npz[key]
                except ValueError as e:
                    if "pickle" in str(e).lower():
                        raise CheckpointError(f"checkpoint '{path}': entry {key!r} contains "
                                              "pickled data; refusing to load it") from None
                    raise CheckpointError(f"checkpoint '{path}' is damaged: entry {key!r} "
                                          f"({e})") from None
                except Exception as e:
                    raise CheckpointError(f"checkpoint '{path}' is damaged or truncated: entry "
                                          f"{key!r} ({type(e).__name__}: {e})") from None
                # Members not stored as .npy come back as raw bytes: not something we wrote.
                if not isinstance(a, np.ndarray):
                    raise CheckpointError(f"checkpoint '{path}': entry {key!r} is not a "
                                          ".npy array")
                arrays[key] = a
    return arrays


def _read_meta(path, arrays):
    """Decode and check the meta.json entry. Returns the metadata dict."""
    if META_KEY not in arrays:
        raise CheckpointError(f"checkpoint '{path}' has no {META_KEY} entry "
                              "(not a numpygpt checkpoint?)")
    raw = arrays.pop(META_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"checkpoint '{path}': {META_KEY} must be a 1-D uint8 array, "
                              f"got {raw.dtype} of shape {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise CheckpointError(f"checkpoint '{path}': {META_KEY} is not valid UTF-8 JSON "
                              f"({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"checkpoint '{path}': format is {got!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise CheckpointError(f"checkpoint '{path}': unsupported version {version!r} "
                              f"(this numpygpt reads version {VERSION})")
    for key in ("config", "tokenizer", "train_state"):
        if not isinstance(meta.get(key), dict):
            problem = "missing" if key not in meta else f"not an object ({meta[key]!r:.40})"
            raise CheckpointError(f"checkpoint '{path}': {META_KEY} key {key!r} is {problem}")
    hyper = meta.get("optimizer")
    if hyper is not None and not isinstance(hyper, dict):
        raise CheckpointError(f"checkpoint '{path}': optimizer must be an object or null")
    return meta


def load_checkpoint(path):
    """Load a checkpoint saved by save_checkpoint.

    Inputs:
    - path: the checkpoint folder, or the ckpt.npz file itself

    Returns a Checkpoint. Raises CheckpointError (one line, naming the file) on any problem.
    """
    given = Path(path)
    path = checkpoint_path(given)
    if not path.is_file():
        folder = given if path.name != given.name else path.parent
        raise CheckpointError(f"no checkpoint at '{path}' "
                              f"(train one with `python -m numpygpt train --out {folder}`)")
    try:
        arrays = _read_arrays(path)
    except OSError as e:  # e.g. permission denied, or a read error from the disk
        raise CheckpointError(f"cannot read checkpoint '{path}': {e}") from None
    meta = _read_meta(path, arrays)

    params, slots = {}, {}
    for key, a in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "param" and rest:
            params[rest] = a
            continue
        slot, _, name = rest.partition("/")
        if kind == "optim" and slot and name:
            slots.setdefault(slot, {})[name] = a
            continue
        raise CheckpointError(f"checkpoint '{path}': unexpected entry {key!r}")

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
