"""Every layer of the GPT as a forward/backward pair, in forward order.

    out, cache = x_forward(inputs..., params...)
    grads...   = x_backward(dout, cache)        # in the order of the forward's float arguments
"""

from .attention import (
    AttentionCache,
    attention_backward,
    attention_cached_forward,
    attention_forward,
    attention_reference_backward,
    attention_reference_forward,
    causal_mask,
)
from .dropout import dropout_backward, dropout_forward
from .embedding import check_token_ids, embedding_backward, embedding_forward
from .gelu import gelu_backward, gelu_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .mlp import mlp_backward, mlp_forward
from .positional import (
    learned_positional_backward,
    learned_positional_forward,
    sinusoidal_positional_backward,
    sinusoidal_positional_forward,
    sinusoidal_table,
)

__all__ = [
    "AttentionCache", "attention_backward", "attention_cached_forward", "attention_forward",
    "attention_reference_backward", "attention_reference_forward", "causal_mask",
    "check_token_ids", "dropout_backward", "dropout_forward", "embedding_backward",
    "embedding_forward", "gelu_backward", "gelu_forward", "layernorm_backward",
    "layernorm_forward", "learned_positional_backward", "learned_positional_forward",
    "linear_backward", "linear_forward", "mlp_backward", "mlp_forward",
    "sinusoidal_positional_backward", "sinusoidal_positional_forward", "sinusoidal_table",
    "softmax_cross_entropy_backward", "softmax_cross_entropy_forward",
]
