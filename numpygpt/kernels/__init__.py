"""The one table of kernels the models and the optimizer call, chosen in one place.

Every operation a model's forward or backward runs on arrays is looked up in `ops`:

    from numpygpt.kernels import ops
    y, cache = ops.gelu_forward(h)

Most entries are the plain layers of numpygpt.layers. A few have a fast twin that computes
the same numbers faster: kernels/fast.py (attention in blocks that skip the masked scores,
a Llama's grouped-query attention the same way, GELU in cache-sized blocks, AdamW without
temporaries, softmax cross-entropy with fewer passes, the embedding's backward without
np.add.at) and kernels/norms.py (layer norm in cache-sized blocks of rows); by default the
table holds the fast ones. kernels/flash.py is flash attention (the heads without the (T, T)
probabilities: O(T) memory). One setting chooses the table:

    NUMPYGPT_KERNELS=plain python -m numpygpt train     # every plain twin; or "flash"
    use_kernels("plain")  /  with kernels("plain"): ... # in Python

and the tests check that a model computes the same numbers either way. `bench` times the
kernels by reading this table (profile.py wraps its entries while it measures).
"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace

from .. import layers as L
from ..errors import ConfigError
from . import fast, flash, norms

# What the models and the optimizer call: every name they look up in `ops`.
NAMES = (
    "embedding_forward", "embedding_backward",
    "learned_positional_forward", "learned_positional_backward",
    "sinusoidal_positional_forward", "sinusoidal_table",
    "dropout_forward", "dropout_backward",
    "layernorm_forward", "layernorm_backward",
    "linear_forward", "linear_backward",
    "attention_core_forward", "attention_core_backward", "attention_core_cached",
    "gelu_forward", "gelu_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "rmsnorm_forward", "rmsnorm_backward",
    "gqa_attention_forward", "gqa_attention_backward", "gqa_cached_forward",
    "swiglu_mlp_forward", "swiglu_mlp_backward", "rope_table",
    "adamw_update",
)
PLAIN = {name: getattr(L, name) for name in NAMES}
FAST = {**PLAIN, **{name: getattr(fast, name) for name in (
    "attention_core_forward", "attention_core_backward", "gelu_forward", "gelu_backward",
    "adamw_update", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "embedding_forward", "embedding_backward", "gqa_attention_forward",
    "gqa_attention_backward")}, **{name: getattr(norms, name) for name in (
    "layernorm_forward", "layernorm_backward")}}
# flash attention (kernels/flash.py): the heads without the (T, T) probabilities
FLASH = {**FAST, "attention_core_forward": flash.attention_core_forward,
         "attention_core_backward": flash.attention_core_backward}
CHOICES = {"fast": FAST, "flash": FLASH, "plain": PLAIN}

ops = SimpleNamespace()  # the table: ops.<name> is the chosen kernel
_chosen = []  # the name of the current choice, for which()


def use_kernels(which="fast"):
    """Put the `which` ("fast" or "plain") kernels in the table, for every model from now
    on (a step already in flight keeps the caches of the kernels it started with)."""
    if which not in CHOICES:
        raise ConfigError(f"the kernels must be one of {', '.join(CHOICES)} (NUMPYGPT_KERNELS), "
                          f"got {which!r}")
    vars(ops).update(CHOICES[which])
    _chosen[:] = [which]


def which_kernels():
    """"fast" or "plain": what the table holds now."""
    return _chosen[0]


@contextlib.contextmanager
def kernels(which):
    """`with kernels("plain"): ...` runs the block on those kernels, then restores the table."""
    before = dict(vars(ops)), which_kernels()
    use_kernels(which)
    try:
        yield ops
    finally:
        vars(ops).clear()
        vars(ops).update(before[0])
        _chosen[:] = [before[1]]


use_kernels(os.environ.get("NUMPYGPT_KERNELS", "fast").strip().lower() or "fast")

__all__ = ["ops", "use_kernels", "which_kernels", "kernels", "NAMES", "PLAIN", "FAST"]
