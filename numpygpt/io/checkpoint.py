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
- the zip directory first: how many entries it declares, no name twice, no two entries
  sharing bytes, every entry's declared size consistent with its bytes on disk;
- then each entry's .npy header (shape and dtype): the size it declares must be the entry's
  size, and params and optimizer slots must be float16/32/64 (int, bool, complex, datetime,
  structured and object arrays are refused: object arrays would need pickle, which is never
  run); all of this before any array is allocated or any data decompressed;
- then the data (the zip's CRC catches flipped bytes), the metadata's types, the tokenizer's
  vocabulary against the model's vocab_size, and that every weight is finite.
Every failure becomes a CheckpointError with a one-line message naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..data.tokenizer_base import vocab_mismatch
from ..errors import UserError
from .files import (
    MAX_TOKENIZER_BYTES,
    atomic_save_npz,
    atomic_write_json,
    human_bytes,
    open_regular,
    parse_json,
)

CKPT_NAME = "ckpt.npz"
FORMAT = "numpygpt-checkpoint"
VERSION = 1
META_KEY = "meta.json"
_ZIP_MAGIC = b"PK\x03\x04"  # every .npz is a zip archive and starts with a local file header
MAX_META_BYTES = MAX_TOKENIZER_BYTES  # meta.json holds the tokenizer
MAX_ENTRIES = 100_000  # GPT-2 XL with AdamW's two slots has 1,735 entries
MAX_EXPANSION = 100  # a compressed entry above 1 MiB may expand at most this much
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


@dataclass
class _Entry:
    """One array of the archive, as its zip and .npy headers declare it (nothing read yet)."""

    info: zipfile.ZipInfo
    key: str  # the entry's name without ".npy", e.g. "param/wte.weight"
    header_len: int  # bytes of .npy header before the data
    shape: tuple
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def _kind(key):
    """'meta', 'param' or 'optim' for the entries a checkpoint may hold, else None."""
    if key == META_KEY:
        return "meta"
    kind, _, rest = key.partition("/")
    if kind == "param" and rest:
        return kind
    slot, _, name = rest.partition("/")
    return kind if kind == "optim" and slot and name else None


def _end_record(f, size):
    """(entries, directory bytes) as the zip's end record declares them, or None if it has
    none (zipfile then reports the damage). Read before zipfile builds its directory, so that
    a file declaring millions of entries is refused before it costs memory."""
    tail_len = min(size, 22 + 0xFFFF)  # the 22-byte end record, then a comment of <= 64 KiB
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    entries, dir_size = struct.unpack("<HL", tail[i + 10:i + 16])
    zip64 = i >= 20 and tail[i - 20:i - 16] == b"PK\x06\x07"
    if (entries == 0xFFFF or dir_size == 0xFFFFFFFF) and zip64:
        # zip64 (over 65,535 entries or 4 GB): a locator just before the end record says
        # where the zip64 end record, with the real counts, is
        f.seek(struct.unpack("<Q", tail[i - 12:i - 4])[0])
        record = f.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, dir_size = struct.unpack("<QQ", record[32:48])
    return entries, dir_size


def _npy_header(member):
    """(shape, fortran_order, dtype, header length) of a .npy stream, or None if the stream
    is not .npy. np.lib.format parses the header (a Python literal) without eval."""
    magic = member.read(8)  # "\x93NUMPY", major, minor
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        return None
    read_header = {1: np.lib.format.read_array_header_1_0,
                   2: np.lib.format.read_array_header_2_0}.get(magic[6])
    if read_header is None:
        raise ValueError(f".npy format version {magic[6]}.{magic[7]} is not supported")
    shape, fortran_order, dtype = read_header(member)
    return shape, fortran_order, dtype, member.tell()


def _check_entry(where, zf, info):
    """Check one zip entry's declared sizes, then its .npy header. Returns an _Entry."""
    name = info.filename
    key = name.removesuffix(".npy")
    kind = _kind(key)
    if key == name:
        raise CheckpointError(f"{where}: entry {name!r} is not a .npy array")
    if kind is None:
        raise CheckpointError(f"{where}: unexpected entry {key!r}")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{where}: entry {key!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise CheckpointError(f"{where}: entry {key!r} declares {info.file_size:,} bytes but "
                                  f"stores {info.compress_size:,}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > max(1 << 20, MAX_EXPANSION * info.compress_size):
            raise CheckpointError(
                f"{where}: entry {key!r} would expand from {human_bytes(info.compress_size)} to "
                f"{human_bytes(info.file_size)}; numpygpt refuses compressed entries that "
                f"expand more than {MAX_EXPANSION} times (its own are not compressed)")
    else:
        raise CheckpointError(f"{where}: entry {key!r} uses zip compression method "
                              f"{info.compress_type}; numpygpt reads stored or deflated entries")

    with zf.open(info) as member:
        header = _npy_header(member)
    if header is None:
        raise CheckpointError(f"{where}: entry {key!r} is not a .npy array")
    shape, fortran_order, dtype, header_len = header
    e = _Entry(info, key, header_len, shape, dtype, fortran_order)
    if dtype.hasobject:  # would be unpickled: never
        raise CheckpointError(f"{where}: entry {key!r} contains pickled data; refusing to load it")
    if kind == "meta":
        if dtype != np.uint8 or len(shape) != 1:
            raise CheckpointError(f"{where}: {META_KEY} must be a 1-D uint8 array, got {dtype} "
                                  f"of shape {shape}")
        if e.nbytes > MAX_META_BYTES:
            raise CheckpointError(f"{where}: {META_KEY} is {human_bytes(e.nbytes)}, more than "
                                  f"the {human_bytes(MAX_META_BYTES)} numpygpt reads")
    elif dtype.kind != "f" or dtype.name not in FLOAT_DTYPES:
        what = "parameter" if kind == "param" else "optimizer slot"
        raise CheckpointError(f"{where}: {what} {key!r} has dtype {str(dtype):.60}; parameters "
                              f"and optimizer slots must be {', '.join(FLOAT_DTYPES)}")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{where}: entry {key!r} declares the shape {shape}")
    if header_len + e.nbytes != info.file_size:
        raise CheckpointError(
            f"{where}: entry {key!r} declares shape {shape} of {dtype} "
            f"({human_bytes(e.nbytes)}) but holds {human_bytes(info.file_size - header_len)}")
    return e


def _read_entry(zf, e):
    """The array of entry `e`, read in chunks straight into its memory."""
    a = np.empty(math.prod(e.shape), dtype=e.dtype)
    buf, pos = a.view(np.uint8), 0
    with zf.open(e.info) as member:
        member.read(e.header_len)
        while pos < buf.size:  # the zip's CRC is checked as the last chunk arrives
            chunk = member.read(min(1 << 24, buf.size - pos))
            if not chunk:
                raise EOFError(f"entry {e.key!r} ends early")
            buf[pos:pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            pos += len(chunk)
    return a.reshape(e.shape[::-1]).T if e.fortran_order else a.reshape(e.shape)


def _read_arrays(path, f, keys=None):
    """Every array of the .npz open as `f` (or only those named in `keys`), each checked (see
    the module docstring) before any is read. Returns key -> ndarray, e.g.
    "param/wte.weight" -> array."""
    where = f"checkpoint '{path}'"
    size = os.fstat(f.fileno()).st_size
    head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"{where} is empty (0 bytes)")
    if head != _ZIP_MAGIC:
        # np.load would try pickle on such a file; say plainly what it is not.
        raise CheckpointError(f"{where} is not an .npz archive")
    try:
        end = _end_record(f, size)
        if end is not None and (end[0] > MAX_ENTRIES or end[1] > MAX_ENTRIES * 1024):
            raise CheckpointError(f"{where} declares {end[0]:,} entries in a "
                                  f"{human_bytes(end[1])} directory; a checkpoint holds at "
                                  f"most {MAX_ENTRIES:,}")
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            twice = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
            if twice:
                raise CheckpointError(f"{where} holds {len(twice)} entry names twice, e.g. "
                                      f"{twice[0]!r}; which one is meant is ambiguous")
            spans = sorted((i.header_offset, i.header_offset + 30 + i.compress_size, i.filename)
                           for i in infos)  # a local header is 30 bytes and more
            for (_, end_a, a), (start_b, _, b) in pairwise(spans):
                if end_a > start_b:  # the trick of zip bombs that reuse bytes
                    raise CheckpointError(f"{where}: entries {a!r} and {b!r} overlap")
            if spans and spans[-1][1] > size:
                raise CheckpointError(f"{where} is truncated: entry {spans[-1][2]!r} ends past "
                                      "the end of the file")
            entries = [_check_entry(where, zf, i) for i in infos]
            total = sum(e.nbytes for e in entries)
            from ..models.gpt import machine_memory

            ram = machine_memory()
            if ram is not None and total > ram:
                raise CheckpointError(f"{where} holds {human_bytes(total)} of arrays, more than "
                                      f"this machine's {human_bytes(ram)} of RAM")
            return {e.key: _read_entry(zf, e) for e in entries if keys is None or e.key in keys}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            TypeError, SyntaxError, struct.error, NotImplementedError, RuntimeError) as e:
        # zipfile, zlib and numpy's header parser report damage with many types
        reason = " ".join(str(e).split())
        raise CheckpointError(f"{where} is damaged or truncated ({type(e).__name__}: "
                              f"{reason:.200})") from None


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


def _check_model(path, config, tokenizer, params):
    """When the checkpoint says which model it holds (config["model"], as numpygpt's training
    writes), check what a lying file could make expensive or wrong later: n_layer against the
    layers the parameters have (a claim of 10^6 layers would list 12 million names before any
    shape is compared), and the tokenizer's vocabulary against vocab_size."""
    model = config.get("model")
    if not isinstance(model, dict):
        return
    n_layer = model.get("n_layer")
    layers = {name.split(".")[1] for name in params if name.startswith("h.")}  # GPT-2's names
    layers |= {name.split(".")[2] for name in params if name.startswith("model.layers.")}  # Llama's
    if type(n_layer) is int and n_layer != len(layers):
        raise CheckpointError(f"checkpoint '{path}': its config says n_layer={n_layer:,} but "
                              f"it holds the parameters of {len(layers):,} layers")
    V = model.get("vocab_size")
    if type(V) is not int:
        return  # GPTConfig.from_dict reports it
    from ..data.corpora import tokenizer_from_dict
    from ..data.tokenizer_base import TokenizerError

    try:
        tok = tokenizer_from_dict(tokenizer)
    except TokenizerError as e:  # a malformed description (a bug elsewhere keeps its traceback)
        raise CheckpointError(f"checkpoint '{path}': its tokenizer is not usable: {e}") from None
    problem = vocab_mismatch(tok.vocab_size, V)
    if problem:
        raise CheckpointError(f"checkpoint '{path}': {problem}")


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
    _check_model(path, meta["config"], meta["tokenizer"], params)

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
