"""Every layer of the GPT and the Llama as a forward/backward pair, plain.

    out, cache = x_forward(inputs..., params...)
    grads...   = x_backward(dout, cache)        # in the order of the forward's float arguments

A layer is its maths and checks no arguments (as CS231n's layers): the public entry points,
GPT.forward and GPT.generate, validate their inputs once per call (see _checks.py).
Where a plain idea is worth seeing in its plainest form, a loop or line-by-line reference
sits beside the layer, computing the same numbers: attention_reference_*, gqa_reference_*
and gelu_reference_*. The fast twins of a few layers live in numpygpt/kernels.

adamw.py is not a layer but the optimizer's update of one tensor: pure maths on arrays, with
a fast twin too (CS231n keeps its update rules beside its layers the same way).

`FORWARD_BACKWARD_PAIRS` lists every pair by name; the gradient-check suite covers each one.
"""

from ._checks import check_targets, check_token_ids
from .adamw import adamw_update, decays
from .attention import (
    AttentionCache,
    AttentionCoreCache,
    attention_backward,
    attention_core_backward,
    attention_core_cached,
    attention_core_forward,
    attention_forward,
    attention_reference_backward,
    attention_reference_forward,
    causal_mask,
)
from .classifier import classifier_backward, classifier_forward
from .dpo import (
    dpo_loss_backward,
    dpo_loss_forward,
    dpo_margins,
    sequence_logprob_backward,
    sequence_logprob_forward,
)
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .gelu import gelu_backward, gelu_forward, gelu_reference_backward, gelu_reference_forward
from .gqa import (
    GQAAttentionCache,
    GQACoreCache,
    gqa_attention_backward,
    gqa_attention_forward,
    gqa_cached_forward,
    gqa_core_backward,
    gqa_core_forward,
    gqa_reference_backward,
    gqa_reference_forward,
)
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .lora import lora_backward, lora_forward
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .mlp import mlp_backward, mlp_forward
from .positional import (
    learned_positional_backward,
    learned_positional_forward,
    sinusoidal_positional_backward,
    sinusoidal_positional_forward,
    sinusoidal_table,
)
from .rmsnorm import rmsnorm_backward, rmsnorm_forward
from .rope import rope_backward, rope_forward, rope_table
from .swiglu import (
    silu_backward,
    silu_forward,
    swiglu_mlp_backward,
    swiglu_mlp_forward,
)

__all__ = [
    "FORWARD_BACKWARD_PAIRS", "AttentionCache", "AttentionCoreCache", "attention_backward",
    "attention_core_cached", "attention_core_backward", "attention_core_forward",
    "attention_forward", "attention_reference_backward", "attention_reference_forward",
    "causal_mask", "check_targets", "check_token_ids", "classifier_backward",
    "classifier_forward",
    "dpo_loss_backward", "dpo_loss_forward", "dpo_margins", "sequence_logprob_backward",
    "sequence_logprob_forward",
    "dropout_backward", "dropout_forward", "embedding_backward", "embedding_forward",
    "gelu_backward", "gelu_forward", "gelu_reference_backward", "gelu_reference_forward",
    "layernorm_backward", "layernorm_forward", "learned_positional_backward",
    "learned_positional_forward", "linear_backward", "linear_forward", "lora_backward",
    "lora_forward", "mlp_backward", "mlp_forward", "sinusoidal_positional_backward",
    "sinusoidal_positional_forward", "sinusoidal_table", "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
    "GQAAttentionCache", "GQACoreCache", "gqa_attention_backward", "gqa_attention_forward",
    "gqa_cached_forward", "gqa_core_backward", "gqa_core_forward", "gqa_reference_backward",
    "gqa_reference_forward",
    "rmsnorm_backward", "rmsnorm_forward", "rope_backward", "rope_forward", "rope_table",
    "silu_backward", "silu_forward", "swiglu_mlp_backward", "swiglu_mlp_forward",
    "adamw_update", "decays",
]

# Every forward/backward pair exported above, by name: "gelu" -> (gelu_forward, gelu_backward).
FORWARD_BACKWARD_PAIRS = {
    fwd.removesuffix("_forward"): (globals()[fwd], globals()[bwd])
    for fwd, bwd in ((n, n.replace("_forward", "_backward")) for n in __all__)
    if fwd.endswith("_forward") and bwd in __all__
}
