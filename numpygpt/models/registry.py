"""The two model families that training, checkpoints and the command line know: "gpt"
(GPT-2: model.GPT) and "llama" (llama.Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention).

Both have the same API (forward, backward, generate, params, rng, train/eval), so train()'s loop
drives either; what differs is the config class, the parameter names and their count, which
this module looks up by the architecture's name or its config.
"""

from __future__ import annotations

from ..errors import ConfigError

ARCHS = ("gpt", "llama")


def _family(arch):
    if arch == "gpt":
        from .gpt import GPT, GPTConfig, param_count, param_shapes

        return GPT, GPTConfig, param_shapes, param_count
    if arch == "llama":
        from .llama import Llama, LlamaConfig, llama_param_count, llama_param_shapes

        return Llama, LlamaConfig, llama_param_shapes, llama_param_count
    raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def arch_of(mcfg):
    """"gpt" or "llama", from a model config object."""
    from .llama import LlamaConfig

    return "llama" if isinstance(mcfg, LlamaConfig) else "gpt"


def config_from_dict(arch, d):
    """The model config of architecture `arch` from its dict (a checkpoint's config["model"])."""
    return _family(arch)[1].from_dict(d)


def build_model(mcfg, **kwargs):
    """GPT(mcfg, **kwargs) or Llama(mcfg, **kwargs), by the config's class."""
    return _family(arch_of(mcfg))[0](mcfg, **kwargs)


def param_shapes(mcfg):
    """Name -> shape of every parameter of the model mcfg describes."""
    return _family(arch_of(mcfg))[2](mcfg)


def param_count(mcfg):
    """The model's number of parameters, without building it."""
    return _family(arch_of(mcfg))[3](mcfg)


def checkpoint_arch(config, where):
    """The architecture a numpygpt checkpoint's config names (config["train"]["arch"]; runs
    saved before Llama existed are GPT). A ConfigError for a name this version does not know."""
    train = config.get("train")
    arch = train.get("arch", "gpt") if isinstance(train, dict) else "gpt"
    if arch not in ARCHS:
        raise ConfigError(f"{where} holds a model of architecture {arch!r}, which this version "
                          f"of numpygpt does not know (it knows {', '.join(ARCHS)})")
    return arch
