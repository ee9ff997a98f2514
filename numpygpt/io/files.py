"""Files in and out: atomic writes, and bounded reads of files that may be hostile.

Writing: we write to a temporary file in the same folder, flush it to disk, then os.replace()
it over the target (an atomic rename on POSIX and Windows). A crash mid-write leaves the old
file intact.

Reading: every file numpygpt reads from a user's folder goes through `open_regular` (or
`read_bytes`, `read_text`, `read_json` on top of it), which refuses, before reading a byte,
- what is not a regular file: a FIFO would block forever, /dev/zero would never end;
- a symbolic link found inside a model folder that leads out of it (`merges.txt ->
  /etc/shadow`); the folder the user names may itself be a link, and a Hugging Face cache
  snapshot may link into its own `blobs/` folder;
- a file larger than its kind's limit (a config.json of gigabytes is not a config);
and JSON nested deeper than MAX_JSON_DEPTH or with a key given twice. Every refusal is one
line naming the file, and never quotes the contents of a file outside the folder.
"""

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

# Limits on what is read, by kind of file. GPT-2's own files, for scale: config.json 0.7 KB,
# vocab.json 1.0 MB, merges.txt 0.5 MB, the safetensors header 15 KB; a checkpoint's meta.json
# with a 50k-token BPE tokenizer is about 1.5 MB.
MAX_CONFIG_BYTES = 1 << 20  # config.json
MAX_TOKENIZER_BYTES = 32 << 20  # vocab.json, merges.txt, tokenizer files, a checkpoint's meta
MAX_JSON_DEPTH = 32  # numpygpt's own files nest 5 levels, GPT-2's config.json 3


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


class FileError(UserError, ValueError):
    """A file cannot be read safely: missing, not a regular file, outside its folder, too
    large, or not the text or JSON it should be. The message is one line naming the file."""


def human_bytes(n):
    """e.g. '2.5 MB' or '812 bytes' (SI units, as file managers show sizes)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _not_regular(mode):
    """A phrase for a file that is not regular (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_inside(path, root, what, error=FileError):
    """Raise `error` if `path`, through any symbolic links, leads outside the folder `root`.

    The message names where the link leads but never reads it."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top:
        raise error(f"{what} {quote(path)} is a symbolic link to {quote(real)}, outside "
                    f"{quote(root)}; numpygpt only reads files inside the folder it is given")


def open_regular(path, what, max_bytes=None, root=None, error=FileError):
    """Open `path` for binary reading after checking that it is safe to read.

    Inputs:
    - path: the file
    - what: how to name it in messages, e.g. "vocab file"
    - max_bytes: refuse a larger file (None: no limit)
    - root: if given, a folder that `path` must not leave through symbolic links
    - error: the exception class to raise (e.g. CheckpointError)

    Returns an open binary file (the caller closes it). Raises `error` (one line) if the file
    is missing, is not a regular file, leaves `root`, or is larger than `max_bytes`.
    """
    if root is not None:
        check_inside(path, root, what, error)
    try:
        st = os.stat(path)  # never blocks, unlike open() on a FIFO
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise error(f"{what} {quote(path)} " + ("is a symbolic link to a missing file"
                                                 if dangling else "does not exist")) from None
    except OSError as e:
        raise error(f"cannot read {what} {quote(path)}: {e.strerror}") from None
    kind = _not_regular(st.st_mode)
    if kind:
        raise error(f"{what} {quote(path)} is {kind}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {quote(path)} is {human_bytes(st.st_size)}, more than the "
                    f"{human_bytes(max_bytes)} numpygpt reads from such a file")
    try:
        # O_NONBLOCK: should the file have become a FIFO since stat(), open() must not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise error(f"cannot read {what} {quote(path)}: {e.strerror}") from None
    f = os.fdopen(fd, "rb")
    kind = _not_regular(os.fstat(fd).st_mode)  # the file opened is the one checked
    if kind:
        f.close()
        raise error(f"{what} {quote(path)} is {kind}, not a regular file")
    return f


def read_bytes(path, what, max_bytes, root=None, error=FileError):
    """The contents of a regular file of at most `max_bytes` (see open_regular)."""
    with open_regular(path, what, max_bytes, root, error) as f:
        try:
            # read(n) allocates n bytes at once: ask for the size the file has, plus one byte
            # to see if it has grown since it was checked (then read on, up to the limit)
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, max_bytes) + 1)
            if size < len(data) <= max_bytes:
                data += f.read(max_bytes + 1 - len(data))
        except OSError as e:
            raise error(f"cannot read {what} {quote(path)}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {quote(path)} is more than the {human_bytes(max_bytes)} numpygpt "
                    "reads from such a file")
    return data


def read_text(path, what, max_bytes, root=None, error=FileError):
    """A UTF-8 text file of at most `max_bytes`, as a str (see open_regular)."""
    data = read_bytes(path, what, max_bytes, root, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {quote(path)} is not UTF-8 text (byte {e.start}: "
                    f"{e.reason})") from None


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return d


def parse_json(text, where, error=FileError):
    """Parse JSON text (str or UTF-8 bytes), refusing a key given twice in one object (Python
    keeps the last one silently) and nesting deeper than MAX_JSON_DEPTH. `where` names the
    source in messages, e.g. "vocab file 'gpt2/vocab.json'"."""
    too_deep = f"{where} is nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:  # json recurses once per level: 100,000 '[' end here, quickly
        raise error(too_deep) from None
    except _DuplicateKey as e:
        raise error(f"{where} gives the key {e.args[0]!r:.60} twice in one object") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8 bytes, an integer of 5,000 digits
        raise error(f"{where} is not valid JSON: {e}") from None
    stack = [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:  # iterative, so that checking the depth cannot itself recurse too deeply
        o, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise error(too_deep)
        stack.extend((c, depth + 1) for c in (o.values() if isinstance(o, dict) else o)
                     if isinstance(c, (dict, list)))
    return obj


def read_json(path, what, max_bytes=MAX_TOKENIZER_BYTES, root=None, error=FileError):
    """Parse a JSON file of at most `max_bytes` (see open_regular and parse_json).

    Raises `error` (default FileError, a ValueError) with one line naming `what` and the path.
    """
    return parse_json(read_text(path, what, max_bytes, root, error), f"{what} {quote(path)}",
                      error)


def default_cache_dir():
    """Folder for downloads (corpora, GPT-2 checkpoints): $NUMPYGPT_CACHE if set, else
    ~/.cache/numpygpt."""
    env = os.environ.get("NUMPYGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "numpygpt"
