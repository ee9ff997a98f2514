"""The training text: a corpus is one long string.

Corpora (`load_corpus`):
- "numpy-docs" (the default): the docstrings of NumPy's public API, gathered from the
  installed numpy, so it needs no download.
- "shakespeare": karpathy/char-rnn's tiny shakespeare, downloaded once and checked by sha256.
- any other string: the path of a UTF-8 text file.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib
import inspect
import os
import types
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import NamedTuple

from ..errors import UserError
from ..io.files import atomic_write_bytes, default_cache_dir, open_regular, quote, read_bytes

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILENAME = "tinyshakespeare.txt"


# A corpus is read whole into memory and becomes int64 ids (8 bytes a token): 1 GiB of text
# is already ~10 GB of arrays. Larger files are refused before a byte is read.
MAX_DATA_BYTES = 2**30


class DataError(UserError, ValueError):
    """A problem with the user's data (missing file, bad encoding, failed download, too short).

    Its message is one line meant for the user, so a command-line tool can print it as is.
    """


# The public modules whose API docstrings make the "numpy-docs" corpus.
NUMPY_DOC_MODULES = (
    "numpy",
    "numpy.linalg",
    "numpy.fft",
    "numpy.random",
    "numpy.polynomial",
    "numpy.ma",
    "numpy.char",
    "numpy.strings",
    "numpy.lib",
    "numpy.lib.scimath",
    "numpy.rec",
)


@functools.lru_cache(maxsize=1)
def numpy_docs_text():
    """The docstrings of NumPy's public API, from the installed numpy (1.67 MB for numpy 2.4).

    Public functions, classes and the public methods of those classes, from NUMPY_DOC_MODULES.
    Each docstring appears once, under the name of the class or module that defines it, as
    "name\\n" + doc + "\\n\\n", sorted by qualified name, so the text is the same on every run
    for a given numpy (see numpy_docstrings).

    Returns:
    - text: str
    """
    return "".join(f"{d.name}\n{d.doc}\n\n" for d in numpy_docstrings())


class NumpyDoc(NamedTuple):
    """One docstring of NumPy's public API, as `numpy_docs_text()` writes it."""

    name: str  # the qualified name it is listed under, e.g. "numpy.linalg.norm"
    doc: str  # the cleaned docstring (inspect.cleandoc), without the name
    namespaces: tuple  # the modules of NUMPY_DOC_MODULES that define it (sorted)


@functools.lru_cache(maxsize=1)
def numpy_docstrings():
    """The docstrings of the "numpy-docs" corpus, with the namespaces each belongs to
    (numpy_docs_text joins them; the fine-tuning tasks in numpygpt.finetune.tasks read them).

    Public functions, classes and the public methods of those classes, from
    NUMPY_DOC_MODULES. Aliases and inherited methods share a docstring: it is kept once, under
    the name where it is defined if there is one (ndarray.reshape, not chararray.reshape),
    else the first name in sorted order. Every module that defines it is recorded too.
    A docstring can have several homes: np.sin and np.ma.sin share one, as do np.cos and
    np.ma.cos, and the corpus lists each under its first name in sorted order, which is
    numpy.ma.sin for the one and numpy.cos for the other. A topic label read from that name
    would be noise, so numpy_topics() looks at all the homes.

    Returns:
    - docs: tuple of NumpyDoc, sorted by name
    """
    found = {}  # qualified name -> (docstring, inherited?, module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases warn when touched
        for modname in NUMPY_DOC_MODULES:
            try:
                module = importlib.import_module(modname)
            except ImportError:  # e.g. numpy.strings is new in numpy 2.0
                continue
            for name in sorted(getattr(module, "__all__", dir(module))):
                if name.startswith("_"):
                    continue
                try:
                    obj = getattr(module, name)
                except Exception:  # a name listed but not importable here: skip it
                    continue
                qualname = f"{modname}.{name}"
                if isinstance(obj, types.ModuleType):
                    continue  # submodules are walked only if listed above
                if inspect.isclass(obj):
                    found[qualname] = (obj.__doc__, False, modname)
                    for method, (doc, inherited) in _method_docs(obj, qualname).items():
                        found[method] = (doc, inherited, modname)
                elif callable(obj):
                    found[qualname] = (obj.__doc__, False, modname)
    best = {}  # cleaned docstring -> (inherited?, qualified name), as numpy_docs_text keeps it
    homes = {}  # cleaned docstring -> {(inherited?, module)}
    for qualname, (doc, inherited, modname) in found.items():
        if not isinstance(doc, str) or not (doc := inspect.cleandoc(doc)):
            continue
        if doc not in best or (inherited, qualname) < best[doc]:
            best[doc] = (inherited, qualname)
        homes.setdefault(doc, set()).add((inherited, modname))
    docs = []
    for doc, (inherited, qualname) in best.items():
        # A method MaskedArray inherits from ndarray is defined by numpy, not numpy.ma: where
        # a docstring is defined somewhere, the places that only inherit it do not count.
        spaces = sorted({m for i, m in homes[doc] if i == inherited})
        docs.append(NumpyDoc(qualname, doc, tuple(spaces)))
    return tuple(sorted(docs))


def _method_docs(cls, qualname):
    """{qualname.method: (docstring, inherited?)} for the public methods of `cls`.

    Only methods defined by numpy's own classes: those inherited from Python's built-ins
    (int.bit_length, Exception.with_traceback, ...) are not NumPy's docs, and they change
    with the Python version.
    """
    out = {}
    for klass in reversed(cls.__mro__):  # subclasses last, so overrides win
        if not (getattr(klass, "__module__", None) or "").startswith("numpy"):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_"):
                continue
            if callable(attr) or isinstance(attr, (staticmethod, classmethod)):
                out[f"{qualname}.{name}"] = (getattr(attr, "__doc__", None), klass is not cls)
    return out


