"""Atomic file writes: a file is either the old version or the new one, never half-written.

We write to a temporary file in the same folder, flush it to disk, then os.replace() it over
the target (an atomic rename on POSIX and Windows). A crash mid-write leaves the old file intact.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _default_mode():
    """Permissions a plain open() would give a new file (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path):
    """Open a temp file beside `path` for binary writing; on success it replaces `path`.

    with atomic_open("out/ckpt.npz") as f:
        f.write(...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _default_mode())  # mkstemp makes it 0600; give it a normal file's mode
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write bytes to `path` atomically (creating parent folders)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path, text):
    """Write UTF-8 text to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    """Write `obj` as pretty JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_save_npz(path, arrays):
    """Save a dict name -> ndarray as an uncompressed .npz, atomically. Object arrays are
    refused: they would need pickle, which we never write nor read."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only plain numeric arrays are saved")
    with atomic_open(path) as f:
        np.savez(f, **arrays)


def quote(path):
    """A path for an error message: repr keeps odd characters and the message on one line."""
    return repr(os.fspath(path))


def read_json(path, what):
    """Parse a JSON file, with a one-line ValueError naming `what` and the path if it fails."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what} {quote(path)} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {what} {quote(path)}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {quote(path)} is not valid JSON: {e}") from None

