"""Token embedding: a lookup of one row of `wte` per token id.

Shapes: B batch, T time (sequence length), C channels (n_embd), V vocabulary size.
"""

import numpy as np


def embedding_forward(idx, wte, padding_idx=None):
    """Look up the embedding vector of every token id.

    Inputs:
    - idx: integer token ids of any shape, e.g. (B, T), each in [0, V) (GPT.forward checks
      them with check_token_ids: a negative id would silently read a row from the end)
    - wte: embedding table of shape (V, C)
    - padding_idx: optional id whose row gets no gradient (as nn.Embedding(padding_idx=...))

    Returns (out, cache):
    - out: idx.shape + (C,), same dtype as wte
    """
    out = wte[idx]  # (B, T, C): fancy indexing copies, so out does not alias wte
    cache = (idx, wte.shape, wte.dtype, padding_idx)
    return out, cache


def embedding_backward(dout, cache, out=None):
    """Backward pass of the lookup.

    Row v of dwte is the sum of dout over every position where idx == v. A token that occurs
    twice must add twice, which is why we use np.add.at: `dwte[idx] += dout` would keep only
    one of the repeated updates.

    Inputs:
    - dout: upstream gradient, idx.shape + (C,)
    - cache: from embedding_forward
    - out: optional (V, C) array to add the gradient into, instead of a new zeroed one. The
      model passes its LM head's dwte (wte is used twice): at GPT-2's size this saves
      allocating, zeroing and summing a second 154 MB array, a few tenths of a second a step.

    Returns:
    - dwte: (V, C) (`out` itself when given). (The integer ids have no gradient.)
    """
    idx, shape, dtype, padding_idx = cache
    dwte = np.zeros(shape, dtype=dtype) if out is None else out  # (V, C)
    ids, rows = idx.reshape(-1), dout.reshape(-1, shape[1])  # (N,), (N, C)
    if padding_idx is not None:  # the padding vector stays fixed, as in nn.Embedding
        keep = ids != padding_idx
        ids, rows = ids[keep], rows[keep]
    np.add.at(dwte, ids, rows)
    return dwte
