"""Text data for training: a character tokenizer, the corpora, the train/val split, and batches.

A corpus is one long string. The tokenizer maps each character to an integer id, the ids are
split into a training part and a validation part (the last 10%), and a batch is B random
windows of T + 1 consecutive ids: x holds the first T, y the same window shifted by one, so
y[b, t] is the token that follows x[b, :t+1].

The character tokenizer, twice: `char_encode_reference` / `char_decode_reference` are the
plain version (a dict from character to id, one lookup per character); read them first.
`CharTokenizer` computes the same ids with one NumPy gather over the text's code points,
several times faster on a corpus of a million characters; the tests compare the two.

Shapes: B batch, T time (block_size), N tokens in a split.

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

import numpy as np

from ..errors import UserError
from ..io.files import atomic_write_bytes, quote, read_bytes
from .bpe import BPETokenizer
from .tokenizer_base import Tokenizer, TokenizerError

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


# --- tokenizer ---------------------------------------------------------------------------------


def char_encode_reference(chars, text):
    """Token ids of `text`, plainly: id i stands for chars[i] (CharTokenizer.encode's numbers)."""
    stoi = {c: i for i, c in enumerate(chars)}  # "string to integer"
    return np.array([stoi[c] for c in text], dtype=np.int64)  # (N,)


def char_decode_reference(chars, ids):
    """The text of token ids, plainly (CharTokenizer.decode's result)."""
    return "".join(chars[i] for i in ids)


class CharTokenizer(Tokenizer):
    """One token per character: id i stands for chars[i] (see char_encode_reference).

    Inputs:
    - chars: a string (or list of one-character strings) of unique characters, usually sorted
    """

    kind = "char"

    def __init__(self, chars):
        if not isinstance(chars, str):
            chars = list(chars)
            if not all(isinstance(c, str) and len(c) == 1 for c in chars):
                raise TokenizerError("chars must be a string or a list of one-character strings")
            chars = "".join(chars)
        _check_unique(chars)
        self._chars = chars
        # Encoding looks up each code point in a table (code point -> id, -1 if unknown), one
        # NumPy gather for the whole text: ~6 ms for 1.1 MB, 7x faster than the dict of
        # char_encode_reference.
        cps = _codepoints(chars)  # (V,)
        self._cps = cps
        self._table = np.full(int(cps.max()) + 2, -1, dtype=np.int64)  # last slot: "too big"
        self._table[cps] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text):
        """Build the tokenizer of the sorted set of characters in `text`."""
        return cls("".join(sorted(set(text))))

    @property
    def chars(self):
        """The vocabulary as a string: chars[i] is the character of id i."""
        return self._chars

    @property
    def vocab_size(self):
        """Number of distinct tokens (V)."""
        return len(self._chars)

    def encode(self, text):
        """Map a string to its token ids.

        Inputs:
        - text: str

        Returns:
        - ids: int64 array of shape (len(text),)

        Raises ValueError naming the first character that is not in the vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        cps = _codepoints(text)  # (N,)
        # Code points beyond the table all land in its last slot, which holds -1.
        ids = self._table[np.minimum(cps, len(self._table) - 1)]
        unknown = ids < 0
        if unknown.any():
            i = int(np.argmax(unknown))
            raise TokenizerError(
                f"character {_describe_char(text[i])} is not in the tokenizer's vocabulary "
                f"(first seen at position {i} of the text)"
            )
        return ids

    def decode(self, ids):
        """Map token ids back to a string.

        Inputs:
        - ids: a 1-D array, list or other iterable of integer ids, each in [0, V)

        Returns:
        - text: str of length len(ids)
        """
        ids = self._ids_to_decode(ids)
        if ids.size == 0:
            return ""
        # Gather code points and let the UTF-32 codec build the string in one go.
        return self._cps[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self):
        """A JSON-ready description: {"kind": "char", "chars": ...}."""
        return {"kind": self.kind, "chars": self._chars}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a tokenizer from `to_dict()`'s output, with a ValueError if it is malformed."""
        cls._check_description(d)
        chars = d.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError(f"tokenizer 'chars' must be a string, got {type(chars).__name__}")
        return cls(chars)

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and self._chars == other._chars

    def __hash__(self):
        return hash((self.kind, self._chars))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# Tokenizer kinds by name, for checkpoints that record which one they used.
_TOKENIZER_KINDS = {CharTokenizer.kind: CharTokenizer, BPETokenizer.kind: BPETokenizer}


def tokenizer_from_dict(d):
    """Rebuild any tokenizer from its `to_dict()` output, choosing the class by d["kind"]."""
    if not isinstance(d, dict) or "kind" not in d:
        raise TokenizerError("a tokenizer description must be a dict with a 'kind' key")
    kind = d["kind"]
    if kind not in _TOKENIZER_KINDS:
        known = ", ".join(repr(k) for k in _TOKENIZER_KINDS)
        raise TokenizerError(f"unknown tokenizer kind {kind!r} (known kinds: {known})")
    return _TOKENIZER_KINDS[kind].from_dict(d)


