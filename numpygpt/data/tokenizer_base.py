"""What every tokenizer shares: JSON save/load and the checks on ids before decoding."""

import numpy as np

from ..errors import UserError
from ..io.files import MAX_TOKENIZER_BYTES, FileError, atomic_write_json, quote, read_json


class TokenizerError(UserError, ValueError):
    """A tokenizer description or file is malformed, or a text holds what the tokenizer
    cannot encode (the user's data, not a bug)."""


def vocab_mismatch(n_tokens, vocab_size):
    """Why a tokenizer of `n_tokens` tokens cannot serve a model of `vocab_size` (a one-line
    phrase), or None when the two agree."""
    if n_tokens < vocab_size:
        return (f"the tokenizer has {n_tokens:,} tokens but the model's vocab_size is "
                f"{vocab_size:,}: ids {n_tokens:,} to {vocab_size - 1:,}, which the model can "
                "emit, could not be decoded")
    if n_tokens > vocab_size:
        return (f"the tokenizer has {n_tokens:,} tokens but the model's vocab_size is "
                f"{vocab_size:,}: ids {vocab_size:,} to {n_tokens - 1:,} of the tokenizer have "
                "no embedding in the model")
    return None


class Tokenizer:
    """Base of CharTokenizer and BPETokenizer. Subclasses give `kind`, `vocab_size`,
    `encode`, `decode`, `to_dict` and `from_dict`."""

    def save(self, path):
        """Write the tokenizer to `path` as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by `save`, with a FileError (a ValueError) naming the file
        if it is missing, not a regular file, larger than MAX_TOKENIZER_BYTES or malformed."""
        d = read_json(path, "tokenizer file", MAX_TOKENIZER_BYTES)
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise FileError(f"tokenizer file {quote(path)}: {e}") from None

    @classmethod
    def _check_description(cls, d):
        """Raise TokenizerError unless d is a dict describing a tokenizer of this class's kind."""
        if not isinstance(d, dict):
            raise TokenizerError(f"a tokenizer description must be a dict, got "
                                 f"{type(d).__name__}")
        if d.get("kind") != cls.kind:
            raise TokenizerError(f"expected a tokenizer of kind {cls.kind!r}, "
                                 f"got kind {d.get('kind')!r}")

    def _ids_to_decode(self, ids):
        """ids (a 1-D array, list or iterable of ints) as an ndarray, checked to lie in
        [0, vocab_size); an empty sequence comes back empty, unchecked."""
        if not isinstance(ids, np.ndarray):
            ids = np.array(list(ids))
        if ids.size == 0:
            return ids
        if ids.ndim != 1:
            raise ValueError(f"decode takes a 1-D sequence of ids, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(f"token id {ids[bad][0]} is out of range [0, {self.vocab_size}) "
                             f"for this tokenizer's vocabulary")
        return ids
