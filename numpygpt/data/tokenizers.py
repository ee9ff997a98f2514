"""Which tokenizer: rebuilt from a run's description, checked against its model, or read
from a GPT-2 folder.

    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)       # {"kind": "char", ...}
    tokenizer = tokenizer_for_model(checkpoint.tokenizer, V, where)  # ... that fits V ids
    tokenizer = load_gpt2_tokenizer("gpt2")                      # vocab.json + merges.txt
"""

from __future__ import annotations

import os

from ..io import hub
from ..io.checkpoint import CheckpointError
from ..io.hf_gpt2 import CONFIG_NAME, MERGES_NAME, VOCAB_NAME, folder_root, read_config
from .bpe import BPETokenizer
from .char import CharTokenizer
from .tokenizer_base import TokenizerError, vocab_mismatch

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


def tokenizer_for_model(d, vocab_size, where):
    """tokenizer_from_dict(d), checked against a model of `vocab_size` ids: a smaller
    vocabulary could not decode ids the model emits, a larger one has ids the model cannot
    embed. `where` names the source (e.g. "checkpoint 'out/ckpt.npz'"). Raises
    CheckpointError, one line."""
    try:
        tokenizer = tokenizer_from_dict(d)
    except TokenizerError as e:  # a malformed description (a bug elsewhere keeps its traceback)
        raise CheckpointError(f"{where}: its tokenizer is not usable: {e}") from None
    problem = vocab_mismatch(tokenizer.vocab_size, vocab_size)
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    return tokenizer


def load_gpt2_tokenizer(path_or_name, cache_dir=None):
    """The BPE tokenizer of a GPT-2 folder (vocab.json + merges.txt), or None if it has
    neither file. A GPT-2 name is resolved (and downloaded) as by GPT.from_pretrained.

    If the folder has a config.json, its vocab_size must be the tokenizer's (see
    tokenizer_for_model). Raises CheckpointError."""
    folder = hub.resolve(path_or_name, cache_dir)
    root = folder_root(folder)
    vocab, merges = folder / VOCAB_NAME, folder / MERGES_NAME
    has_vocab, has_merges = os.path.lexists(vocab), os.path.lexists(merges)
    if not has_vocab and not has_merges:
        return None
    if not (has_vocab and has_merges):
        have, lack = (vocab, merges) if has_vocab else (merges, vocab)
        raise CheckpointError(f"'{folder}' has {have.name} but no {lack.name}; a GPT-2 "
                              "tokenizer needs both")
    try:
        tokenizer = BPETokenizer.from_gpt2_files(vocab, merges, root=root)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the tokenizer in '{folder}': {e}") from None
    if os.path.lexists(folder / CONFIG_NAME):
        V = read_config(folder, root).get("vocab_size")
        problem = type(V) is int and vocab_mismatch(tokenizer.vocab_size, V)
        if problem:
            raise CheckpointError(f"'{folder}': {problem} ({VOCAB_NAME} against "
                                  f"{CONFIG_NAME})")
    return tokenizer