def _codepoints(text):
    """The Unicode code points of `text` as a uint32 array, without a Python loop."""
    # surrogatepass: lone surrogates (e.g. from os.fsdecode) still get a code point
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _check_unique(chars):
    if not chars:
        raise TokenizerError("the tokenizer's vocabulary is empty")
    seen = set()
    for c in chars:
        if c in seen:
            raise TokenizerError(f"tokenizer chars must be unique, but {_describe_char(c)} repeats")
        seen.add(c)


def _describe_char(ch):
    """e.g. 'é' (U+00E9) or '\\n' (U+000A): repr keeps newlines and tabs on one line."""
    return f"{ch!r} (U+{ord(ch):04X})"


# --- corpora -----------------------------------------------------------------------------------

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


def default_cache_dir():
    """Folder for downloaded corpora: $NUMPYGPT_CACHE if set, else ~/.cache/numpygpt."""
    env = os.environ.get("NUMPYGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "numpygpt"


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


# --- splits and batches ------------------------------------------------------------------------


def split_ids(ids, val_fraction=0.1):
    """Split a token stream into train (the first part) and validation (the last part).

    A contiguous split, not a shuffled one: windows of neighbouring text would otherwise
    appear on both sides and make the validation loss look better than it is.

    Inputs:
    - ids: 1-D array of N token ids
    - val_fraction: share of tokens for validation, in [0, 1)

    Returns (train, val): views of ids, train = ids[:int(N * (1 - val_fraction))]
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = np.asarray(ids)
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


def get_batch(ids, block_size, batch_size, rng):
    """Sample B random windows of the token stream as inputs and next-token targets.

    Inputs:
    - ids: 1-D array of N token ids (one split)
    - block_size: T, the context length
    - batch_size: B
    - rng: np.random.Generator that draws the window starts

    Returns (x, y), both int64 of shape (B, T):
    - x[b] = ids[i_b : i_b + T], y[b] = ids[i_b + 1 : i_b + T + 1]
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
    ids = np.asarray(ids)
    n = len(ids)
    if n <= block_size:
        raise DataError(
            f"the data is too short for block_size={block_size}: the split has {n} tokens "
            f"but at least {block_size + 1} are needed"
        )
    # A window needs T + 1 tokens (x and the shifted y), so the last start is n - T - 1.
    starts = rng.integers(0, n - block_size, size=batch_size)  # (B,)
    idx = starts[:, None] + np.arange(block_size)  # (B, T)
    x = ids[idx].astype(np.int64, copy=False)  # (B, T)
    y = ids[idx + 1].astype(np.int64, copy=False)  # (B, T)
    return x, y


def prepare_data(text, block_size, tokenizer=None, val_fraction=0.1, tokenizer_kind="char",
                 vocab_size=512):
    """Tokenize a corpus and split it, checking both splits can fill a window.

    Inputs:
    - text: the corpus
    - block_size: T, the context length the model will be trained with
    - tokenizer: one to reuse (e.g. from a checkpoint); default: a new one of tokenizer_kind
    - val_fraction: share of tokens for validation
    - tokenizer_kind: "char" (CharTokenizer.from_text(text)) or "bpe" (BPETokenizer.train on
      the training part of the text, with vocab_size tokens); used when tokenizer is None

    Returns (tokenizer, train_ids, val_ids): the ids are int64 1-D arrays
    """
    if not text:
        raise DataError("the training text is empty")
    if tokenizer is None:
        if tokenizer_kind == "char":
            tokenizer = CharTokenizer.from_text(text)
        elif tokenizer_kind == "bpe":
            # Learn the merges from the part that becomes training data (the split below is by
            # tokens, so this cut is close to it), never from the validation text.
            tokenizer = BPETokenizer.train(text[:int(len(text) * (1.0 - val_fraction))],
                                           vocab_size)
        else:
            raise ValueError(f"unknown tokenizer kind {tokenizer_kind!r}; choose 'char' or 'bpe'")
    try:
        ids = tokenizer.encode(text)
    except TokenizerError as e:  # a reused tokenizer that lacks a character of this text
        raise DataError(str(e)) from None
    train, val = split_ids(ids, val_fraction)
    if min(len(train), len(val)) <= block_size:
        raise DataError(
            f"the data is too short for block_size={block_size}: {len(ids)} tokens split into "
            f"{len(train)} train and {len(val)} validation tokens, and each split needs at "
            f"least {block_size + 1}"
        )
    return tokenizer, train, val
