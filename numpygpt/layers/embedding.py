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


def embedding_backward(dout, cache):
    """Backward pass of the lookup.

    Row v of dwte is the sum of dout over every position where idx == v. A token that occurs
    twice must add twice, which is why we use np.add.at: `dwte[idx] += dout` would keep only
    one of the repeated updates.

    Inputs:
    - dout: upstream gradient, idx.shape + (C,)
    - cache: from embedding_forward

    Returns:
    - dwte: (V, C). (The integer ids have no gradient.)
    """
    idx, shape, dtype, padding_idx = cache
    dwte = np.zeros(shape, dtype=dtype)  # (V, C)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, shape[1]))
    if padding_idx is not None:
        dwte[padding_idx] = 0  # the padding vector stays fixed, as in nn.Embedding
    return dwte
