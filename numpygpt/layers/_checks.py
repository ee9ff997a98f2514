"""Small input checks shared by the layers, so every bad input gets a message naming the problem."""

import numpy as np


def check_float(name, a):
    """Raise TypeError unless `a` is a floating-point ndarray (the layers never change dtype)."""
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name} must be a floating-point numpy array, got {got}")


def check_same_dtype(**arrays):
    """Raise TypeError if the float arrays disagree on dtype (mixing would silently upcast)."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"dtypes must match (no silent upcast): {desc}")


def check_last_dim(name, a, size, what):
    """Raise ValueError unless a.shape[-1] == size."""
    if a.ndim == 0 or a.shape[-1] != size:
        raise ValueError(f"{name} has shape {a.shape}; its last dimension must be {size} ({what})")

