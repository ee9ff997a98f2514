"""numpygpt: a GPT language model in pure NumPy, every backward pass derived and coded by hand.

    from numpygpt import GPT, GPTConfig, AdamW, SGD, clip_grad_norm, TrainConfig, train

The folders follow the data's trip, each importing only the ones before it: errors, io,
data, layers, kernels, models, training, finetune, gradcheck, course and bench, cli.
"""

import importlib

__version__ = "0.1.0"

# The names below are imported on first use (PEP 562), not here: `python -m numpygpt` imports
# this file before anything else, and the command line must be running, and catching Ctrl-C,
# before NumPy takes its few hundred milliseconds to import.
_EXPORTS = {"CharTokenizer": "data", "BPETokenizer": "data",
            "GPT": "models", "GPTConfig": "models", "Llama": "models", "LlamaConfig": "models",
            "SGD": "training.optim", "AdamW": "training.optim",
            "clip_grad_norm": "training.optim", "cosine_lr": "training.optim",
            "PRESETS": "training.train", "TrainConfig": "training.train",
            "train": "training.train",
            "FinetuneGPT": "finetune", "FinetuneConfig": "finetune"}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:  # a submodule, as `import numpygpt; numpygpt.layers` found it before
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise  # a submodule that exists but fails to import: show why
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig", "AdamW", "SGD", "clip_grad_norm",
           "cosine_lr", "CharTokenizer", "BPETokenizer", "TrainConfig", "PRESETS", "train",
           "FinetuneGPT", "FinetuneConfig"]
