"""Input checks for the integer inputs of the layers (token ids and targets).

The layers themselves check nothing: they are their maths. The public entry points
(`GPT.forward`, `GPT.generate`) call these once per forward pass, so a bad id gets a message
naming the problem instead of an IndexError from deep inside a layer, or worse, a negative id
that NumPy would silently read from the end of a table.
"""

import numpy as np


def check_token_ids(idx, vocab_size, name="idx"):
    """Raise TypeError/ValueError unless `idx` holds integer ids in [0, vocab_size)."""
    if not isinstance(idx, np.ndarray) or not np.issubdtype(idx.dtype, np.integer):
        got = idx.dtype if isinstance(idx, np.ndarray) else type(idx).__name__
        raise TypeError(f"{name} must be an integer numpy array of token ids, got {got}")
    if idx.size and (idx.min() < 0 or idx.max() >= vocab_size):
        bad = idx[(idx < 0) | (idx >= vocab_size)].flat[0]
        raise ValueError(f"token id {bad} in {name} is out of range [0, {vocab_size})")


def check_targets(targets, shape, vocab_size, ignore_index=-1):
    """Raise TypeError/ValueError unless `targets` is an integer array of `shape` whose
    entries are class ids in [0, vocab_size) or ignore_index (see softmax_cross_entropy)."""
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError("targets must be an integer numpy array")
    if targets.shape != shape:
        raise ValueError(f"targets shape {targets.shape} does not match idx shape {shape}")
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab_size))
    if bad.any():
        raise ValueError(f"target {targets[bad][0]} is out of range [0, {vocab_size}) "
                         f"and is not ignore_index")
