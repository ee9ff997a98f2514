"""The models: each is its config, its parameters, a forward pass, a backward pass and
generation, and nothing else (fine-tuning composes on the GPT from numpygpt/finetune).

    base.py      what every model shares: building, loading, the parameter count, generate
    sampling.py  the next token from the logits: greedy, temperature, top-k, top-p
    gpt.py       GPT-2: learned positions, layer norm, GELU MLP, multi-head attention
    llama.py     Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention
    registry.py  the two by name ("gpt", "llama"), for checkpoints and the command line
"""

from .gpt import GPT, GPTConfig
from .llama import Llama, LlamaConfig

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig"]
