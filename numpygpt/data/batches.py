"""From token ids to what a model trains on: the train/validation split and the batches.

The ids of a corpus are split into a training part and a validation part (the last 10%), and
a batch is B random windows of T + 1 consecutive ids: x holds the first T, y the same window
shifted by one, so y[b, t] is the token that follows x[b, :t+1].

Shapes: B batch, T time (block_size), N tokens in a split.
"""

from __future__ import annotations

import numpy as np

from .bpe import BPETokenizer
from .char import CharTokenizer
from .corpora import DataError
from .tokenizer_base import TokenizerError


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
