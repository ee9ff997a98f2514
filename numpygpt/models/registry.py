"""The model families that training, checkpoints and the command line know, by name: "gpt"
(GPT-2: models/gpt.py) and "llama" (models/llama.py: RoPE, RMSNorm, SwiGLU, grouped-query
attention).

Both have the same API (forward, backward, generate, params, rng, train/eval; models/base.py),
so the training loop drives either; what differs is the config class and the parameters,
which this module looks up by the architecture's name or its config.
"""

from __future__ import annotations

from ..errors import ConfigError
from .gpt import GPT
from .llama import Llama

MODELS = {"gpt": GPT, "llama": Llama}
ARCHS = tuple(MODELS)


def model_class(arch):
    """GPT or Llama, by name."""
    if arch not in MODELS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return MODELS[arch]


def arch_of(mcfg):
    """"gpt" or "llama", from a model config object."""
    return next(a for a, m in MODELS.items() if isinstance(mcfg, m.config_class))


def config_from_dict(arch, d):
    """The model config of architecture `arch` from its dict (a checkpoint's config["model"])."""
    return model_class(arch).config_class.from_dict(d)


def build_model(mcfg, **kwargs):
    """GPT(mcfg, **kwargs) or Llama(mcfg, **kwargs), by the config's class."""
    return MODELS[arch_of(mcfg)](mcfg, **kwargs)


def param_shapes(mcfg):
    """Name -> shape of every parameter of the model mcfg describes."""
    return MODELS[arch_of(mcfg)].param_shapes(mcfg)


def param_count(mcfg):
    """The model's number of parameters, without building it."""
    return MODELS[arch_of(mcfg)].param_count(mcfg)


def checkpoint_arch(config, where):
    """The architecture a numpygpt checkpoint's config names (config["train"]["arch"]; runs
    saved before Llama existed are GPT). A ConfigError for a name this version does not know."""
    train = config.get("train")
    arch = train.get("arch", "gpt") if isinstance(train, dict) else "gpt"
    if arch not in ARCHS:
        raise ConfigError(f"{where} holds a model of architecture {arch!r}, which this version "
                          f"of numpygpt does not know (it knows {', '.join(ARCHS)})")
    return arch