def _sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def download_shakespeare(
    cache_dir=None, url=SHAKESPEARE_URL, timeout=30, sha256=SHAKESPEARE_SHA256
):
    """Tiny shakespeare (~1.1 MB), downloaded once into the cache folder and checked by sha256.

    A cached copy with the right hash is used without touching the network; a corrupted one is
    replaced. The file is written (atomically) only after its hash matched, so the cache never
    holds a partial or wrong file.

    Inputs:
    - cache_dir: folder for the file; default `default_cache_dir()`
    - url, timeout: where to download from, and the socket timeout in seconds
    - sha256: expected hex digest of the file

    Returns:
    - path: Path of the cached file, cache_dir / "tinyshakespeare.txt"
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / SHAKESPEARE_FILENAME
    try:
        if path.is_file():
            if _sha256_file(path) == sha256:
                return path
            path.unlink()  # corrupted or truncated: useless, so fetch a fresh copy
    except OSError as e:
        raise DataError(f"cannot use the cached corpus {quote(path)}: {e.strerror or e}") \
            from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (OSError, http.client.HTTPException, ValueError) as e:
        # URLError, HTTPError and timeouts are OSErrors; ValueError is a malformed URL.
        if isinstance(e, urllib.error.HTTPError):
            e.close()  # it holds the open response
            reason = e  # "HTTP Error 404: Not Found"
        else:
            reason = getattr(e, "reason", e)  # reads better than "<urlopen error ...>"
        raise DataError(
            f"could not download the Shakespeare corpus from {url} ({reason}); "
            f"download it by hand and pass its path with --data PATH, or put it at {path}"
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataError(
            f"the file downloaded from {url} has sha256 {actual}, expected {sha256}; "
            f"it was not saved"
        )
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise DataError(f"cannot save the Shakespeare corpus to {quote(path)}: "
                        f"{e.strerror or e} (set NUMPYGPT_CACHE to a writable folder)") from None
    return path


def read_text_file(path, max_bytes=None):
    """Read a UTF-8 text file, with a one-line DataError naming the path if it is not usable.

    Only a regular file is read (a symlink to one is fine): a folder, a FIFO, a socket or a
    device such as /dev/zero is refused before reading (a FIFO would block forever, /dev/zero
    would fill the memory). So is a file larger than max_bytes (default MAX_DATA_BYTES).

    Inputs:
    - path: str or Path
    - max_bytes: the size limit in bytes

    Returns:
    - text: str (a leading byte-order mark is dropped)
    """
    raw = read_bytes(path, "data file", MAX_DATA_BYTES if max_bytes is None else max_bytes,
                     error=DataError)
    if not raw:
        raise DataError(f"data file {quote(path)} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {quote(path)} is not valid UTF-8 "
            f"(byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None
    # Editors on Windows may start a file with a BOM; it is not part of the text.
    return text.removeprefix("\ufeff")


STREAM_BYTES = 1 << 23  # a data file larger than 8 MiB is read in chunks of this size


def is_corpus_name(data):
    """True for the built-in corpora ("numpy-docs", "shakespeare"), False for a file path."""
    return data in ("numpy-docs", "shakespeare")


def text_chunks(path, chunk_bytes=STREAM_BYTES):
    """The text of a UTF-8 file, chunk by chunk (str), in bounded memory: each chunk ends
    after a newline where the file has one (so a chunk never cuts a word; the BPE tokenizer
    then encodes it as it would the whole text). The checks of read_text_file apply: a
    regular file of at most MAX_DATA_BYTES, valid UTF-8 (a DataError names the offset of a
    bad byte), a leading byte-order mark dropped, not empty."""
    import codecs

    f = open_regular(path, "data file", MAX_DATA_BYTES, error=DataError)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, carry, first = 0, "", True
    with f:
        while True:
            try:
                raw = f.read(chunk_bytes)
            except OSError as e:
                raise DataError(f"cannot read data file {quote(path)}: {e.strerror}") from None
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise DataError(f"data file {quote(path)} is not valid UTF-8 (byte "
                                f"0x{raw[e.start]:02x} at offset {offset + e.start})") from None
            offset += len(raw)
            if first:
                if not raw:
                    raise DataError(f"data file {quote(path)} is empty")
                text, first = text.removeprefix("\ufeff"), False
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1  # up to the last newline; the rest waits for more
            text, carry = (text[:cut], text[cut:]) if cut else ("", text)
            if text:
                yield text


def load_corpus(data, cache_dir=None):
    """The training text named by `data`.

    Inputs:
    - data: "numpy-docs", "shakespeare", or the path of a UTF-8 text file
      (write "./shakespeare" for a file that happens to have a corpus name)
    - cache_dir: folder for downloads (see download_shakespeare)

    Returns (text, name):
    - text: str
    - name: "numpy-docs", "shakespeare", or the path as given (a str)
    """
    if data == "numpy-docs":
        return numpy_docs_text(), "numpy-docs"
    if data == "shakespeare":
        # The constants are read now, not at import, so tests can point them elsewhere.
        path = download_shakespeare(cache_dir, url=SHAKESPEARE_URL, sha256=SHAKESPEARE_SHA256)
        return read_text_file(path), "shakespeare"
    return read_text_file(data), os.fspath(data)
