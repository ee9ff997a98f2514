"""The safetensors format: a JSON header of names, dtypes, shapes and byte ranges, then raw
little-endian bytes; nothing is unpickled when it is read. Hugging Face checkpoints
(model.safetensors) use it.

Reading checks the header before it trusts it (read_safetensors_header): its length fits in
the file and in MAX_HEADER_BYTES, its JSON is bounded like all JSON numpygpt reads, and each
tensor's dtype is one NumPy has, its shape a list of non-negative ints, and its byte range
exactly its size, inside the file, and shared with no other tensor. Then read_tensors reads
each tensor straight into its array. Every problem is a CheckpointError naming the file.
"""

from __future__ import annotations

import math
import os
import struct
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import check_memory
from .checkpoint import CheckpointError
from .files import atomic_write_bytes, open_regular, parse_json

MAX_HEADER_BYTES = 16 << 20  # a safetensors header; GPT-2 XL's is 60 KB
# safetensors dtypes NumPy has (BF16 and the float8 kinds it has not)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
              "BOOL": "?"}


def _package():
    try:
        import safetensors.numpy
    except ImportError:
        raise CheckpointError("Hugging Face checkpoints need the safetensors package: "
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
        raise CheckpointError(f"no {path.name} in '{path.parent}'")

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
    wanted = infos if names is None else names
    check_memory(sum(infos[n].end - infos[n].start for n in wanted),
                 f"the tensors of '{path}'", CheckpointError,
                 "the checkpoint is too large for this machine")
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


def save_safetensors(path, tensors):
    """Write name -> ndarray as a .safetensors file, atomically, with the metadata
    {"format": "pt"} (transformers refuses files whose metadata names no framework)."""
    data = _package().save({k: np.ascontiguousarray(a) for k, a in tensors.items()},
                           metadata={"format": "pt"})
    atomic_write_bytes(path, data)


__all__ = ["TensorInfo", "read_safetensors_header", "read_tensors", "save_safetensors",
           "MAX_HEADER_BYTES"]
