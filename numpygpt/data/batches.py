"""From text to what a model trains on: token ids, the train/validation split and the batches.

The ids of a corpus are split into a training part and a validation part (the last 10%), and
a batch is B random windows of T + 1 consecutive ids: x holds the first T, y the same window
shifted by one, so y[b, t] is the token that follows x[b, :t+1].

A large corpus file is never held whole (prepare_corpus): it is read in chunks, and its ids,
two bytes each (four for a vocabulary over 65,536), go to a temporary file mapped into
memory, so that a run's memory grows with its model, not with its data.

Shapes: B batch, T time (block_size), N tokens in a split.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import NumpygptWarning
from ..io.files import default_cache_dir
from .bpe import BPETokenizer
from .char import CharTokenizer, _codepoints
from .corpora import STREAM_BYTES, DataError, is_corpus_name, load_corpus, text_chunks
from .tokenizer_base import TokenizerError

MAX_BPE_TRAIN_CHARS = 4_000_000  # a BPE tokenizer learns its merges from at most this much


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
    made = tokenizer is None
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
    _check_splits(len(ids), train, val, block_size)
    _warn_small_bpe(tokenizer, tokenizer_kind, vocab_size, made)
    return tokenizer, train, val


def _warn_small_bpe(tokenizer, kind, vocab_size, made):
    """A new BPE tokenizer that learned fewer tokens than asked for is said, not hidden."""
    if made and kind == "bpe" and tokenizer.vocab_size < vocab_size:
        warnings.warn(NumpygptWarning(
            f"the BPE tokenizer learned {tokenizer.vocab_size:,} tokens, fewer than the "
            f"{vocab_size:,} asked for: the training text offers no more pairs to merge"),
            stacklevel=3)


def _check_splits(n, train, val, block_size):
    if min(len(train), len(val)) <= block_size:
        raise DataError(
            f"the data is too short for block_size={block_size}: {n} tokens split into "
            f"{len(train)} train and {len(val)} validation tokens, and each split needs at "
            f"least {block_size + 1}"
        )


def id_dtype(vocab_size):
    """The smallest unsigned integer type that holds every id of a vocabulary."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def prepare_corpus(data, block_size, tokenizer=None, tokenizer_kind="char", vocab_size=512,
                   val_fraction=0.1):
    """prepare_data for the corpus `data` names (load_corpus: "numpy-docs", "shakespeare" or
    a file). A file larger than STREAM_BYTES is read in chunks, twice (the characters, then
    the ids), its ids written to a temporary file and mapped into memory as uint16 (or
    uint32): RSS then grows with the model, not with the file. A BPE tokenizer learns its
    merges from the first MAX_BPE_TRAIN_CHARS of the training part.

    Returns (tokenizer, train_ids, val_ids), as prepare_data.
    """
    path = Path(data)
    if is_corpus_name(data) or not path.is_file() or path.stat().st_size <= STREAM_BYTES:
        text, _ = load_corpus(data)
        return prepare_data(text, block_size, tokenizer, val_fraction, tokenizer_kind,
                            vocab_size)
    n_chars, codepoints = 0, np.zeros(0, dtype=np.uint32)
    for chunk in text_chunks(path):  # pass 1: the characters, and how many
        n_chars += len(chunk)
        if tokenizer is None and tokenizer_kind == "char":
            codepoints = np.union1d(codepoints, _codepoints(chunk))
    made = tokenizer is None
    if made:
        tokenizer = _new_tokenizer(path, codepoints, tokenizer_kind, vocab_size,
                                   int(n_chars * (1.0 - val_fraction)))
    ids = _ids_file(path, tokenizer)  # pass 2
    train, val = split_ids(ids, val_fraction)
    _check_splits(len(ids), train, val, block_size)
    _warn_small_bpe(tokenizer, tokenizer_kind, vocab_size, made)
    return tokenizer, train, val


def _new_tokenizer(path, codepoints, kind, vocab_size, train_chars):
    """The tokenizer of a streamed corpus file: its characters, or BPE merges learned from
    the start of its training part."""
    if kind == "char":
        return CharTokenizer("".join(map(chr, codepoints.tolist())))
    if kind != "bpe":
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'char' or 'bpe'")
    budget = min(train_chars, MAX_BPE_TRAIN_CHARS)
    parts, have = [], 0
    for chunk in text_chunks(path):
        parts.append(chunk[:budget - have])
        have += len(parts[-1])
        if have >= budget:
            break
    if train_chars > budget:
        warnings.warn(NumpygptWarning(
            f"the BPE tokenizer learns its merges from the first {budget:,} characters of "
            f"{path.name} (of {train_chars:,} for training)"), stacklevel=3)
    return BPETokenizer.train("".join(parts), vocab_size)


def _ids_file(path, tokenizer):
    """The ids of every chunk of `path`, in a temporary file (in numpygpt's cache folder,
    removed when the array is freed), mapped read-only."""
    dtype = id_dtype(tokenizer.vocab_size)
    folder = default_cache_dir() / "tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = tempfile.TemporaryFile(dir=folder)
    except OSError:
        f = tempfile.TemporaryFile()
    n = 0
    with f:
        for chunk in text_chunks(path):
            try:
                ids = tokenizer.encode(chunk)
            except TokenizerError as e:  # a reused tokenizer that lacks a character
                raise DataError(f"data file '{path}': {e}") from None
            f.write(np.asarray(ids, dtype=dtype).tobytes())
            n += len(ids)
        f.flush()
        if n == 0:
            raise DataError(f"data file '{path}' holds no text")
        return np.memmap(f, dtype=dtype, mode="r", shape=(n,))  # the mapping outlives f
