"""numpygpt: a GPT language model in pure NumPy, every backward pass derived and coded by hand.

    from numpygpt import GPT, GPTConfig, AdamW, SGD, clip_grad_norm
"""

from .data import CharTokenizer
from .model import GPT, GPTConfig
from .optim import SGD, AdamW, clip_grad_norm, cosine_lr
from .train import PRESETS, TrainConfig  # train() itself: from numpygpt.train import train

__version__ = "0.1.0"

__all__ = ["GPT", "GPTConfig", "AdamW", "SGD", "clip_grad_norm", "cosine_lr", "CharTokenizer",
           "TrainConfig", "PRESETS"]
