"""The error rule: a user's mistake is a `UserError`, anything else is a bug.

The command line catches `UserError` (and Ctrl-C) only and prints it as one line; every
other exception keeps its traceback, because it is a bug in the code (or in a learner's edit
of a layer) and the traceback is what finds it. `--debug` or NUMPYGPT_DEBUG=1 shows the
traceback of user errors too.

Each module's own error type (CheckpointError, DataError, TrainingError, CourseError)
subclasses UserError and keeps its older base, so `except ValueError` code keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every "the user's input is wrong" error (a file, a flag, a checkpoint, a folder)."""


class ConfigError(UserError, ValueError):
    """A bad flag or config value (raised by GPTConfig, TrainConfig, the optimizers, the CLI)."""


class NumpygptWarning(UserWarning):
    """Something the user should know, that is not an error (e.g. a BPE tokenizer that learned
    fewer tokens than asked). The command line prints it as one line."""


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal other than Ctrl-C: SIGTERM (a scheduler's stop) or SIGHUP
    (a closed terminal), handled as Ctrl-C is; `signum` is the signal's number."""

    def __init__(self, signum):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- checks of single values, shared by the configs and the optimizers ----------------------


def check_int(name, value, minimum=None):
    """Return `value` as an int, or raise ConfigError: a bool, a float (even 4.0) or a string
    is not an integer, and a value below `minimum` is refused."""
    import numpy as np  # here, so that importing the error types stays instant

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"{name} must be {rule}, got {value}")
    return int(value)


def check_real(name, value, low=None, high=None, high_open=False):
    """Return `value` as a float, or raise ConfigError: it must be a finite real number (an int
    is fine, a bool or a string is not) in [low, high] (or [low, high) with high_open)."""
    import math

    import numpy as np

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    too_high = high is not None and (value >= high if high_open else value > high)
    if (low is not None and value < low) or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{name} must be in [{lo}, {hi}, got {value:g}")
    return value


def check_text(name, value):
    """Return `value` (a str, or a path as a str), or raise ConfigError: not text, or text
    that cannot be written as UTF-8 (a path holding bytes that are not UTF-8 arrives with lone
    surrogates; numpygpt records paths in its JSON files)."""
    import os

    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ConfigError(f"{name} {shown!r} is not valid UTF-8 text (a file name with bytes "
                          "of another encoding?); rename it, or choose another") from None
    return value


def machine_memory():
    """This machine's RAM in bytes (None where the OS does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(nbytes, what, error=ConfigError, advice="choose a smaller model or batch"):
    """Raise `error` if `nbytes` (an estimate) is more than this machine's RAM: refusing
    before allocating beats a MemoryError, or a machine swapping for minutes, after. Every
    size a file or a flag declares goes through here before it is allocated."""
    ram = machine_memory()
    if ram is not None and nbytes > ram:
        raise error(f"{what} would need about {nbytes / 1e9:,.1f} GB but this machine has "
                    f"{ram / 1e9:,.1f} GB of RAM; {advice}")


__all__ = ["UserError", "ConfigError", "NumpygptWarning", "Stopped", "check_int", "check_real",
           "check_text", "machine_memory", "check_memory"]
