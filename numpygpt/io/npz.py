"""A safe reader of .npz archives (NumPy's zip of .npy arrays), which trusts nothing in the file.

np.load would read whatever a file declares: a zip directory of millions of entries, an array
of a terabyte, an object array that runs pickle. `read_npz` checks before anything costs
memory or time:
- the zip directory first: how many entries it declares, no name twice, no two entries
  sharing bytes (the trick of zip bombs), every entry inside the file;
- each entry's declared sizes: a stored entry stores what it declares, a compressed one may
  expand at most MAX_EXPANSION times; only stored and deflated entries, none encrypted;
- each entry's .npy header (shape and dtype, parsed without eval): the size it declares must
  be the entry's size, object dtypes (pickle) are refused, and the caller's own rule
  (`check(key, shape, dtype)`) sees every entry;
- the total against this machine's RAM;
and only then reads the data, each array straight into its memory (the zip's CRC catches
flipped bytes). Every failure is one line of the caller's error class, naming the file.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ..errors import check_memory
from .files import FileError, human_bytes

ZIP_MAGIC = b"PK\x03\x04"  # every .npz is a zip archive and starts with a local file header
MAX_ENTRIES = 100_000  # GPT-2 XL with AdamW's two slots has 1,735 entries
MAX_EXPANSION = 100  # a compressed entry above 1 MiB may expand at most this much


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


def _check_entry(where, zf, info, check, error):
    """Check one zip entry's declared sizes, then its .npy header. Returns an _Entry."""
    name = info.filename
    key = name.removesuffix(".npy")
    if key == name:
        raise error(f"{where}: entry {name!r} is not a .npy array")
    if info.flag_bits & 0x1:
        raise error(f"{where}: entry {key!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise error(f"{where}: entry {key!r} declares {info.file_size:,} bytes but stores "
                        f"{info.compress_size:,}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > max(1 << 20, MAX_EXPANSION * info.compress_size):
            raise error(f"{where}: entry {key!r} would expand from "
                        f"{human_bytes(info.compress_size)} to {human_bytes(info.file_size)}; "
                        f"numpygpt refuses compressed entries that expand more than "
                        f"{MAX_EXPANSION} times (its own are not compressed)")
    else:
        raise error(f"{where}: entry {key!r} uses zip compression method "
                    f"{info.compress_type}; numpygpt reads stored or deflated entries")

    with zf.open(info) as member:
        header = _npy_header(member)
    if header is None:
        raise error(f"{where}: entry {key!r} is not a .npy array")
    shape, fortran_order, dtype, header_len = header
    e = _Entry(info, key, header_len, shape, dtype, fortran_order)
    if dtype.hasobject:  # would be unpickled: never
        raise error(f"{where}: entry {key!r} contains pickled data; refusing to load it")
    if check is not None:
        check(key, shape, dtype)
    if any(d < 0 for d in shape):
        raise error(f"{where}: entry {key!r} declares the shape {shape}")
    if header_len + e.nbytes != info.file_size:
        raise error(f"{where}: entry {key!r} declares shape {shape} of {dtype} "
                    f"({human_bytes(e.nbytes)}) but holds "
                    f"{human_bytes(info.file_size - header_len)}")
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


def read_npz(f, where, check=None, keys=None, error=FileError, what="an archive"):
    """Every array of the .npz archive open as the binary file `f` (or only those named in
    `keys`), each checked (see the module docstring) before any is read.

    Inputs:
    - f: an open binary file, seekable
    - where: how messages name the file, e.g. "checkpoint 'out/ckpt.npz'"
    - check: optional check(key, shape, dtype) raising `error` for an entry the caller does
      not accept, called for every entry before any data is read
    - keys: read only these entries (every entry is still checked)
    - error: the exception class to raise
    - what: how messages name what the archive may hold at most, e.g. "a checkpoint"

    Returns key -> ndarray, the key being the entry's name without ".npy".
    """
    size = os.fstat(f.fileno()).st_size
    head = f.read(len(ZIP_MAGIC))
    if not head:
        raise error(f"{where} is empty (0 bytes)")
    if head != ZIP_MAGIC:
        # np.load would try pickle on such a file; say plainly what it is not.
        raise error(f"{where} is not an .npz archive")
    try:
        end = _end_record(f, size)
        if end is not None and (end[0] > MAX_ENTRIES or end[1] > MAX_ENTRIES * 1024):
            raise error(f"{where} declares {end[0]:,} entries in a {human_bytes(end[1])} "
                        f"directory; {what} holds at most {MAX_ENTRIES:,}")
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            twice = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
            if twice:
                raise error(f"{where} holds {len(twice)} entry names twice, e.g. {twice[0]!r}; "
                            "which one is meant is ambiguous")
            spans = sorted((i.header_offset, i.header_offset + 30 + i.compress_size, i.filename)
                           for i in infos)  # a local header is 30 bytes and more
            for (_, end_a, a), (start_b, _, b) in pairwise(spans):
                if end_a > start_b:  # the trick of zip bombs that reuse bytes
                    raise error(f"{where}: entries {a!r} and {b!r} overlap")
            if spans and spans[-1][1] > size:
                raise error(f"{where} is truncated: entry {spans[-1][2]!r} ends past the end "
                            "of the file")
            entries = [_check_entry(where, zf, i, check, error) for i in infos]
            check_memory(sum(e.nbytes for e in entries), f"the arrays of {where}", error,
                         "the file is too large for this machine")
            return {e.key: _read_entry(zf, e) for e in entries if keys is None or e.key in keys}
    except error:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            TypeError, SyntaxError, struct.error, NotImplementedError, RuntimeError) as e:
        # zipfile, zlib and numpy's header parser report damage with many types
        reason = " ".join(str(e).split())
        raise error(f"{where} is damaged or truncated ({type(e).__name__}: "
                    f"{reason:.200})") from None
